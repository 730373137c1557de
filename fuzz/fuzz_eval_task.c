// libFuzzer target for task files (src/eval/task.c over yaml_json.c): any YAML
// is a task or one error line, never a crash; a valid task's templates render
// against a fixed document or fail with a message.
// fuzz-libs: as_eval
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "eval/eval_internal.h"
#include "util/common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    eval_task t;
    if (eval_task_parse((const char *)data, size, "fuzz.yaml", &t) != AS_OK) {
        if (!as_last_error()[0]) abort();
        return 0;
    }
    cJSON *doc = cJSON_Parse("{\"query\": \"Question: q\", \"choices\": [\"a\", \"b\", \"c\"], \"gold\": 1, \"q\": \" x \","
                             " \"answer\": \"#### 4\", \"question\": \"2+2?\", \"context_options\": [\"u\", \"v\"], \"continuation\": \"w\"}");
    if (t.kind != EVAL_TASK_MT_BENCH) {
        eval_doc d;
        if (eval_doc_render(&t, doc, 0, &d) == AS_OK) {
            char *ex = eval_doc_example(&t, &d);
            free(ex);
            eval_doc_free(&d);
        }
    }
    char *s = eval_render(t.description, doc, "fuzz");
    free(s);
    cJSON_Delete(doc);
    eval_task_free(&t);
    return 0;
}
