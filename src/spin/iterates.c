// The iterates pi_0 .. pi_T of a run: which model answers as iterate j, the
// policy at the start of an iteration, the checkpoint that saves pi_k and reads
// it back; and the small helpers every phase uses (seeds, progress, phase hook).
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "dist/dist.h"
#include "dist/dist_generate.h"
#include "generate/generate.h"
#include "spin/run_internal.h"
#include "train/checkpoint.h"
#include "train/export.h"
#include "util/common.h"
#include "util/rng.h"

uint64_t spin_derive_seed(uint64_t seed, uint64_t k, uint64_t salt, uint64_t i) {
    uint64_t x = seed;
    uint64_t h = as_splitmix64(&x);
    x = h ^ (k * 0x9E3779B97F4A7C15ull);
    h = as_splitmix64(&x);
    x = h ^ (salt * 0xC2B2AE3D27D4EB4Full);
    h = as_splitmix64(&x);
    x = h ^ i;
    return as_splitmix64(&x);
}

// Rank 0 looks, for the whole job (dist/dist.h): every rank takes the same branch.
bool spin_file_exists(const char *path) {
    struct stat st;
    return dist_bcast_bool(stat(path, &st) == 0);
}

int32_t spin_prompt_turns(const sft_example *e) {
    int32_t a = (int32_t)e->n_msgs - 1;
    while (a >= 0 && strcmp(e->msgs[a].role, "assistant") != 0) a--;
    return a;
}

void spin_phase_done(spin_ctx *x, int32_t k, const char *phase) {
    if (x->o->on_phase) x->o->on_phase(x->o->user, k, phase);
}

void spin_progress(const spin_ctx *x, int32_t k, const char *phase, int64_t done, int64_t total, double t0, const char *extra) {
    if (x->quiet) return;
    const double el = as_time() - t0, eta = done > 0 ? el / (double)done * (double)(total - done) : 0;
    fprintf(stderr, "\ralphaspin run: iter %d/%d %-10s %lld/%lld  %s  %.0fs elapsed, ETA %.0fs   %s", k, x->c->iterations, phase,
            (long long)done, (long long)total, extra ? extra : "", el, eta, done >= total ? "\n" : "");
    fflush(stderr);
}

model *spin_iterate_model(spin_ctx *x, int32_t j) {
    if (x->c->lora) {
        model_lora v;
        if (j > 0) train_lora_view(x->iterates[j], &v);
        if (model_set_lora(x->inf, j > 0 ? &v : NULL)) return NULL;
        return x->inf;
    }
    if (j == 0) return x->inf;
    if (x->gen_full && x->gen_full_k == j) return x->gen_full;
    model_free(x->gen_full);
    x->gen_full = NULL;
    char path[SPIN_PATH_LEN];
    snprintf(path, sizeof path, "%s/iter_%d/model.gguf", x->run, j);
    if (model_load(&x->gen_full, path) || model_use_backend(x->gen_full, x->inf->be)) return NULL;
    x->gen_full_k = j;
    return x->gen_full;
}

typedef struct gen_progress_ctx {
    const spin_ctx *x;
    int32_t k;
    const char *phase;
    double t0;
} gen_progress_ctx;

static void on_gen_progress(void *user, const generate_progress *p) {
    gen_progress_ctx *g = user;
    char extra[64];
    snprintf(extra, sizeof extra, "%.0f tok/s", p->tokens_per_s);
    spin_progress(g->x, g->k, g->phase, p->done, p->total, g->t0, extra);
}

