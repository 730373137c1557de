// alphaspin gfn-train: GFlowNet fine-tuning of a LoRA sampler of the geometric
// mixture pi_t^(1-alpha) pi_0^alpha (src/mixture/gfn.h) on the prompts of an
// SFT data file.  pi_t and pi_0 are the base model with PEFT adapters (or
// none); the sampler is the base with adapters of its own, written in PEFT's
// layout so that `alphaspin run` (sampler: gflownet) or model_set_lora use it.
// The training state is saved every --save-every steps; rerunning the same
// command resumes it (and refuses a state of other options, model or data).
#include <getopt.h>
#include <math.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "dist/dist.h"
#include "mixture/gfn.h"
#include "tokenizer/chat.h"
#include "train/checkpoint.h"
#include "train/sft.h"
#include "util/common.h"
#include "util/json.h"

// Steps between checkpoints: a step samples, scores and trains (seconds on the
// default model), a state of the default rank is tens of MB.
enum { GFN_SAVE_EVERY = 10 };

static void usage(FILE *out) {
    gfn_config d;
    gfn_config_default(&d);
    fprintf(out,
            "usage: alphaspin gfn-train [--model FILE.gguf] --data FILE.jsonl --out DIR [options]\n\n"
            "Trains a LoRA sampler (the base plus its own adapters) to draw answers from the geometric\n"
            "mixture pi_t^(1-alpha) pi_0^alpha with the modified sub-trajectory balance loss (GFlowNet\n"
            "fine-tuning; ../shared/docs/ALPHA_SPIN.md, Appendix A).  The prompts are the conversations of an\n"
            "SFT file up to their last assistant turn.  Writes DIR/adapter_model.safetensors +\n"
            "adapter_config.json (PEFT) and DIR/log.jsonl (one line per step); a progress line on stderr.\n"
            "DIR/train_state.safetensors holds what a resume needs (sampler, optimizer, random stream, prompt\n"
            "order, replay buffers): rerunning the same command continues from it, bitwise as a run that was\n"
            "not interrupted (same thread count); a state of other options, model, adapters or data is refused.\n"
            "Under mpirun the processes share each step's answers (sampled and scored by share) and its\n"
            "micro-batches; the sampler, state and log are one process's bytes (at --precision q8).\n\n"
            "  --model FILE            GGUF base model (default: the fetched SmolLM2-135M-Instruct)\n"
            "  --data FILE             SFT JSONL (messages / prompt-response / question-answer)\n"
            "  --out DIR               output folder\n"
            "  --adapter DIR           pi_t: PEFT adapters on the base (default: none, pi_t = base)\n"
            "  --base-adapter DIR      pi_0: PEFT adapters on the base (default: none, pi_0 = base)\n"
            "  --init DIR              start the sampler from these PEFT adapters (default: new ones, = the base)\n"
            "  --alpha A               weight of pi_0 (default %g)\n"
            "  --steps N               optimizer steps (default %d)\n"
            "  --lr LR                 AdamW learning rate, constant (default %g)\n"
            "  --lora-rank R           sampler adapters' rank (default 16)\n"
            "  --lora-alpha A          sampler adapters' alpha (default 32)\n"
            "  --prompts-per-step N    default %d\n"
            "  --samples-per-prompt N  default %d\n"
            "  --max-prompts N         use the first N prompts of the file (default: all)\n"
            "  --max-prompt-len N      skip longer prompts (tokens, default 512)\n"
            "  --max-new-tokens N      answer tokens at most, END included (default %d)\n"
            "  --reward-temp A:B:N     reward temperature from A to B over N steps (default %g:%g:%d)\n"
            "  --lambda L              sub-trajectory weight lambda (default %g)\n"
            "  --buffer-size N         replay answers kept per prompt (default %d; 0: no replay)\n"
            "  --replay-prob P         share of prompts trained on replayed answers (default %g)\n"
            "  --explore P:LO:HI       tempered exploration: probability and temperature range (default %g:%g:%g)\n"
            "  --micro-batch N         sequences per training forward/backward (default %d)\n"
            "  --sample-batch N        sequences per sampling forward (default %d)\n"
            "  --precision P           f32 | q8 | bf16: arithmetic of sampling and rewards (default q8)\n"
            "  --chat-template T       chatml | gemma | llama3, when the model's template is not recognised\n"
            "  --save-every N          write the sampler and training state every N steps, and after the last\n"
            "                          (default %d; 0: after the last only)\n"
            "  --seed S                default %llu\n"
            "  --threads N             threads (default: all cores)\n"
            "  --device D              " CLI_DEVICE_HELP "\n"
            "  --quiet                 no progress line\n"
            "  --help                  this text\n",
            d.alpha, d.steps, d.optim.lr, d.prompts_per_step, d.samples_per_prompt, d.max_new_tokens, d.reward_temp_start,
            d.reward_temp_end, d.reward_temp_horizon, d.subtb_lambda, d.buffer_size, d.replay_prob, d.explore_prob, d.explore_temp_low,
            d.explore_temp_high, d.micro_batch, d.sample_batch, GFN_SAVE_EVERY, (unsigned long long)d.seed);
}

