// The last phase of iteration k: RUN/iter_k/summary.json, written atomically;
// its presence marks the iteration complete.  What `alphaspin report` reads
// (docs/RUN_FOLDER.md has every key).
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "spin/run_internal.h"
#include "util/common.h"
#include "util/json.h"

static void add_num(cJSON *o, const char *k, double v) {
    if (isfinite(v)) cJSON_AddNumberToObject(o, k, v);
    else cJSON_AddNullToObject(o, k);
}

// Takes eval (freed here, also on failure).
int spin_phase_summary(spin_ctx *x, int32_t k, const spin_step_metrics *train, const spin_heldout *h, cJSON *eval,
                       const spin_phase_times *pt, double total) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "variant", x->c->name);
    cJSON_AddNumberToObject(o, "iteration", k);
    cJSON *tr = cJSON_AddObjectToObject(o, "train");
    if (train) {
        add_num(tr, "loss", train->loss);
        add_num(tr, "rewards/real", train->m.rewards_real);
        add_num(tr, "rewards/generated", train->m.rewards_generated);
        add_num(tr, "rewards/margins", train->m.rewards_margins);
        add_num(tr, "rewards/accuracies", train->m.rewards_accuracies);
        add_num(tr, "logps/real", train->m.logps_real);
        add_num(tr, "logps/generated", train->m.logps_generated);
        add_num(tr, "grad_norm", train->grad_norm);
        add_num(tr, "learning_rate", train->lr);
        add_num(tr, "steps", (double)train->step);
    }
    cJSON *ho = cJSON_AddObjectToObject(o, "heldout");
    add_num(ho, "nll_per_token", h->nll_per_token);
    add_num(ho, "kl_to_base", h->kl_to_base);
    add_num(ho, "answer_len_mean", h->len_mean);
    add_num(ho, "answer_len_std", h->len_std);
    if (isfinite(h->task_accuracy)) add_num(ho, "task_accuracy", h->task_accuracy);
    cJSON_AddNumberToObject(o, "heldout_examples", (double)x->n_held);
    cJSON_AddItemToObject(o, "eval", eval);
    cJSON *ts = cJSON_AddObjectToObject(o, "timing_s");
    const double known = pt->generate + pt->references + pt->train + pt->evaluate + pt->checkpoint;
    add_num(ts, "generate", pt->generate);
    add_num(ts, "references", pt->references);
    add_num(ts, "train", pt->train);
    add_num(ts, "evaluate", pt->evaluate);
    add_num(ts, "checkpoint", pt->checkpoint);
    add_num(ts, "other", fmax(0.0, total - known));
    add_num(ts, "total", total);
    char *s = as_json_print(o, true), path[SPIN_PATH_LEN];
    cJSON_Delete(o);
    snprintf(path, sizeof path, "%s/iter_%d/summary.json", x->run, k);
    const int rc = as_write_file_atomic(path, s, strlen(s));
    free(s);
    return rc;
}
