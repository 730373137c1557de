// The alpha-SPIN loop: run_iteration() is the main job, top to bottom:
//   generate losers -> score references -> train -> checkpoint -> evaluate -> summary
// Each phase is a file of its own (run_internal.h lists them); this file is the
// order they run in, what is skipped on resume, and the iterations around them.
#include "spin/run.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "dist/dist.h"
#include "spin/run_internal.h"
#include "tensor/kernels.h"
#include "train/checkpoint.h"
#include "util/common.h"

// Iteration 0: the base model's row (held-out measurements and evaluation).
static int run_base(spin_ctx *x) {
    const double t0 = as_time();
    char dir[SPIN_PATH_LEN];
    snprintf(dir, sizeof dir, "%s/iter_0", x->run);
    if (as_mkdir_p(dir)) return AS_FAIL;
    spin_phase_times pt = {0};
    spin_heldout h;
    cJSON *ev = cJSON_CreateObject();
    if (spin_phase_measure(x, 0, &h) || spin_phase_evaluate(x, 0, ev)) {
        cJSON_Delete(ev);
        return AS_FAIL;
    }
    pt.evaluate = as_time() - t0;
    return spin_phase_summary(x, 0, NULL, &h, ev, &pt, as_time() - t0);
}

// Iteration k: pi_k from pi_t, t = k - 1.
static int run_iteration(spin_ctx *x, int32_t k) {
    const spin_config *c = x->c;
    const double t_start = as_time();
    spin_phase_times pt = {0};
    char dir[SPIN_PATH_LEN / 2], spin_path[SPIN_PATH_LEN], trl_path[SPIN_PATH_LEN], state[SPIN_PATH_LEN];
    snprintf(dir, sizeof dir, "%s/iter_%d", x->run, k);
    snprintf(spin_path, sizeof spin_path, "%s/pairs.jsonl", dir);
    snprintf(trl_path, sizeof trl_path, "%s/pairs_trl.jsonl", dir);
    snprintf(state, sizeof state, "%s/" SPIN_TRAIN_STATE, dir);
    spin_pairs pairs = {0};
    spin_step_metrics train = {0};
    spin_heldout held;
    cJSON *eval = cJSON_CreateObject();
    double t0;
    if (as_mkdir_p(dir) || spin_iterate_policy(x, k - 1)) goto fail;

    if (!spin_file_exists(trl_path)) { // a resumed iteration whose pairs are written goes straight to training
        // 1. Losers for N prompts drawn afresh: from the window's iterates (the opponent mixture).
        t0 = as_time();
        if (spin_phase_losers(x, k, &pairs)) goto fail;
        pt.generate = as_time() - t0;
        spin_phase_done(x, k, "generate");
        // 2. References, once: log pi_t and log pi_0 of every winner and loser; both pair files.
        t0 = as_time();
        if (spin_phase_references(x, k, &pairs, spin_path, trl_path)) goto fail;
        dist_barrier(); // under mpirun rank 0 wrote the pair files every rank reads next
        pt.references = as_time() - t0;
        spin_pairs_free(&pairs);
        spin_phase_done(x, k, "references");
    }
    // Training reads the pairs back from the file, in a resumed run or not.
    if (spin_pairs_read_trl(&pairs, trl_path, -1) || spin_pairs_encode(&pairs, x->tok, &x->tpl, c->max_answer_len)) goto fail;

    // 3. Train pi_t -> pi_k with the preference loss (resuming a saved state; "epoch<e>" after each epoch).
    t0 = as_time();
    if (spin_phase_train(x, k, &pairs, &train)) goto fail;
    pt.train = as_time() - t0;
    spin_phase_done(x, k, "train");

    // 4. Checkpoint pi_k (adapters or weights), read back for what follows.
    t0 = as_time();
    if (spin_phase_checkpoint(x, k)) goto fail;
    pt.checkpoint = as_time() - t0;
    spin_phase_done(x, k, "checkpoint");

    // 5. Evaluate pi_k: held-out measurements and benchmark tasks.
    t0 = as_time();
    if (spin_phase_measure(x, k, &held) || spin_phase_evaluate(x, k, eval)) goto fail;
    pt.evaluate = as_time() - t0;
    spin_phase_done(x, k, "evaluate");

    // 6. summary.json last: its presence marks iteration k complete; the training state goes.
    const int rc = spin_phase_summary(x, k, &train, &held, eval, &pt, as_time() - t_start);
    spin_pairs_free(&pairs);
    if (rc) return AS_FAIL;
    spin_phase_done(x, k, "summary");
    if (as_files_writer()) { // the job's writer (dist/dist.h)
        unlink(state);
        snprintf(state, sizeof state, "%s/" SPIN_GFN_STATE, dir);
        unlink(state);
    }
    return AS_OK;
fail:
    cJSON_Delete(eval);
    spin_pairs_free(&pairs);
    return AS_FAIL;
}