// What the step and checkpoint callbacks need.
typedef struct log_ctx {
    FILE *log;
    const char *out, *state, *base_model;
    int64_t steps, saved_step;
    train_model *tm;
    bool quiet;
    int64_t kill_step;          // ALPHASPIN_TEST_GFN_KILL_AFTER (-1: none) ...
    bool kill_saved;            // ... after its log line, or (":saved") after its state
} log_ctx;

// For the resume tests (tests/cli/test_gfn_resume.sh): with ALPHASPIN_TEST_GFN_KILL_AFTER=<step>
// the process kills itself as kill -9 would once that step's log line is written (before its
// checkpoint, if one is due), with <step>:saved once its checkpoint is written.
static void test_kill(const log_ctx *l, int64_t step, bool saved) {
    if (step == l->kill_step && saved == l->kill_saved) {
        fflush(NULL);
        raise(SIGKILL);
    }
}

// The log from the state's step on: cut back to its lines when resuming.
static int on_started(void *user, int64_t first_step) {
    log_ctx *l = user;
    char path[4096];
    snprintf(path, sizeof path, "%s/log.jsonl", l->out);
    if (first_step > 0) {
        if (as_keep_lines(path, first_step)) return AS_FAIL;
        if (as_files_writer()) fprintf(stderr, "gfn-train: resuming %s at step %lld/%lld\n", l->state, (long long)first_step, (long long)l->steps);
    }
    // Under mpirun rank 0 writes the log (dist/dist.h); the others' lines go nowhere.
    if (!(l->log = fopen(as_files_writer() ? path : "/dev/null", first_step > 0 ? "a" : "w"))) return as_error("%s: cannot write", path);
    return AS_OK;
}

// The sampler as it is at a checkpoint, before the state that goes with it.
static int on_save(void *user, int64_t step) {
    log_ctx *l = user;
    if (train_lora_save_peft(l->tm, l->out, l->base_model)) return AS_FAIL;
    l->saved_step = step;
    return AS_OK;
}

static void on_saved(void *user, int64_t step) { test_kill(user, step, true); }

static void on_step(void *user, const gfn_step_stats *s) {
    log_ctx *l = user;
    // A diverged loss is written as null (printf's "nan" is not JSON).
    static const char *const keys[] = {"loss", "grad_norm", "lr", "reward_temp", "explore_temp", "mean_log_reward", "mean_len"};
    const double v[] = {s->loss, s->grad_norm, s->lr, s->reward_temp, s->explore_temp, s->mean_log_reward, s->mean_len};
    const int digits[] = {6, 6, 6, 4, 4, 6, 4};
    as_sbuf b = {0};
    as_sb_printf(&b, "{\"step\": %lld", (long long)s->step);
    for (size_t i = 0; i < AS_ARRAY_LEN(keys); i++) {
        as_sb_printf(&b, ", \"%s\": ", keys[i]);
        as_sb_json_num(&b, digits[i], v[i]);
    }
    as_sb_printf(&b, ", \"replayed\": %lld, \"buffer\": %lld, \"elapsed_s\": %.3f}\n", (long long)s->n_replayed, (long long)s->buffer_total,
                 s->elapsed_s);
    fputs(b.s, l->log);
    free(b.s);
    fflush(l->log);
    if (!l->quiet)
        fprintf(stderr, "\rgfn-train: step %lld/%lld loss %.4f log R %.2f len %.1f elapsed %.0fs ETA %.0fs   ", (long long)s->step,
                (long long)l->steps, s->loss, s->mean_log_reward, s->mean_len, s->elapsed_s, s->eta_s);
    test_kill(l, s->step, false);
}

