// The alpha-SPIN loop.  run_iteration() is the main job, top to bottom:
//   generate losers -> score references -> train -> checkpoint -> evaluate -> summary
// Everything else in this file is one of those steps or the setup around them.
//
// Reproducibility: every random stream of iteration k is seeded from
// (seed, k, purpose), never carried over from an earlier iteration, and
// everything an iteration consumes from earlier ones (the iterates' adapters or
// weights, its own pairs) is read back from the run folder, so a run resumed
// after a kill computes on exactly the bytes an uninterrupted run does.
#include "spin/run.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "generate/generate.h"
#include "model/model.h"
#include "mixture/losers.h"
#include "spin/window.h"
#include "tensor/kernels.h"
#include "train/checkpoint.h"
#include "train/export.h"
#include "train/sft.h"
#include "util/common.h"
#include "util/json.h"
#include "util/jsonl.h"
#ifdef ALPHASPIN_HAVE_DATA
#include "data/arith.h"
#endif
#ifdef ALPHASPIN_HAVE_EVAL
#include "eval/eval.h"
#endif

#define PATH_LEN 4096

// Purposes of the derived seeds.
enum { SALT_PROMPTS = 1, SALT_GENERATE, SALT_ORDER, SALT_DROPOUT, SALT_LORA, SALT_HELDOUT, SALT_SPLIT };

static uint64_t derive_seed(uint64_t seed, uint64_t k, uint64_t salt, uint64_t i) {
    uint64_t x = seed;
    uint64_t h = as_splitmix64(&x);
    x = h ^ (k * 0x9E3779B97F4A7C15ull);
    h = as_splitmix64(&x);
    x = h ^ (salt * 0xC2B2AE3D27D4EB4Full);
    h = as_splitmix64(&x);
    x = h ^ i;
    return as_splitmix64(&x);
}

static bool file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

// ALPHASPIN_TEST_ABORT_AFTER=<k>:<phase>: die as kill -9 would, for the resume tests.
static void abort_hook(int32_t k, const char *phase) {
    const char *v = getenv("ALPHASPIN_TEST_ABORT_AFTER");
    if (!v) return;
    char want[64];
    snprintf(want, sizeof want, "%d:%s", k, phase);
    if (strcmp(v, want) == 0) {
        fflush(NULL);
        raise(SIGKILL);
    }
}

// ---- the state of a run ----

typedef struct heldout_stats {
    double nll_per_token, kl_to_base, len_mean, len_std, task_accuracy; // task_accuracy NAN when not applicable
} heldout_stats;

typedef struct step_metrics {
    int64_t step;
    double epoch, loss, grad_norm, lr;
    spin_loss_metrics m;
} step_metrics;

typedef struct phase_times { double generate, references, train, evaluate, checkpoint; } phase_times;

typedef struct spin_ctx {
    const spin_config *c;
    const char *run;
    char base_gguf[PATH_LEN]; // pi_0: a GGUF file or a Hugging Face folder
    bool quiet;
    int threads;
    model *inf;               // inference engine on the base (LoRA: adapters switched per iterate)
    model *gen_full;          // full fine-tuning: the inference model of gen_full_k
    int32_t gen_full_k;
    tokenizer *tok;
    gguf_file *tok_file;      // model.tokenizer, when given
    chat_template tpl;
    train_model *tm;          // the policy: LoRA over the shared base, or all weights
    int32_t tm_iterate;       // full fine-tuning: the iterate whose weights tm holds
    train_model *tm0;         // full fine-tuning: pi_0, frozen
    train_lora *lora_init;    // LoRA: the adapters training starts from at iteration 1 (B = 0: pi_0)
    train_lora **iterates;    // LoRA: adapters of pi_1 .. pi_T as read back from RUN/iter_k/adapter
    sft_data *train, *held;   // held may alias train (split)
    int64_t *pool, n_pool;    // training examples usable as prompts
    int64_t *held_idx, n_held;
    int32_t micro;            // sequences per forward when only scoring
} spin_ctx;

// The prompt of example e: every message before its last assistant turn, which is the winner.
static int32_t prompt_turns(const sft_example *e) {
    int32_t a = (int32_t)e->n_msgs - 1;
    while (a >= 0 && strcmp(e->msgs[a].role, "assistant") != 0) a--;
    return a;
}

static void progress(const spin_ctx *x, int32_t k, const char *phase, int64_t done, int64_t total, double t0, const char *extra) {
    if (x->quiet) return;
    const double el = as_time() - t0, eta = done > 0 ? el / (double)done * (double)(total - done) : 0;
    fprintf(stderr, "\ralphaspin run: iter %d/%d %-10s %lld/%lld  %s  %.0fs elapsed, ETA %.0fs   %s", k, x->c->iterations, phase,
            (long long)done, (long long)total, extra ? extra : "", el, eta, done >= total ? "\n" : "");
    fflush(stderr);
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
    progress(g->x, g->k, g->phase, p->done, p->total, g->t0, extra);
}

// The inference model answering as iterate j.  LoRA: the base with j's
// adapters (j = 0: none); full fine-tuning: RUN/iter_j/model.gguf.
static model *gen_model(spin_ctx *x, int32_t j) {
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
    char path[PATH_LEN];
    snprintf(path, sizeof path, "%s/iter_%d/model.gguf", x->run, j);
    if (model_load(&x->gen_full, path)) return NULL;
    x->gen_full->precision = x->inf->precision;
    x->gen_full_k = j;
    return x->gen_full;
}