int spin_generate_answers(spin_ctx *x, int32_t k, const char *phase, int32_t j, const sft_data *d, const int64_t *ex, int64_t n,
                          const sampler_params *sp, uint64_t seed_k, uint64_t salt, char **texts, int32_t *n_tokens) {
    if (n == 0) return AS_OK;
    model *gm = spin_iterate_model(x, j);
    if (!gm) return AS_FAIL;
    generate_request *req = as_calloc((size_t)n, sizeof *req);
    generate_result *res = as_calloc((size_t)n, sizeof *res);
    int rc = AS_FAIL;
    for (int64_t i = 0; i < n; i++) {
        const sft_example *e = &d->ex[ex[i]];
        char *pr = chat_render(&x->tpl, e->msgs, (size_t)spin_prompt_turns(e), true);
        size_t np = 0;
        int32_t *ids = NULL;
        if (!pr || tokenizer_encode(x->tok, pr, strlen(pr), false, true, &ids, &np)) {
            free(pr);
            goto done;
        }
        free(pr);
        req[i].prompt = ids;
        req[i].n_prompt = (int64_t)np;
        req[i].sampling = *sp;
        req[i].sampling.seed = spin_derive_seed(x->c->seed, seed_k, salt, (uint64_t)ex[i]);
        req[i].max_new_tokens = x->c->max_new_tokens;
    }
    generate_options opt = generate_options_default();
    opt.precision = x->c->gen_precision;
    opt.batch_size = x->c->gen_batch;
    gen_progress_ctx pc = {x, k, phase, as_time()};
    opt.on_progress = on_gen_progress;
    opt.user = &pc;
    if (dist_generate_run(gm, x->tok, req, n, &opt, res)) goto done; // under mpirun: a share per rank
    for (int64_t i = 0; i < n; i++) {
        texts[i] = as_strdup(res[i].text ? res[i].text : "");
        if (n_tokens) n_tokens[i] = (int32_t)res[i].n_ids;
    }
    rc = AS_OK;
done:
    for (int64_t i = 0; i < n; i++) free((void *)req[i].prompt), generate_result_free(&res[i]);
    free(req), free(res);
    return rc;
}

int spin_iterate_policy(spin_ctx *x, int32_t t) {
    if (x->c->lora) {
        train_lora_copy(x->tm->lora, t == 0 ? x->lora_init : x->iterates[t]);
        return AS_OK;
    }
    if (x->tm_iterate == t) return AS_OK;
    char path[SPIN_PATH_LEN];
    snprintf(path, sizeof path, "%s/iter_%d/model.gguf", x->run, t);
    train_model *m;
    if (train_model_load(&m, t == 0 ? x->base_gguf : path)) return AS_FAIL;
    if (train_set_backend(m, x->inf->be)) {
        train_model_free(m);
        return AS_FAIL;
    }
    train_set_threads(m, x->threads);
    train_set_checkpointing(m, x->c->checkpointing);
    train_set_precision(m, x->c->train_prec);
    train_model_free(x->tm);
    x->tm = m;
    x->tm_iterate = t;
    return AS_OK;
}

// Writes pi_k and reads it back: the policy, the next iterations and
// evaluation use the saved bytes, as a resumed run would.
int spin_phase_checkpoint(spin_ctx *x, int32_t k) {
    char path[SPIN_PATH_LEN];
    if (x->c->lora) {
        snprintf(path, sizeof path, "%s/iter_%d/adapter", x->run, k);
        train_lora_free(x->iterates[k]);
        x->iterates[k] = NULL;
        if (train_lora_save_peft(x->tm, path, x->c->model_path[0] ? x->c->model_path : x->base_gguf)) return AS_FAIL;
        dist_barrier(); // rank 0 wrote it; every rank reads it back
        if (train_lora_read_peft(&x->tm->cfg, path, &x->iterates[k])) return AS_FAIL;
        train_lora_copy(x->tm->lora, x->iterates[k]);
        return AS_OK;
    }
    snprintf(path, sizeof path, "%s/iter_%d/model.gguf", x->run, k);
    if (train_export_gguf(x->tm, x->base_gguf, path, GGML_TYPE_F32)) return AS_FAIL;
    dist_barrier(); // rank 0 wrote it; every rank reads it (spin_iterate_model)
    x->tm_iterate = k;
    return AS_OK;
}