int spin_run(const spin_config *cin, const spin_run_options *o) {
    spin_config c = *cin;
    // The variant's name defaults to the run folder's basename.
    char name[256];
    if (!c.name[0]) {
        const char *b = strrchr(o->out_dir, '/');
        snprintf(name, sizeof name, "%s", b && b[1] ? b + 1 : o->out_dir);
        c.name = name;
    }
    if (strlen(o->out_dir) > 1024) return as_error("%.64s...: run folder path too long", o->out_dir);
    // The device is opened before the run folder is touched: one that cannot
    // be used here (or cannot train) leaves no folder holding its configuration behind.
    if (spin_config_check(&c)) return AS_FAIL;
    // Under mpirun, device cuda is the GPU of each process's local rank, and
    // the gradients' exchange goes GPU to GPU over NCCL (dist/dist.h).
    const as_backend *be = dist_open_device(c.device);
    if (!be) return AS_FAIL;
    const char *missing = as_backend_missing(be, AS_BACKEND_INFERENCE | AS_BACKEND_TRAINING);
    if (missing) return as_error("device %s: backend %s cannot run alpha-SPIN yet: it has no %s op", c.device, be->name, missing);
    if (dist_use_transport(be)) return AS_FAIL;
    if (as_mkdir_p(o->out_dir) || spin_setup_config(o->out_dir, &c)) return AS_FAIL;
    // Under mpirun rank 0 alone reports progress (dist/dist.h).
    spin_ctx x = {.c = &c, .o = o, .run = o->out_dir, .quiet = o->quiet || dist_rank() != 0};
    x.threads = c.threads > 0 ? c.threads : kernel_get_threads();
    kernel_set_threads(x.threads);
    x.micro = 2 * c.batch_size;
    int rc = AS_FAIL;
    if (spin_setup_models(&x) || spin_setup_data(&x)) goto done;
    char path[SPIN_PATH_LEN];
    snprintf(path, sizeof path, "%s/iter_0/summary.json", x.run);
    if (!spin_file_exists(path) && run_base(&x)) goto done;
    for (int32_t k = 1; k <= c.iterations; k++) {
        snprintf(path, sizeof path, "%s/iter_%d/summary.json", x.run, k);
        if (spin_file_exists(path)) {
            // Done in an earlier process: only its iterate is needed (read back from the folder).
            if (c.lora) {
                snprintf(path, sizeof path, "%s/iter_%d/adapter", x.run, k);
                if (train_lora_read_peft(&x.tm->cfg, path, &x.iterates[k])) goto done;
            }
            if (!x.quiet) fprintf(stderr, "alphaspin run: iter %d/%d complete (summary.json), skipped\n", k, c.iterations);
            continue;
        }
        if (run_iteration(&x, k)) goto done;
    }
    rc = AS_OK;
done:
    spin_ctx_free(&x);
    return rc;
}