// Answers of iterate j to the prompts of examples ex[0..n) of data d.
// Request i samples with its own seed, derived from (k, example), so an
// answer does not depend on the batch it was decoded in.
static int generate_answers(spin_ctx *x, int32_t k, const char *phase, int32_t j, const sft_data *d, const int64_t *ex, int64_t n,
                            const sampler_params *sp, uint64_t seed_k, uint64_t salt, char **texts, int32_t *n_tokens) {
    if (n == 0) return AS_OK;
    model *gm = gen_model(x, j);
    if (!gm) return AS_FAIL;
    generate_request *req = as_calloc((size_t)n, sizeof *req);
    generate_result *res = as_calloc((size_t)n, sizeof *res);
    int rc = AS_FAIL;
    for (int64_t i = 0; i < n; i++) {
        const sft_example *e = &d->ex[ex[i]];
        char *pr = chat_render(&x->tpl, e->msgs, (size_t)prompt_turns(e), true);
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
        req[i].sampling.seed = derive_seed(x->c->seed, seed_k, salt, (uint64_t)ex[i]);
        req[i].max_new_tokens = x->c->max_new_tokens;
    }
    generate_options opt = generate_options_default();
    opt.batch_size = x->c->gen_batch;
    gen_progress_ctx pc = {x, k, phase, as_time()};
    opt.on_progress = on_gen_progress;
    opt.user = &pc;
    if (generate_run(gm, x->tok, req, n, &opt, res)) goto done;
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

// ---- step 1: losers from the window ----

static sampler_params loser_sampling(const spin_config *c) {
    sampler_params sp = sampler_params_default();
    sp.temperature = c->gen_temperature;
    sp.top_k = c->gen_top_k;
    sp.top_p = c->gen_top_p;
    sp.min_p = 0.0f;
    sp.repeat_penalty = 1.0f;
    sp.repeat_last_n = 0;
    return sp;
}

// ---- step 1 (sampler: token-geometric | sir | gflownet): losers from the geometric mixture ----

// The "consistent" alpha-SPIN of the paper's Appendix A: losers drawn from
// the loss's own reference pi_t^(1-alpha) pi_0^alpha (src/mixture/losers.h),
// one per drawn prompt; the window (tau, mixing) does not apply, nor do the
// generation.temperature/top_p/top_k settings (the mixture is defined at
// temperature 1).  Writes RUN/iter_k/sampler.json (time, lengths, SIR's
// effective sample size, the GFlowNet's training) and, when a sampler is
// trained here, its adapters to RUN/iter_k/gfn_sampler.
static int make_pairs_geometric(spin_ctx *x, int32_t k, const int64_t *ex, int64_t n, spin_pairs *ps) {
    const spin_config *c = x->c;
    const int32_t t = k - 1;
    if (!c->lora) return as_error("sampler %s: needs lora.enabled (pi_t and pi_0 are adapters over one base)", c->sampler);
    char dir[PATH_LEN], save[PATH_LEN + 16];
    snprintf(dir, sizeof dir, "%s/iter_%d", x->run, k);
    snprintf(save, sizeof save, "%s/gfn_sampler", dir);
    mixture_losers_config mc = {.kind = (mixture_sampler_kind)mixture_sampler_from_name(c->sampler), .alpha = (float)c->loss.alpha,
                                .max_new_tokens = c->max_new_tokens, .batch = c->gen_batch,
                                .seed = derive_seed(c->seed, (uint64_t)k, SALT_GENERATE, 0), .sir_k = c->sir_k,
                                .gfn_adapter = c->gfn_adapter, .gfn_save_dir = save};
    gfn_config_default(&mc.gfn);
    mc.gfn.steps = c->gfn_steps, mc.gfn.optim.lr = c->gfn_lr, mc.gfn.samples_per_prompt = c->gfn_samples;
    mc.gfn.reward_temp_end = c->gfn_reward_temp_end, mc.gfn.micro_batch = x->micro > 0 ? x->micro : 4;
    mc.gfn_lora = (train_lora_config){.rank = c->gfn_rank, .alpha = 2.0f * (float)c->gfn_rank, .dropout = 0.0f, .targets = 0,
                                      .seed = derive_seed(c->seed, (uint64_t)k, SALT_LORA, 1)};
    {   // END: the token that closes an assistant turn.
        const char *te = chat_turn_end(&x->tpl);
        int32_t *e_ids = NULL;
        size_t ne = 0;
        if (tokenizer_encode(x->tok, te, strlen(te), false, true, &e_ids, &ne) || ne == 0) {
            free(e_ids);
            return as_error("sampler %s: the chat template's end of turn is not a token", c->sampler);
        }
        mc.end_id = e_ids[0];
        free(e_ids);
    }
    int32_t **prompt = as_calloc((size_t)AS_MAX(n, (int64_t)1), sizeof *prompt), **ids = as_calloc((size_t)AS_MAX(n, (int64_t)1), sizeof *ids);
    int64_t *n_prompt = as_calloc((size_t)AS_MAX(n, (int64_t)1), sizeof *n_prompt), *n_ids = as_calloc((size_t)AS_MAX(n, (int64_t)1), sizeof *n_ids);
    int rc = AS_OK;
    for (int64_t i = 0; i < n && rc == AS_OK; i++) {
        const sft_example *e = &x->train->ex[ex[i]];
        char *pr = chat_render(&x->tpl, e->msgs, (size_t)prompt_turns(e), true);
        size_t np = 0;
        rc = !pr || tokenizer_encode(x->tok, pr, strlen(pr), false, true, &prompt[i], &np) ? AS_FAIL : AS_OK;
        n_prompt[i] = (int64_t)np;
        free(pr);
    }
    model_lora vt;
    if (t > 0) train_lora_view(x->iterates[t], &vt);
    mixture_losers_stats st = {0};
    if (!x->quiet) fprintf(stderr, "alphaspin run: iter %d/%d generate   %lld losers from the geometric mixture (%s)...\n", k,
                           c->iterations, (long long)n, c->sampler);
    if (rc == AS_OK) rc = mixture_losers(x->inf, x->tm, t > 0 ? &vt : NULL, &mc, (const int32_t *const *)prompt, n_prompt, n, ids, n_ids, &st);
    for (int64_t i = 0; i < n && rc == AS_OK; i++) {
        char *text = tokenizer_decode(x->tok, ids[i], (size_t)n_ids[i], false);
        const sft_example *e = &x->train->ex[ex[i]];
        const int32_t a = prompt_turns(e);
        spin_pairs_add(ps, e->msgs, a, e->msgs[a].content, text ? text : "", t);
        free(text);
    }
    if (rc == AS_OK) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "sampler", c->sampler);
        cJSON_AddNumberToObject(o, "losers", (double)n);
        cJSON_AddNumberToObject(o, "seconds", st.seconds);
        cJSON_AddNumberToObject(o, "mean_len", st.mean_len);
        if (mc.kind == MIXTURE_SAMPLER_SIR) {
            cJSON_AddNumberToObject(o, "k", c->sir_k);
            cJSON_AddNumberToObject(o, "ess_mean", st.ess_mean);
            cJSON_AddNumberToObject(o, "ess_min", st.ess_min);
        }
        if (mc.kind == MIXTURE_SAMPLER_GFLOWNET && !(c->gfn_adapter && c->gfn_adapter[0])) {
            cJSON_AddNumberToObject(o, "gfn_train_seconds", st.gfn_train_seconds);
            cJSON_AddNumberToObject(o, "gfn_last_loss", isfinite(st.gfn_last_loss) ? st.gfn_last_loss : -1);
        }
        char *js = as_json_print(o, false), path[PATH_LEN + 16];
        snprintf(path, sizeof path, "%s/sampler.json", dir);
        rc = as_write_file_atomic(path, js, strlen(js));
        if (!x->quiet && mc.kind == MIXTURE_SAMPLER_SIR)
            fprintf(stderr, "alphaspin run: iter %d/%d sir K=%d: effective sample size mean %.2f, min %.2f\n", k, c->iterations, c->sir_k,
                    st.ess_mean, st.ess_min);
        free(js);
        cJSON_Delete(o);
    }
    for (int64_t i = 0; i < n; i++) free(prompt[i]), free(ids[i]);
    free(prompt), free(ids), free(n_prompt), free(n_ids);
    return rc;
}