// SHA-256 of bytes, in hex, as a running digest.
typedef struct digest {
    EVP_MD_CTX *ctx;
} digest;

static digest digest_begin(void) {
    digest d = {EVP_MD_CTX_new()};
    if (!d.ctx || EVP_DigestInit_ex(d.ctx, EVP_sha256(), NULL) != 1) as_die("EVP_sha256 unavailable");
    return d;
}

static void digest_end(digest *d, char out[65]) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    EVP_DigestFinal_ex(d->ctx, md, &n);
    EVP_MD_CTX_free(d->ctx);
    for (unsigned i = 0; i < n && i < 32; i++) snprintf(out + 2 * i, 3, "%02x", md[i]);
}

// "r=R alpha=A targets=T sha256:<hex>" of an adapter set's configuration and weights, or "none".
static void lora_line(as_sbuf *b, const char *key, const train_lora *lo) {
    if (!lo) {
        as_sb_printf(b, "%s=none\n", key);
        return;
    }
    digest d = digest_begin();
    EVP_DigestUpdate(d.ctx, lo->memory, sizeof(float) * lo->n);
    char hex[65];
    digest_end(&d, hex);
    as_sb_printf(b, "%s=r=%d alpha=%.9g targets=0x%x sha256:%s\n", key, lo->cfg.rank, (double)lo->cfg.alpha, lo->cfg.targets, hex);
}

// What the run depends on beyond the gfn_config (gfn.h, gfn_checkpoint.options):
// the model (path, size, shape), the prompts as tokens (so the data file, the
// chat template, --max-prompts and --max-prompt-len all count), pi_t's and
// pi_0's adapters, the sampler's initial adapters and the training precision.
static char *run_options(const char *model_path, const model *m, const int32_t *const *prompts, const int64_t *n_prompt, int64_t n,
                         const train_lora *lt, const train_lora *l0, const train_lora *init, train_precision tp) {
    as_sbuf b = {0};
    struct stat st;
    char *full = realpath(model_path, NULL); // the same file by another relative path is the same model
    as_sb_printf(&b, "model=%s (%lld bytes; %d layers, %d wide, %d tokens)\n", full ? full : model_path,
                 stat(model_path, &st) ? -1LL : (long long)st.st_size, m->cfg.n_layer, m->cfg.n_embd, m->cfg.n_vocab);
    free(full);
    digest d = digest_begin();
    for (int64_t i = 0; i < n; i++) {
        EVP_DigestUpdate(d.ctx, &n_prompt[i], sizeof n_prompt[i]);
        EVP_DigestUpdate(d.ctx, prompts[i], sizeof(int32_t) * (size_t)n_prompt[i]);
    }
    char hex[65];
    digest_end(&d, hex);
    as_sb_printf(&b, "prompts=%lld sha256:%s\n", (long long)n, hex);
    lora_line(&b, "adapter", lt);
    lora_line(&b, "base-adapter", l0);
    lora_line(&b, "sampler-init", init);
    as_sb_printf(&b, "train-precision=%s\n", train_precision_name(tp));
    return b.s;
}

// Three numbers "a:b:c" (the last may be an integer).
static bool parse_triple(const char *s, double *a, double *b, double *c) {
    char tail;
    return sscanf(s, "%lf:%lf:%lf%c", a, b, c, &tail) == 3 && isfinite(*a) && isfinite(*b) && isfinite(*c);
}

