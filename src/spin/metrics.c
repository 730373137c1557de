// RUN/iter_k/metrics.jsonl: one line per optimizer step with TRL's names,
// rewritten whole after every epoch and read back by a resumed iteration.
#include <math.h>
#include <string.h>

#include "spin/run_internal.h"
#include "util/common.h"
#include "util/json.h"
#include "util/jsonl.h"

// A diverged step (loss NaN or infinite) is written as null: printf's "nan" is not JSON.
// spin_metrics_read reads null back as NaN, so a resumed run rewrites the same bytes.
static void metrics_json_line(const spin_step_metrics *s, as_sbuf *b) {
    static const char *const keys[] = {"loss", "grad_norm", "learning_rate", "rewards/real", "rewards/generated", "rewards/margins",
                                       "rewards/accuracies", "logps/real", "logps/generated", "epoch"};
    const double v[] = {s->loss, s->grad_norm, s->lr, s->m.rewards_real, s->m.rewards_generated, s->m.rewards_margins,
                        s->m.rewards_accuracies, s->m.logps_real, s->m.logps_generated, s->epoch};
    for (size_t i = 0; i < AS_ARRAY_LEN(keys); i++) {
        as_sb_printf(b, "%s\"%s\": ", i ? ", " : "{", keys[i]);
        as_sb_json_num(b, 9, v[i]);
    }
    as_sb_printf(b, ", \"step\": %lld}\n", (long long)s->step);
}

int spin_metrics_write(const char *path, const spin_step_metrics *s, int64_t n) {
    as_atomic_file af;
    if (as_atomic_open(&af, path)) return AS_FAIL;
    as_sbuf line = {0};
    for (int64_t i = 0; i < n; i++) {
        line.len = 0;
        metrics_json_line(&s[i], &line);
        fputs(line.s, af.fp);
    }
    free(line.s);
    return as_atomic_commit(&af);
}

static double num(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItem(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

int spin_metrics_read(const char *path, spin_step_metrics *s, int64_t n) {
    as_jsonl r;
    if (as_jsonl_open(&r, path)) return AS_FAIL;
    int64_t i = 0;
    cJSON *o;
    int got = 1;
    while (i < n && (got = as_jsonl_next(&r, &o)) > 0) {
        s[i] = (spin_step_metrics){.step = (int64_t)num(o, "step"), .epoch = num(o, "epoch"), .loss = num(o, "loss"),
                                   .grad_norm = num(o, "grad_norm"), .lr = num(o, "learning_rate")};
        s[i].m.loss = s[i].loss;
        s[i].m.rewards_real = num(o, "rewards/real");
        s[i].m.rewards_generated = num(o, "rewards/generated");
        s[i].m.rewards_margins = num(o, "rewards/margins");
        s[i].m.rewards_accuracies = num(o, "rewards/accuracies");
        s[i].m.logps_real = num(o, "logps/real");
        s[i].m.logps_generated = num(o, "logps/generated");
        cJSON_Delete(o);
        i++;
    }
    as_jsonl_close(&r);
    if (got < 0) return AS_FAIL;
    return i == n ? AS_OK : as_error("%s: %lld lines, but the training state says %lld steps", path, (long long)i, (long long)n);
}

void spin_metrics_mean(const spin_step_metrics *s, int64_t from, int64_t to, int32_t epochs, spin_step_metrics *mean) {
    memset(mean, 0, sizeof *mean);
    for (int64_t i = from; i < to; i++) {
        const double w = 1.0 / (double)(to - from);
        mean->loss += w * s[i].loss, mean->grad_norm += w * s[i].grad_norm;
        mean->m.rewards_real += w * s[i].m.rewards_real, mean->m.rewards_generated += w * s[i].m.rewards_generated;
        mean->m.rewards_margins += w * s[i].m.rewards_margins, mean->m.rewards_accuracies += w * s[i].m.rewards_accuracies;
        mean->m.logps_real += w * s[i].m.logps_real, mean->m.logps_generated += w * s[i].m.logps_generated;
    }
    mean->step = to;
    mean->epoch = epochs;
    mean->lr = to > 0 ? s[to - 1].lr : 0;
}