// The sampler seam (config key `sampler`): the losers that "iterate j" contributes to
// iteration k for the prompts of training examples ex[0..n).  `mixture` samples
// pi_j itself (the window's uniform mixture is made by make_pairs' shares).  Other
// samplers (e.g. of the geometric mixture pi_t^(1-alpha) pi_0^alpha) plug in here.
static int generate_losers(spin_ctx *x, int32_t k, int32_t j, const int64_t *ex, int64_t n, const sampler_params *sp, char **texts) {
    char phase[32];
    snprintf(phase, sizeof phase, "generate%d", j);
    return generate_answers(x, k, phase, j, x->train, ex, n, sp, (uint64_t)k, SALT_GENERATE, texts, NULL);
}

// The pairs of iteration k (t = k - 1): fresh losers from the window's
// iterates for N prompts drawn afresh, plus (concat) the pairs older iterates
// of the window generated when they were current.
static int make_pairs(spin_ctx *x, int32_t k, spin_pairs *ps) {
    const spin_config *c = x->c;
    const int32_t t = k - 1, first = spin_window_first(t, c->tau);
    // N prompts from a permutation of the pool seeded by (seed, k).
    const int64_t n = c->prompts > 0 && c->prompts < x->n_pool ? c->prompts : x->n_pool;
    int64_t *perm = as_malloc(sizeof(int64_t) * (size_t)x->n_pool), *chosen = as_malloc(sizeof(int64_t) * (size_t)n);
    as_rng rng;
    as_rng_seed(&rng, derive_seed(c->seed, (uint64_t)k, SALT_PROMPTS, 0));
    train_shuffle(perm, x->n_pool, &rng);
    for (int64_t i = 0; i < n; i++) chosen[i] = x->pool[perm[i]];
    free(perm);
    if (strcmp(c->sampler, "mixture") != 0) { // the geometric mixture itself
        const int rc = make_pairs_geometric(x, k, chosen, n, ps);
        free(chosen);
        return rc;
    }
    const sampler_params sp = loser_sampling(c);
    int rc = AS_OK;
    int64_t offset = 0; // sample mode: consecutive blocks of the drawn prompts go to consecutive iterates
    for (int32_t j = first; j <= t && rc == AS_OK; j++) {
        const int64_t fresh = spin_window_fresh(c->mixing, t, c->tau, n, j);
        if (c->mixing == SPIN_MIX_CONCAT && j < t) {
            // The official SPIN code's mixing: reuse what pi_j generated at iteration j + 1.
            char path[PATH_LEN];
            snprintf(path, sizeof path, "%s/iter_%d/pairs_trl.jsonl", x->run, j + 1);
            rc = spin_pairs_read_trl(ps, path, j);
            continue;
        }
        char **texts = as_calloc((size_t)(fresh > 0 ? fresh : 1), sizeof *texts);
        const int64_t *ex = chosen + (c->mixing == SPIN_MIX_SAMPLE ? offset : 0);
        rc = generate_losers(x, k, j, ex, fresh, &sp, texts);
        for (int64_t i = 0; i < fresh; i++) {
            if (rc == AS_OK) {
                const sft_example *e = &x->train->ex[ex[i]];
                const int32_t a = prompt_turns(e);
                spin_pairs_add(ps, e->msgs, a, e->msgs[a].content, texts[i], j);
            }
            free(texts[i]);
        }
        free(texts);
        offset += fresh;
    }
    free(chosen);
    return rc;
}

// ---- step 2: references ----

typedef struct seq_batch {
    int32_t *tokens, *len;
    uint8_t *mask;
    train_batch b;
} seq_batch;

static void seq_batch_build(seq_batch *sb, spin_seq *const *seqs, int32_t n) {
    int32_t T = 1;
    for (int32_t i = 0; i < n; i++) T = AS_MAX(T, seqs[i]->len);
    sb->tokens = as_calloc((size_t)n * (size_t)T, sizeof(int32_t));
    sb->mask = as_calloc((size_t)n * (size_t)T, 1);
    sb->len = as_malloc(sizeof(int32_t) * (size_t)n);
    for (int32_t i = 0; i < n; i++) {
        memcpy(sb->tokens + (size_t)i * T, seqs[i]->tokens, sizeof(int32_t) * (size_t)seqs[i]->len);
        memcpy(sb->mask + (size_t)i * T, seqs[i]->mask, (size_t)seqs[i]->len);
        sb->len[i] = seqs[i]->len;
    }
    sb->b = (train_batch){.n_seq = n, .n_ctx = T, .tokens = sb->tokens, .len = sb->len, .prompt_len = NULL, .loss_mask = sb->mask};
}

static void seq_batch_free(seq_batch *sb) { free(sb->tokens), free(sb->mask), free(sb->len); }

// Progress of a scoring pass (references, held-out): a line with ETA.
typedef struct score_progress {
    const spin_ctx *x;
    int32_t k;
    const char *phase;
    double t0;
} score_progress;

// log pi(seq) for n sequences in micro-batches, dropout off.
static int score_seqs_p(train_model *m, spin_seq *const *seqs, int64_t n, int32_t micro, float *out, const score_progress *sp) {
    const bool was = m->training;
    train_set_training(m, false);
    int rc = AS_OK;
    for (int64_t i0 = 0; i0 < n && rc == AS_OK; i0 += micro) {
        const int32_t B = (int32_t)AS_MIN((int64_t)micro, n - i0);
        seq_batch sb;
        seq_batch_build(&sb, seqs + i0, B);
        rc = train_forward(m, &sb.b, out + i0, NULL);
        seq_batch_free(&sb);
        if (sp) progress(sp->x, sp->k, sp->phase, i0 + B, n, sp->t0, "sequences");
    }
    train_set_training(m, was);
    return rc;
}

static int score_seqs(train_model *m, spin_seq *const *seqs, int64_t n, int32_t micro, float *out) {
    return score_seqs_p(m, seqs, n, micro, out, NULL);
}