int cmd_gfn_train(int argc, char **argv) {
    enum { O_MODEL = 1, O_DATA, O_OUT, O_ADAPTER, O_BASE_ADAPTER, O_INIT, O_ALPHA, O_STEPS, O_LR, O_RANK, O_LALPHA, O_PPS, O_SPP,
           O_MAXP, O_MAXPL, O_MAXNEW, O_RTEMP, O_LAMBDA, O_BUF, O_REPLAY, O_EXPLORE, O_MICRO, O_SBATCH, O_PREC, O_TMPL, O_SEED,
           O_THREADS, O_QUIET, O_HELP, O_DEVICE, O_SAVE };
    static const struct option opts[] = {
        {"model", required_argument, 0, O_MODEL},           {"data", required_argument, 0, O_DATA},
        {"out", required_argument, 0, O_OUT},               {"adapter", required_argument, 0, O_ADAPTER},
        {"base-adapter", required_argument, 0, O_BASE_ADAPTER}, {"init", required_argument, 0, O_INIT},
        {"alpha", required_argument, 0, O_ALPHA},           {"steps", required_argument, 0, O_STEPS},
        {"lr", required_argument, 0, O_LR},                 {"lora-rank", required_argument, 0, O_RANK},
        {"lora-alpha", required_argument, 0, O_LALPHA},     {"prompts-per-step", required_argument, 0, O_PPS},
        {"samples-per-prompt", required_argument, 0, O_SPP}, {"max-prompts", required_argument, 0, O_MAXP},
        {"max-prompt-len", required_argument, 0, O_MAXPL},  {"max-new-tokens", required_argument, 0, O_MAXNEW},
        {"reward-temp", required_argument, 0, O_RTEMP},     {"lambda", required_argument, 0, O_LAMBDA},
        {"buffer-size", required_argument, 0, O_BUF},       {"replay-prob", required_argument, 0, O_REPLAY},
        {"explore", required_argument, 0, O_EXPLORE},       {"micro-batch", required_argument, 0, O_MICRO},
        {"sample-batch", required_argument, 0, O_SBATCH},   {"precision", required_argument, 0, O_PREC},
        {"chat-template", required_argument, 0, O_TMPL},    {"seed", required_argument, 0, O_SEED},
        {"threads", required_argument, 0, O_THREADS},       {"quiet", no_argument, 0, O_QUIET},
        {"help", no_argument, 0, O_HELP},                   {"device", required_argument, 0, O_DEVICE},
        {"save-every", required_argument, 0, O_SAVE},       {0, 0, 0, 0}};
    const char *cmd = "gfn-train";
    const char *model_path = NULL, *data = NULL, *out = NULL, *adapter = NULL, *base_adapter = NULL, *init = NULL, *tmpl = NULL;
    gfn_config c;
    gfn_config_default(&c);
    c.precision = KERNEL_PRECISION_Q8; // sampling and rewards: speed first (--precision)
    train_lora_config lc = {.rank = 16, .alpha = 32, .dropout = 0, .targets = 0, .seed = 0};
    long l, max_prompts = 0, max_prompt_len = 512, save_every = GFN_SAVE_EVERY;
    double d, a, b, e;
    bool quiet = false;
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case O_MODEL: model_path = optarg; break;
        case O_DATA: data = optarg; break;
        case O_OUT: out = optarg; break;
        case O_ADAPTER: adapter = optarg; break;
        case O_BASE_ADAPTER: base_adapter = optarg; break;
        case O_INIT: init = optarg; break;
        case O_ALPHA: if (!cli_parse_float(cmd, "--alpha", optarg, 0, 1, &d)) return 2; c.alpha = (float)d; break;
        case O_STEPS: if (!cli_parse_int(cmd, "--steps", optarg, 0, 1 << 30, &l)) return 2; c.steps = (int32_t)l; break;
        case O_LR: if (!cli_parse_float(cmd, "--lr", optarg, 0, 10, &d)) return 2; c.optim.lr = (float)d; break;
        case O_RANK: if (!cli_parse_int(cmd, "--lora-rank", optarg, 1, 4096, &l)) return 2; lc.rank = (int32_t)l; break;
        case O_LALPHA: if (!cli_parse_float(cmd, "--lora-alpha", optarg, 1e-6, 1e6, &d)) return 2; lc.alpha = (float)d; break;
        case O_PPS: if (!cli_parse_int(cmd, "--prompts-per-step", optarg, 1, 1 << 20, &l)) return 2; c.prompts_per_step = (int32_t)l; break;
        case O_SPP: if (!cli_parse_int(cmd, "--samples-per-prompt", optarg, 1, 1 << 20, &l)) return 2; c.samples_per_prompt = (int32_t)l; break;
        case O_MAXP: if (!cli_parse_int(cmd, "--max-prompts", optarg, 1, __LONG_MAX__, &max_prompts)) return 2; break;
        case O_MAXPL: if (!cli_parse_int(cmd, "--max-prompt-len", optarg, 1, 1 << 20, &max_prompt_len)) return 2; break;
        case O_MAXNEW: if (!cli_parse_int(cmd, "--max-new-tokens", optarg, 1, 1 << 20, &l)) return 2; c.max_new_tokens = (int32_t)l; break;
        case O_RTEMP:
            if (!parse_triple(optarg, &a, &b, &e) || a <= 0 || b <= 0 || e < 0 || e > 1e9)
                return cli_usage_error(cmd, "--reward-temp expects START:END:STEPS with positive temperatures, got '%s'", optarg);
            c.reward_temp_start = (float)a, c.reward_temp_end = (float)b, c.reward_temp_horizon = (int32_t)e;
            break;
        case O_LAMBDA: if (!cli_parse_float(cmd, "--lambda", optarg, 1e-6, 1e6, &d)) return 2; c.subtb_lambda = (float)d; break;
        case O_BUF: if (!cli_parse_int(cmd, "--buffer-size", optarg, 0, 1 << 20, &l)) return 2; c.buffer_size = (int32_t)l; break;
        case O_REPLAY: if (!cli_parse_float(cmd, "--replay-prob", optarg, 0, 1, &d)) return 2; c.replay_prob = (float)d; break;
        case O_EXPLORE:
            if (!parse_triple(optarg, &a, &b, &e) || a < 0 || a > 1 || b <= 0 || e < b)
                return cli_usage_error(cmd, "--explore expects PROB:LOW:HIGH with 0 <= PROB <= 1 and 0 < LOW <= HIGH, got '%s'", optarg);
            c.explore_prob = (float)a, c.explore_temp_low = (float)b, c.explore_temp_high = (float)e;
            break;
        case O_MICRO: if (!cli_parse_int(cmd, "--micro-batch", optarg, 1, 1 << 20, &l)) return 2; c.micro_batch = (int32_t)l; break;
        case O_SBATCH: if (!cli_parse_int(cmd, "--sample-batch", optarg, 1, 1 << 20, &l)) return 2; c.sample_batch = (int32_t)l; break;
        case O_PREC:
            if (kernel_precision_parse(optarg, &c.precision)) return cli_usage_error(cmd, "--precision must be f32, q8 or bf16, got '%s'", optarg);
            break;
        case O_TMPL: tmpl = optarg; break;
        case O_SEED: if (!cli_parse_int(cmd, "--seed", optarg, 0, __LONG_MAX__, &l)) return 2; c.seed = (uint64_t)l; break;
        case O_THREADS: if (!cli_parse_int(cmd, "--threads", optarg, 1, 1024, &l)) return 2; kernel_set_threads((int)l); break;
        case O_DEVICE: cli_set_device(optarg); break;
        case O_SAVE: if (!cli_parse_int(cmd, "--save-every", optarg, 0, 1 << 30, &save_every)) return 2; break;
        case O_QUIET: quiet = true; break;
        case O_HELP: usage(stdout); return 0;
        default: return cli_usage_error(cmd, "unknown option");
        }
    }
    if (optind < argc) return cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    if (!data || !out) return cli_usage_error(cmd, "--data and --out are required");
    quiet = quiet || !as_files_writer(); // under mpirun rank 0 shows the progress
    lc.seed = c.seed;

    model *m = NULL;
    tokenizer *tok = NULL;
    chat_template ct = {0};
    bool have_ct = false;
    sft_data *sd = NULL;
    train_model *tm = NULL;
    train_lora *lt = NULL, *l0 = NULL;
    int32_t **prompts = NULL;
    int64_t *n_prompt = NULL, n = 0;
    char *options = NULL;
    log_ctx lg = {.out = out, .steps = c.steps, .quiet = quiet, .saved_step = -1, .kill_step = -1};
    const char *kill = getenv("ALPHASPIN_TEST_GFN_KILL_AFTER");
    if (kill) lg.kill_step = atoll(kill), lg.kill_saved = strstr(kill, ":saved") != NULL;
    int rc = AS_FAIL;
    if (cli_load_model(model_path, &m, &tok)) goto done;
    if (chat_template_init(&ct, m->file, tmpl)) goto done;
    have_ct = true;
    {   // END: the token that closes an assistant turn.
        const char *te = chat_turn_end(&ct);
        int32_t *ids;
        size_t nid;
        if (tokenizer_encode(tok, te, strlen(te), false, true, &ids, &nid)) goto done;
        c.end_id = nid ? ids[0] : -1;
        free(ids);
        if (c.end_id < 0) {
            as_error("%s: the chat template's end of turn is not a token", model_path ? model_path : cli_default_model());
            goto done;
        }
    }
    if (sft_data_load(&sd, data)) goto done;
    prompts = as_calloc((size_t)sd->n, sizeof *prompts);
    n_prompt = as_calloc((size_t)sd->n, sizeof *n_prompt);
    for (int64_t i = 0; i < sd->n && (!max_prompts || n < max_prompts); i++) {
        const sft_example *ex = &sd->ex[i];
        size_t k = ex->n_msgs;
        while (k > 0 && strcmp(ex->msgs[k - 1].role, "assistant")) k--;
        if (k > 0) k--; // the conversation before its last assistant turn
        if (k == 0) continue;
        char *text = chat_render(&ct, ex->msgs, k, true);
        if (!text) goto done;
        size_t nid;
        const int r = tokenizer_encode(tok, text, strlen(text), false, true, &prompts[n], &nid);
        free(text);
        if (r) goto done;
        if (nid == 0 || (long)nid > max_prompt_len) {
            free(prompts[n]), prompts[n] = NULL;
            continue;
        }
        n_prompt[n++] = (int64_t)nid;
    }
    if (n == 0) {
        as_error("%s: no prompt of at most %ld tokens", data, max_prompt_len);
        goto done;
    }
    if (adapter && train_lora_read_peft(&m->cfg, adapter, &lt)) goto done;
    if (base_adapter && train_lora_read_peft(&m->cfg, base_adapter, &l0)) goto done;
    if (train_model_from_model(&tm, m)) goto done;
    train_set_training(tm, false);
    if (init ? train_lora_load_peft(tm, init) : train_lora_attach(tm, &lc)) goto done;
    train_precision tp = TRAIN_PRECISION_F32; // the sampler's training products; the environment may override
    if (cli_train_precision_env(&tp)) goto done;
    train_set_precision(tm, tp);
    const char *base_model = model_path ? model_path : cli_default_model();
    options = run_options(base_model, m, (const int32_t *const *)prompts, n_prompt, n, lt, l0, tm->lora, tp);
    if (as_mkdir_p(out)) goto done;
    char state[4096];
    snprintf(state, sizeof state, "%s/train_state.safetensors", out);
    lg.state = state, lg.base_model = base_model, lg.tm = tm;
    // Under mpirun rank 0 decides whether there is a state to resume (every process reads it).
    const gfn_checkpoint ck = {.path = state, .every = save_every, .resume = dist_bcast_bool(access(state, F_OK) == 0), .options = options,
                               .started = on_started, .save = on_save, .saved = on_saved, .user = &lg};
    model_lora vt, v0;
    train_lora_view(lt, &vt), train_lora_view(l0, &v0);
    if (gfn_train(m, tm, lt ? &vt : NULL, l0 ? &v0 : NULL, &c, (const int32_t *const *)prompts, n_prompt, n, &ck, on_step, &lg)) goto done;
    if (!quiet) fprintf(stderr, "\n");
    // The last checkpoint wrote the sampler, unless there was none (no steps to run).
    if (lg.saved_step != c.steps && train_lora_save_peft(tm, out, base_model)) goto done;
    if (as_files_writer()) fprintf(stderr, "gfn-train: %d steps on %lld prompts; wrote %s\n", c.steps, (long long)n, out);
    rc = AS_OK;
done:
    if (lg.log) fclose(lg.log);
    free(options);
    for (int64_t i = 0; prompts && i < (sd ? sd->n : 0); i++) free(prompts[i]);
    free(prompts), free(n_prompt);
    if (tm) train_model_free(tm);
    train_lora_free(lt), train_lora_free(l0);
    if (sd) sft_data_free(sd);
    if (have_ct) chat_template_free(&ct);
    if (tok) tokenizer_free(tok);
    if (m) model_free(m);
    return rc == AS_OK ? 0 : cli_fail(cmd);
}
