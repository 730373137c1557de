// Phase 5 of iteration k (and iteration 0), second half: the benchmark tasks
// of eval.tasks through the evaluation module on pi_k as the inference engine
// runs it, written to RUN/iter_k/eval.json.
#include <stdio.h>
#include <string.h>

#include "spin/run_internal.h"
#include "util/common.h"
#include "util/json.h"
#ifdef ALPHASPIN_HAVE_EVAL
#include "eval/eval.h"
#endif

// Benchmark tasks through the evaluation module (issue 5): RUN/iter_k/eval.json
// and the scores for summary.json ("acc,none" -> "acc").
int spin_phase_evaluate(spin_ctx *x, int32_t k, cJSON *summary_eval) {
    const spin_config *c = x->c;
    if (c->n_eval_tasks == 0) return AS_OK;
#ifdef ALPHASPIN_HAVE_EVAL
    char tasks[4096] = "", path[SPIN_PATH_LEN];
    for (int32_t i = 0; i < c->n_eval_tasks; i++)
        snprintf(tasks + strlen(tasks), sizeof tasks - strlen(tasks), "%s%s", i ? "," : "", c->eval_tasks[i]);
    model *gm = spin_iterate_model(x, k);
    if (!gm) return AS_FAIL;
    eval_options o = eval_options_default();
    o.tasks = tasks;
    o.shots = c->eval_shots;
    o.limit = c->eval_limit;
    o.precision = c->eval_precision < 0 ? c->gen_precision : (kernel_precision)c->eval_precision;
    o.progress = !x->quiet;
    cJSON *res = NULL;
    if (eval_run(gm, x->tok, &o, &res)) return AS_FAIL;
    snprintf(path, sizeof path, "%s/iter_%d/eval.json", x->run, k);
    char *s = as_json_print(res, true);
    int rc = as_write_file_atomic(path, s, strlen(s));
    free(s);
    const cJSON *tasks_res = cJSON_GetObjectItem(res, "results"), *task;
    cJSON_ArrayForEach(task, tasks_res) {
        cJSON *out = cJSON_AddObjectToObject(summary_eval, task->string);
        const cJSON *v;
        cJSON_ArrayForEach(v, task) {
            if (!cJSON_IsNumber(v)) continue;
            char key[256];
            snprintf(key, sizeof key, "%s", v->string);
            char *comma = strstr(key, ",none");
            if (comma && comma[5] == 0) *comma = 0;
            cJSON_AddNumberToObject(out, key, v->valuedouble);
        }
    }
    cJSON_Delete(res);
    return rc;
#else
    (void)k, (void)summary_eval;
    return as_error("eval.tasks: this build has no evaluation module (src/eval); leave eval.tasks empty");
#endif
}