// t_is_base: pi_t IS pi_0 (iteration 1): one pass of the base serves both references.
static int score_references(train_model *m, train_model *m0, spin_pairs *ps, double alpha, int32_t micro, bool t_is_base,
                            const score_progress *sp) {
    const int64_t n = ps->n;
    spin_seq **seqs = as_malloc(sizeof *seqs * (size_t)(2 * n + 1));
    float *lp = as_malloc(sizeof(float) * (size_t)(2 * n + 1));
    for (int64_t i = 0; i < n; i++) {
        seqs[2 * i] = &ps->p[i].w, seqs[2 * i + 1] = &ps->p[i].l;
        ps->p[i].ref_t_w = ps->p[i].ref_t_l = ps->p[i].ref_0_w = ps->p[i].ref_0_l = NAN;
    }
    int rc = AS_OK;
    // Only the models the reference needs: pi_t unless alpha = 1, pi_0 unless alpha = 0.
    if (spin_ref_needs_t(alpha) && !t_is_base) {
        rc = score_seqs_p(m, seqs, 2 * n, micro, lp, sp);
        for (int64_t i = 0; i < n && rc == AS_OK; i++) ps->p[i].ref_t_w = lp[2 * i], ps->p[i].ref_t_l = lp[2 * i + 1];
    }
    if (rc == AS_OK && (spin_ref_needs_0(alpha) || t_is_base)) {
        if (m0) {
            rc = score_seqs_p(m0, seqs, 2 * n, micro, lp, sp);
        } else {
            const bool was = m->adapters_on;
            train_set_adapters(m, false);
            rc = score_seqs_p(m, seqs, 2 * n, micro, lp, sp);
            train_set_adapters(m, was);
        }
        for (int64_t i = 0; i < n && rc == AS_OK; i++) {
            if (spin_ref_needs_0(alpha)) ps->p[i].ref_0_w = lp[2 * i], ps->p[i].ref_0_l = lp[2 * i + 1];
            if (t_is_base && spin_ref_needs_t(alpha)) ps->p[i].ref_t_w = lp[2 * i], ps->p[i].ref_t_l = lp[2 * i + 1];
        }
    }
    free(seqs), free(lp);
    return rc;
}

int spin_score_references(train_model *m, train_model *m0, spin_pairs *ps, double alpha, int32_t micro) {
    return score_references(m, m0, ps, alpha, micro, false, NULL);
}

// ---- step 3: training ----

int spin_train_microbatch(train_model *m, const spin_loss_config *lc, spin_pair *const *pairs, int32_t n, double scale,
                          spin_loss_metrics *met) {
    spin_seq **seqs = as_malloc(sizeof *seqs * (size_t)(2 * n));
    for (int32_t i = 0; i < n; i++) seqs[i] = &pairs[i]->w, seqs[n + i] = &pairs[i]->l;
    seq_batch sb;
    seq_batch_build(&sb, seqs, 2 * n);
    sb.b.backward = true;
    float *pol = as_malloc(sizeof(float) * (size_t)(2 * n)), *grad = as_malloc(sizeof(float) * (size_t)(2 * n));
    spin_pair_logps *pl = as_malloc(sizeof *pl * (size_t)n);
    int32_t *cnt = as_malloc(sizeof(int32_t) * (size_t)(2 * n));
    int rc = train_forward(m, &sb.b, pol, cnt);
    if (rc == AS_OK) {
        for (int32_t i = 0; i < n; i++) {
            const spin_pair *p = pairs[i];
            pl[i] = (spin_pair_logps){
                .pol_w = pol[i], .pol_l = pol[n + i],
                .ref_w = spin_ref_logp(lc->ref, lc->alpha, p->ref_t_w, p->ref_0_w),
                .ref_l = spin_ref_logp(lc->ref, lc->alpha, p->ref_t_l, p->ref_0_l),
                .n_w = cnt[i], .n_l = cnt[n + i],
            };
        }
        spin_loss_batch(lc, pl, n, scale, grad, grad + n, met);
        rc = train_backward(m, grad);
    }
    seq_batch_free(&sb);
    free(seqs), free(pol), free(grad), free(pl), free(cnt);
    return rc;
}

// A diverged step (loss NaN or infinite) is written as null: printf's "nan" is not JSON.
// metrics_read reads null back as NaN, so a resumed run rewrites the same bytes.
static void metrics_json_line(const step_metrics *s, as_sbuf *b) {
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

static int metrics_write(const char *path, const step_metrics *s, int64_t n) {
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

// The first n lines of a metrics.jsonl written by metrics_write.
static int metrics_read(const char *path, step_metrics *s, int64_t n) {
    as_jsonl r;
    if (as_jsonl_open(&r, path)) return AS_FAIL;
    int64_t i = 0;
    cJSON *o;
    int got = 1;
    while (i < n && (got = as_jsonl_next(&r, &o)) > 0) {
        s[i] = (step_metrics){.step = (int64_t)num(o, "step"), .epoch = num(o, "epoch"), .loss = num(o, "loss"),
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

// Epochs over the pairs: shuffled with a stream seeded by (seed, k); micro-batches
// of batch_size pairs, grad_accum of them per optimizer step.  The state is
// saved after every epoch (metrics first, then the state: the state's step
// count says how many metric lines are valid), and a saved state is resumed.
static int train_pairs(spin_ctx *x, int32_t k, spin_pairs *ps, step_metrics *mean) {
    const spin_config *c = x->c;
    train_model *m = x->tm;
    const int64_t n = ps->n, per_step = (int64_t)c->batch_size * c->grad_accum;
    if (n == 0) return as_error("iteration %d: no pairs to train on", k);
    const int64_t steps_per_epoch = (n + per_step - 1) / per_step, total = steps_per_epoch * c->epochs;
    char state_path[PATH_LEN], metrics_path[PATH_LEN];
    snprintf(state_path, sizeof state_path, "%s/iter_%d/train_state.safetensors", x->run, k);
    snprintf(metrics_path, sizeof metrics_path, "%s/iter_%d/metrics.jsonl", x->run, k);
    float *params, *grads;
    const optim_segment *segs;
    int nsegs;
    const size_t n_params = train_trainable(m, &params, &grads, &segs, &nsegs);
    optim_config oc = c->optim;
    oc.total_steps = total;
    optim *o = NULL;
    if (optim_init(&o, &oc, n_params)) return AS_FAIL;
    as_rng order;
    as_rng_seed(&order, derive_seed(c->seed, (uint64_t)k, SALT_ORDER, 0));
    as_rng_seed(&m->rng, derive_seed(c->seed, (uint64_t)k, SALT_DROPOUT, 0));
    step_metrics *hist = as_calloc((size_t)(total > 0 ? total : 1), sizeof *hist);
    int64_t *perm = as_malloc(sizeof(int64_t) * (size_t)(n > 0 ? n : 1));
    spin_pair **mb = as_malloc(sizeof *mb * (size_t)c->batch_size);
    int rc = AS_FAIL;
    if (file_exists(state_path)) {
        if (train_state_load(m, o, &order, state_path) || o->step % steps_per_epoch || o->step > total ||
            metrics_read(metrics_path, hist, o->step))
            goto done;
    }
    train_set_training(m, true);
    const double t0 = as_time();
    const int64_t resumed = o->step;
    for (int64_t step = o->step; step < total;) {
        const int32_t ep = (int32_t)(step / steps_per_epoch);
        train_shuffle(perm, n, &order);
        for (int64_t s = 0; s < steps_per_epoch; s++, step++) {
            const int64_t i0 = s * per_step, ns = AS_MIN(per_step, n - i0);
            spin_loss_metrics acc = {0};
            train_zero_grad(m);
            for (int64_t j0 = i0; j0 < i0 + ns; j0 += c->batch_size) {
                const int32_t nb = (int32_t)AS_MIN((int64_t)c->batch_size, i0 + ns - j0);
                for (int32_t b = 0; b < nb; b++) mb[b] = &ps->p[perm[j0 + b]];
                spin_loss_metrics met;
                // The step's loss is the mean over its pairs: each micro-batch weighs nb / ns.
                if (spin_train_microbatch(m, &c->loss, mb, nb, (double)nb / (double)ns, &met)) goto done;
                const double w = (double)nb / (double)ns;
                acc.loss += w * met.loss, acc.rewards_real += w * met.rewards_real, acc.rewards_generated += w * met.rewards_generated;
                acc.rewards_margins += w * met.rewards_margins, acc.rewards_accuracies += w * met.rewards_accuracies;
                acc.logps_real += w * met.logps_real, acc.logps_generated += w * met.logps_generated, acc.n += met.n;
            }
            double gn, lr;
            train_optim_step(m, o, &gn, &lr);
            hist[step] = (step_metrics){.step = step + 1, .epoch = (double)(step + 1) / (double)steps_per_epoch, .loss = acc.loss,
                                        .grad_norm = gn, .lr = lr, .m = acc};
            char extra[96];
            snprintf(extra, sizeof extra, "loss %.4f  margin %.3f", acc.loss, acc.rewards_margins);
            if (!x->quiet) {
                const double el = as_time() - t0, done = (double)(step + 1 - resumed);
                fprintf(stderr, "\ralphaspin run: iter %d/%d train      step %lld/%lld  %s  %.0fs elapsed, ETA %.0fs   %s", k, c->iterations,
                        (long long)step + 1, (long long)total, extra, el, el / done * (double)(total - step - 1),
                        step + 1 == total ? "\n" : "");
            }
        }
        if (metrics_write(metrics_path, hist, step) || train_state_save(m, o, &order, state_path)) goto done;
        char phase[32];
        snprintf(phase, sizeof phase, "epoch%d", ep + 1);
        abort_hook(k, phase);
    }
    // TRL-style summary: means over the last epoch's steps.
    memset(mean, 0, sizeof *mean);
    const int64_t from = total - steps_per_epoch;
    for (int64_t s = from; s < total; s++) {
        const double w = 1.0 / (double)steps_per_epoch;
        mean->loss += w * hist[s].loss, mean->grad_norm += w * hist[s].grad_norm;
        mean->m.rewards_real += w * hist[s].m.rewards_real, mean->m.rewards_generated += w * hist[s].m.rewards_generated;
        mean->m.rewards_margins += w * hist[s].m.rewards_margins, mean->m.rewards_accuracies += w * hist[s].m.rewards_accuracies;
        mean->m.logps_real += w * hist[s].m.logps_real, mean->m.logps_generated += w * hist[s].m.logps_generated;
    }
    mean->step = total;
    mean->epoch = c->epochs;
    mean->lr = total > 0 ? hist[total - 1].lr : 0;
    rc = AS_OK;
done:
    train_set_training(m, false);
    free(hist), free(perm), free(mb);
    optim_free(o);
    return rc;
}

// ---- step 4: checkpoint ----

// Writes pi_k and reads it back: the next iterations (and evaluation) use the
// saved bytes, as a resumed run would.
static int save_iterate(spin_ctx *x, int32_t k) {
    char path[PATH_LEN];
    if (x->c->lora) {
        snprintf(path, sizeof path, "%s/iter_%d/adapter", x->run, k);
        train_lora_free(x->iterates[k]);
        x->iterates[k] = NULL;
        return train_lora_save_peft(x->tm, path, x->c->model_path[0] ? x->c->model_path : x->base_gguf) ||
               train_lora_read_peft(&x->tm->cfg, path, &x->iterates[k]);
    }
    snprintf(path, sizeof path, "%s/iter_%d/model.gguf", x->run, k);
    if (train_export_gguf(x->tm, x->base_gguf, path, GGML_TYPE_F32)) return AS_FAIL;
    x->tm_iterate = k;
    return AS_OK;
}

// Makes the policy pi_t at the start of iteration t + 1.
static int policy_from_iterate(spin_ctx *x, int32_t t) {
    if (x->c->lora) {
        train_lora_copy(x->tm->lora, t == 0 ? x->lora_init : x->iterates[t]);
        return AS_OK;
    }
    if (x->tm_iterate == t) return AS_OK;
    char path[PATH_LEN];
    snprintf(path, sizeof path, "%s/iter_%d/model.gguf", x->run, t);
    train_model *m;
    if (train_model_load(&m, t == 0 ? x->base_gguf : path)) return AS_FAIL;
    train_set_threads(m, x->threads);
    train_set_checkpointing(m, x->c->checkpointing);
    train_model_free(x->tm);
    x->tm = m;
    x->tm_iterate = t;
    return AS_OK;
}

// ---- step 5: evaluation ----

// Held-out measurements of pi_k (tm holds pi_k): answers sampled from pi_k at
// temperature 1 (the same seeds for every k, so iterates are compared on
// common random numbers) give KL(pi_k || pi_0) ~ mean of log pi_k(y) -
// log pi_0(y), their lengths and the task accuracy; the SFT answers give the
// NLL per token.
static int measure_heldout(spin_ctx *x, int32_t k, heldout_stats *h) {
    const int64_t n = x->n_held;
    h->nll_per_token = h->kl_to_base = h->len_mean = h->len_std = h->task_accuracy = NAN;
    if (n == 0) return AS_OK;
    char **texts = as_calloc((size_t)n, sizeof *texts);
    int32_t *ntok = as_calloc((size_t)n, sizeof *ntok);
    spin_seq *gen = as_calloc((size_t)n, sizeof *gen), *sft = as_calloc((size_t)n, sizeof *sft);
    spin_seq **gp = as_malloc(sizeof *gp * (size_t)n), **sp = as_malloc(sizeof *sp * (size_t)n);
    float *lk = as_malloc(sizeof(float) * (size_t)n), *l0 = as_malloc(sizeof(float) * (size_t)n);
    sampler_params samp = sampler_params_default();
    samp.temperature = 1.0f, samp.top_k = 0, samp.top_p = 1.0f, samp.min_p = 0.0f, samp.repeat_penalty = 1.0f, samp.repeat_last_n = 0;
        // Seeds independent of k: every iterate answers with the same random numbers.
    int rc = generate_answers(x, k, "heldout", k, x->held, x->held_idx, n, &samp, 0, SALT_HELDOUT, texts, ntok);
    const bool full = !x->c->lora;
    train_model *mk = x->tm, *m0 = full ? x->tm0 : x->tm;
    for (int64_t i = 0; i < n && rc == AS_OK; i++) {
        const sft_example *e = &x->held->ex[x->held_idx[i]];
        const int32_t a = prompt_turns(e);
        rc = spin_encode_answer(x->tok, &x->tpl, e->msgs, a, texts[i], x->c->max_answer_len, &gen[i], NULL);
        if (rc == AS_OK) rc = spin_encode_answer(x->tok, &x->tpl, e->msgs, a, e->msgs[a].content, x->c->max_answer_len, &sft[i], NULL);
        gp[i] = &gen[i], sp[i] = &sft[i];
    }
    // pi_k: LoRA adapters on (k = 0: off); full fine-tuning: tm holds pi_k.
    const bool lora_on = x->c->lora && k > 0;
    if (x->c->lora) train_set_adapters(mk, lora_on);
    if (rc == AS_OK) rc = score_seqs(mk, sp, n, x->micro, lk);
    if (rc == AS_OK) {
        double nll = 0, tok = 0;
        for (int64_t i = 0; i < n; i++) nll -= lk[i], tok += sft[i].n_scored;
        h->nll_per_token = nll / tok;
    }
    if (rc == AS_OK && k > 0) {
        rc = score_seqs(mk, gp, n, x->micro, lk);
        if (x->c->lora) train_set_adapters(m0, false);
        if (rc == AS_OK) rc = score_seqs(m0, gp, n, x->micro, l0);
        if (rc == AS_OK) {
            double kl = 0;
            for (int64_t i = 0; i < n; i++) kl += (double)lk[i] - (double)l0[i];
            h->kl_to_base = kl / (double)n;
        }
    } else if (rc == AS_OK) {
        h->kl_to_base = 0.0; // pi_0 against itself
    }
    if (x->c->lora) train_set_adapters(mk, true);
    if (rc == AS_OK) {
        double s = 0, s2 = 0;
        for (int64_t i = 0; i < n; i++) s += ntok[i], s2 += (double)ntok[i] * ntok[i];
        h->len_mean = s / (double)n;
        h->len_std = n > 1 ? sqrt(fmax(0.0, (s2 - s * s / (double)n) / (double)(n - 1))) : 0.0;
#ifdef ALPHASPIN_HAVE_DATA
        // Task accuracy when every reference answer states a number (arithmetic, GSM8K):
        // greedy answers (as GSM8K is scored), their number ("#### n" or the last one)
        // against the reference's.
        int64_t scored = 0, right = 0;
        int64_t *want = as_malloc(sizeof(int64_t) * (size_t)n);
        for (int64_t i = 0; i < n; i++) {
            const sft_example *e = &x->held->ex[x->held_idx[i]];
            if (data_arith_extract(e->msgs[prompt_turns(e)].content, 1, &want[i])) break;
            scored++;
        }
        if (scored == n) {
            char **greedy = as_calloc((size_t)n, sizeof *greedy);
            const sampler_params gs = sampler_params_greedy();
            rc = generate_answers(x, k, "accuracy", k, x->held, x->held_idx, n, &gs, 0, SALT_HELDOUT, greedy, NULL);
            for (int64_t i = 0; i < n; i++) {
                int64_t got;
                if (rc == AS_OK) right += data_arith_extract(greedy[i], 1, &got) == 0 && got == want[i];
                free(greedy[i]);
            }
            free(greedy);
            if (rc == AS_OK) h->task_accuracy = (double)right / (double)n;
        }
        free(want);
#endif
    }
    for (int64_t i = 0; i < n; i++) free(texts[i]), spin_seq_free(&gen[i]), spin_seq_free(&sft[i]);
    free(texts), free(ntok), free(gen), free(sft), free(gp), free(sp), free(lk), free(l0);
    return rc;
}

// Benchmark tasks through the evaluation module (issue 5): RUN/iter_k/eval.json
// and the scores for summary.json ("acc,none" -> "acc").
static int evaluate_tasks(spin_ctx *x, int32_t k, cJSON *summary_eval) {
    const spin_config *c = x->c;
    if (c->n_eval_tasks == 0) return AS_OK;
#ifdef ALPHASPIN_HAVE_EVAL
    char tasks[4096] = "", path[PATH_LEN];
    for (int32_t i = 0; i < c->n_eval_tasks; i++)
        snprintf(tasks + strlen(tasks), sizeof tasks - strlen(tasks), "%s%s", i ? "," : "", c->eval_tasks[i]);
    model *gm = gen_model(x, k);
    if (!gm) return AS_FAIL;
    eval_options o = eval_options_default();
    o.tasks = tasks;
    o.shots = c->eval_shots;
    o.limit = c->eval_limit;
    o.precision = c->eval_precision < 0 ? gm->precision : (kernel_precision)c->eval_precision;
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

// ---- summary ----

static void add_num(cJSON *o, const char *k, double v) {
    if (isfinite(v)) cJSON_AddNumberToObject(o, k, v);
    else cJSON_AddNullToObject(o, k);
}

static int write_summary(spin_ctx *x, int32_t k, const step_metrics *train, const heldout_stats *h, cJSON *eval, const phase_times *pt,
                         double total) {
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
    char *s = as_json_print(o, true), path[PATH_LEN];
    cJSON_Delete(o);
    snprintf(path, sizeof path, "%s/iter_%d/summary.json", x->run, k);
    const int rc = as_write_file_atomic(path, s, strlen(s));
    free(s);
    return rc;
}

// ---- the iterations ----

// Iteration 0: the base model's row (held-out measurements and evaluation).
static int run_base(spin_ctx *x) {
    const double t0 = as_time();
    char dir[PATH_LEN];
    snprintf(dir, sizeof dir, "%s/iter_0", x->run);
    if (as_mkdir_p(dir)) return AS_FAIL;
    phase_times pt = {0};
    heldout_stats h;
    cJSON *ev = cJSON_CreateObject();
    if (measure_heldout(x, 0, &h) || evaluate_tasks(x, 0, ev)) {
        cJSON_Delete(ev);
        return AS_FAIL;
    }
    pt.evaluate = as_time() - t0;
    return write_summary(x, 0, NULL, &h, ev, &pt, as_time() - t0);
}

// Iteration k: pi_k from pi_t, t = k - 1.  The main job, top to bottom.
static int run_iteration(spin_ctx *x, int32_t k) {
    const spin_config *c = x->c;
    const int32_t t = k - 1;
    const double t_start = as_time();
    phase_times pt = {0};
    char dir[PATH_LEN / 2], spin_path[PATH_LEN], trl_path[PATH_LEN];
    snprintf(dir, sizeof dir, "%s/iter_%d", x->run, k);
    snprintf(spin_path, sizeof spin_path, "%s/pairs.jsonl", dir);
    snprintf(trl_path, sizeof trl_path, "%s/pairs_trl.jsonl", dir);
    spin_pairs pairs = {0};
    step_metrics train = {0};
    heldout_stats held;
    cJSON *eval = cJSON_CreateObject();
    double t0;
    if (as_mkdir_p(dir) || policy_from_iterate(x, t)) goto fail;

    if (!file_exists(trl_path)) {
        // 1. Generate losers from the window's iterates (the opponent mixture).
        t0 = as_time();
        if (make_pairs(x, k, &pairs)) goto fail;
        pt.generate = as_time() - t0;
        abort_hook(k, "generate");
        // 2. Score the references once: log pi_t and log pi_0 of every winner and loser.
        t0 = as_time();
        const int64_t dropped = spin_pairs_encode_or_drop(&pairs, x->tok, &x->tpl, c->max_answer_len);
        if (dropped && !x->quiet) fprintf(stderr, "alphaspin run: iter %d: %lld generated answers could not be encoded; their pairs are left out\n", k, (long long)dropped);
        if (score_references(x->tm, x->c->lora ? NULL : x->tm0, &pairs, c->loss.alpha, x->micro, t == 0, &(score_progress){x, k, "references", t0}) ||
            spin_pairs_write(&pairs, c->loss.ref, c->loss.alpha, spin_path, trl_path))
            goto fail;
        pt.references = as_time() - t0;
        spin_pairs_free(&pairs);
        abort_hook(k, "references");
    }
    // Training reads the pairs back from the file, in a resumed run or not.
    if (spin_pairs_read_trl(&pairs, trl_path, -1) || spin_pairs_encode(&pairs, x->tok, &x->tpl, c->max_answer_len)) goto fail;

    // 3. Train pi_t -> pi_k with the preference loss (resuming a saved state).
    t0 = as_time();
    if (train_pairs(x, k, &pairs, &train)) goto fail;
    pt.train = as_time() - t0;
    abort_hook(k, "train");

    // 4. Checkpoint pi_k (adapters or weights), read back for what follows.
    t0 = as_time();
    if (save_iterate(x, k)) goto fail;
    pt.checkpoint = as_time() - t0;
    abort_hook(k, "checkpoint");

    // 5. Evaluate pi_k: held-out measurements and benchmark tasks.
    t0 = as_time();
    if (x->c->lora) train_lora_copy(x->tm->lora, x->iterates[k]);
    if (measure_heldout(x, k, &held) || evaluate_tasks(x, k, eval)) goto fail;
    pt.evaluate = as_time() - t0;
    abort_hook(k, "evaluate");

    // summary.json last: its presence marks iteration k complete.
    if (write_summary(x, k, &train, &held, eval, &pt, as_time() - t_start)) {
        eval = NULL;
        goto fail;
    }
    abort_hook(k, "summary");
    char state[PATH_LEN];
    snprintf(state, sizeof state, "%s/train_state.safetensors", dir);
    unlink(state);
    spin_pairs_free(&pairs);
    return AS_OK;
fail:
    cJSON_Delete(eval);
    spin_pairs_free(&pairs);
    return AS_FAIL;
}

// ---- setup ----

static int load_models(spin_ctx *x) {
    const spin_config *c = x->c;
    // model_load takes a GGUF file or a Hugging Face folder (model/model_hf.h).
    snprintf(x->base_gguf, sizeof x->base_gguf, "%s", c->model_path);
    if (model_load(&x->inf, x->base_gguf)) return AS_FAIL;
    const gguf_file *meta = x->inf->file;
    if (c->tokenizer_path[0]) {
        // The tokenizer and chat template of another file (a folder without tokenizer.json).
        if (gguf_open(&x->tok_file, c->tokenizer_path)) return AS_FAIL;
        meta = x->tok_file;
    }
    if (tokenizer_load(&x->tok, meta) || chat_template_init(&x->tpl, meta, c->chat_template[0] ? c->chat_template : NULL) ||
        train_model_from_model(&x->tm, x->inf))
        return AS_FAIL;
    x->inf->precision = c->gen_precision;
    train_set_threads(x->tm, x->threads);
    train_set_checkpointing(x->tm, c->checkpointing);
    x->tm_iterate = 0;
    if (c->lora) {
        train_lora_config lc = c->lora_cfg;
        lc.seed = derive_seed(c->seed, 0, SALT_LORA, 0);
        if (!(x->lora_init = train_lora_new(&x->tm->cfg, &lc)) || train_lora_attach(x->tm, &lc)) return AS_FAIL;
    } else {
        if (train_model_from_model(&x->tm0, x->inf)) return AS_FAIL;
        train_set_threads(x->tm0, x->threads);
    }
    x->iterates = as_calloc((size_t)c->iterations + 1, sizeof *x->iterates);
    return AS_OK;
}

static int check_layout(const char *path, const char *layout) {
    if (strcmp(layout, "auto") == 0) return AS_OK;
    const char *need = !strcmp(layout, "messages") ? "messages" : !strcmp(layout, "prompt_response") ? "response" : "answer";
    as_jsonl r;
    if (as_jsonl_open(&r, path)) return AS_FAIL;
    cJSON *o;
    int got;
    while ((got = as_jsonl_next(&r, &o)) > 0) {
        if (!cJSON_GetObjectItem(o, need)) got = as_jsonl_error(&r, "data.layout is %s but the line has no \"%s\" field", layout, need);
        cJSON_Delete(o);
        if (got < 0) break;
    }
    as_jsonl_close(&r);
    return got < 0 ? AS_FAIL : AS_OK;
}

static int load_data(spin_ctx *x) {
    const spin_config *c = x->c;
    char train_path[PATH_LEN], held_path[PATH_LEN] = "";
    snprintf(train_path, sizeof train_path, "%s", c->train_path);
    if (c->heldout_path[0]) snprintf(held_path, sizeof held_path, "%s", c->heldout_path);
    if (strcmp(c->generator, "arith") == 0) {
#ifdef ALPHASPIN_HAVE_DATA
        // The project's arithmetic tasks: one call, split into train and held-out files.
        snprintf(train_path, sizeof train_path, "%s/data/train.jsonl", x->run);
        snprintf(held_path, sizeof held_path, "%s/data/heldout.jsonl", x->run);
        if (!file_exists(train_path) || !file_exists(held_path)) {
            char dir[PATH_LEN];
            snprintf(dir, sizeof dir, "%s/data", x->run);
            data_arith_config ac;
            data_arith_config_default(&ac);
            ac.n = c->generator_items + c->heldout_size;
            ac.seed = c->seed;
            ac.level = c->generator_level;
            ac.style = (data_arith_style)data_arith_style_parse(c->generator_style);
            data_arith_item *items;
            if (as_mkdir_p(dir) || data_arith_generate(&ac, &items)) return AS_FAIL;
            int rc = data_arith_write_jsonl(held_path, items, c->heldout_size) ||
                     data_arith_write_jsonl(train_path, items + c->heldout_size, c->generator_items);
            data_arith_free(items, ac.n);
            if (rc) return AS_FAIL;
        }
#else
        return as_error("data.generator: this build has no data module (src/data)");
#endif
    }
    if (check_layout(train_path, c->layout) || sft_data_load(&x->train, train_path)) return AS_FAIL;
    if (held_path[0] && (check_layout(held_path, c->layout) || sft_data_load(&x->held, held_path))) return AS_FAIL;
    // Without a held-out file, heldout_size examples of a seeded permutation are held out.
    const int64_t n = x->train->n;
    int64_t *perm = as_malloc(sizeof(int64_t) * (size_t)n);
    as_rng rng;
    as_rng_seed(&rng, derive_seed(c->seed, 0, SALT_SPLIT, 0));
    train_shuffle(perm, n, &rng);
    int64_t n_split = 0;
    if (!x->held) {
        n_split = AS_MIN(c->heldout_size, n - 1);
        x->held = x->train;
        x->held_idx = as_malloc(sizeof(int64_t) * (size_t)(n_split > 0 ? n_split : 1));
        for (int64_t i = 0; i < n_split; i++) x->held_idx[i] = perm[i];
        // Kept in data order so the measurements do not depend on the permutation's order.
        x->n_held = n_split;
    } else {
        x->n_held = AS_MIN(c->heldout_size, x->held->n);
        x->held_idx = as_malloc(sizeof(int64_t) * (size_t)(x->n_held > 0 ? x->n_held : 1));
        for (int64_t i = 0; i < x->n_held; i++) x->held_idx[i] = i;
    }
    // Prompts: the rest, in data order, whose prompt fits max_prompt_len.
    uint8_t *is_held = as_calloc((size_t)n, 1);
    for (int64_t i = 0; i < n_split; i++) is_held[perm[i]] = 1;
    free(perm);
    x->pool = as_malloc(sizeof(int64_t) * (size_t)n);
    for (int64_t i = 0; i < n; i++) {
        if (is_held[i]) continue;
        const sft_example *e = &x->train->ex[i];
        char *pr = chat_render(&x->tpl, e->msgs, (size_t)prompt_turns(e), true);
        int32_t *ids = NULL;
        size_t np = 0;
        if (!pr || tokenizer_encode(x->tok, pr, strlen(pr), false, true, &ids, &np)) {
            free(pr), free(is_held);
            return AS_FAIL;
        }
        free(pr), free(ids);
        if ((int64_t)np <= c->max_prompt_len) x->pool[x->n_pool++] = i;
    }
    free(is_held);
    if (x->n_pool == 0) return as_error("%s: no example with a prompt of at most train.max_prompt_len = %d tokens", train_path, c->max_prompt_len);
    return AS_OK;
}

static void ctx_free(spin_ctx *x) {
    if (x->iterates)
        for (int32_t k = 0; k <= x->c->iterations; k++) train_lora_free(x->iterates[k]);
    free(x->iterates);
    train_lora_free(x->lora_init);
    train_model_free(x->tm);
    train_model_free(x->tm0);
    model_free(x->gen_full);
    model_free(x->inf);
    gguf_close(x->tok_file);
    chat_template_free(&x->tpl);
    tokenizer_free(x->tok);
    if (x->held != x->train) sft_data_free(x->held);
    sft_data_free(x->train);
    free(x->pool), free(x->held_idx);
}

// RUN/config.yaml: written first; an existing one must be this configuration.
static int write_config(const char *run, const spin_config *c) {
    char path[PATH_LEN];
    snprintf(path, sizeof path, "%s/config.yaml", run);
    char *y = spin_config_to_yaml(c);
    int rc;
    if (file_exists(path)) {
        char *old = NULL;
        size_t n;
        rc = as_read_file(path, &old, &n);
        if (rc == AS_OK && strcmp(old, y) != 0)
            rc = as_error("%s: the run folder holds another configuration (resume with the same one, or choose another --out)", path);
        free(old);
    } else {
        rc = as_write_file_atomic(path, y, strlen(y));
    }
    free(y);
    return rc;
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
    if (spin_config_check(&c) || as_mkdir_p(o->out_dir) || write_config(o->out_dir, &c)) return AS_FAIL;
    spin_ctx x = {.c = &c, .run = o->out_dir, .quiet = o->quiet};
    x.threads = c.threads > 0 ? c.threads : kernel_get_threads();
    kernel_set_threads(x.threads);
    x.micro = 2 * c.batch_size;
    int rc = AS_FAIL;
    if (load_models(&x) || load_data(&x)) goto done;
    char path[PATH_LEN];
    snprintf(path, sizeof path, "%s/iter_0/summary.json", x.run);
    if (!file_exists(path) && run_base(&x)) goto done;
    for (int32_t k = 1; k <= c.iterations; k++) {
        snprintf(path, sizeof path, "%s/iter_%d/summary.json", x.run, k);
        if (file_exists(path)) {
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
    ctx_free(&x);
    return rc;
}
