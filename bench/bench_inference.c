// Inference speed of alphaspin on a GGUF model or a Hugging Face folder,
// measured exactly as the peers (bench/peer_llama_cpp.py, bench/peer_torch.py,
// bench/gpu/peer_generate.py) measure it: random prompt ids, greedy decode
// through model_forward with a KV cache.  Prints one JSON line.
//   decode_b1_tok_s   : 1 sequence, prompt P, then 16 untimed and N timed new tokens
//                       (N = --b1-tokens, default 128)
//   decode_bB_tok_s   : B sequences decoded together, aggregate tokens/s
//   prefill_T_tok_s   : one forward over T prompt tokens, median of
//                       PREFILL_REPS (default 5) passes, as the peers
// With --generate N instead: N random prompts of --prompt-len tokens, each
// continued by exactly --new-tokens tokens sampled at --temperature (no top-k,
// top-p, min-p or penalty; no end token: there is no tokenizer) through
// generate_run (continuous batching, --batch sequences at once);
// gen_tok_s = N x new tokens / the whole run's wall time, prefill included.
// --device cpu|cuda[:N] puts the model on that backend (as_backend_open, as
// the command line's --device).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "generate/generate.h"
#include "generate/sampler.h"
#include "model/model.h"
#include "util/common.h"
#include "util/rng.h"

static double decode_run(model *m, kernel_precision prec, int B, int P, int N) {
    int V = m->cfg.n_vocab;
    // W untimed decoding steps first, as llama-bench times a repetition after
    // its warm-up run (and the thread tuner, tensor/tuner.h, has measured).
    enum { W = 16 };
    kv_cache *kv = kv_cache_init(&m->cfg, B, P + W + N + 1, prec);
    int T = B * P;
    int32_t *tok = as_malloc(T * sizeof *tok), *seq = as_malloc(T * sizeof *seq), *pos = as_malloc(T * sizeof *pos);
    bool *want = as_calloc(T, sizeof *want);
    float *logits = as_malloc((size_t)B * V * sizeof *logits);
    as_rng rng;
    as_rng_seed(&rng, 1234);
    for (int s = 0; s < B; s++)
        for (int p = 0; p < P; p++) {
            int i = s * P + p;
            tok[i] = 100 + (int32_t)as_rng_below(&rng, (uint64_t)V - 200);
            seq[i] = s, pos[i] = p, want[i] = p == P - 1;
        }
    model_batch b = {T, tok, seq, pos, want};
    if (model_forward(m, kv, &b, logits) != AS_OK) as_die("%s", as_last_error());
    double t0 = as_time();
    for (int step = 0; step < W + N; step++) {
        if (step == W) t0 = as_time();
        for (int s = 0; s < B; s++) {
            tok[s] = sampler_argmax(logits + (size_t)s * V, V);
            seq[s] = s, pos[s] = P + step;
        }
        model_batch d = {B, tok, seq, pos, NULL};
        if (model_forward(m, kv, &d, logits) != AS_OK) as_die("%s", as_last_error());
    }
    double dt = as_time() - t0;
    kv_cache_free(kv);
    free(tok), free(seq), free(pos), free(want), free(logits);
    return B * N / dt;
}

static double prefill_run(model *m, kernel_precision prec, int T) {
    int V = m->cfg.n_vocab;
    kv_cache *kv = kv_cache_init(&m->cfg, 1, T, prec);
    int32_t *tok = as_malloc(T * sizeof *tok), *seq = as_calloc(T, sizeof *seq), *pos = as_malloc(T * sizeof *pos);
    bool *want = as_calloc(T, sizeof *want);
    float *logits = as_malloc((size_t)V * sizeof *logits);
    as_rng rng;
    as_rng_seed(&rng, 99);
    for (int i = 0; i < T; i++) tok[i] = 100 + (int32_t)as_rng_below(&rng, (uint64_t)V - 200), pos[i] = i;
    want[T - 1] = true;
    model_batch b = {T, tok, seq, pos, want};
    double t0 = as_time();
    if (model_forward(m, kv, &b, logits) != AS_OK) as_die("%s", as_last_error());
    double dt = as_time() - t0;
    kv_cache_free(kv);
    free(tok), free(seq), free(pos), free(want), free(logits);
    return T / dt;
}

// --generate: n prompts x n_new sampled tokens at batch B; tokens/s over the whole run.
static double generate_bench(model *m, kernel_precision prec, int B, int n, int P, int n_new, float temp, uint64_t seed) {
    const int V = m->cfg.n_vocab;
    int32_t *ids = as_malloc((size_t)n * (size_t)P * sizeof *ids);
    generate_request *reqs = as_calloc((size_t)n, sizeof *reqs);
    generate_result *res = as_calloc((size_t)n, sizeof *res);
    as_rng rng;
    as_rng_seed(&rng, seed);
    sampler_params sp = sampler_params_default();
    sp.temperature = temp, sp.top_k = 0, sp.top_p = 1.0f, sp.min_p = 0.0f, sp.repeat_penalty = 1.0f, sp.repeat_last_n = 0;
    for (int i = 0; i < n; i++) {
        for (int p = 0; p < P; p++) ids[(size_t)i * P + p] = 100 + (int32_t)as_rng_below(&rng, (uint64_t)V - 200);
        reqs[i] = (generate_request){.prompt = ids + (size_t)i * P, .n_prompt = P, .sampling = sp, .max_new_tokens = n_new};
        reqs[i].sampling.seed = seed + (uint64_t)i;
    }
    generate_options o = generate_options_default();
    o.precision = prec, o.batch_size = B, o.n_ctx = P + n_new;
    o.max_batch_tokens = AS_MAX(512, 2 * B);
    const double t0 = as_time();
    if (generate_run(m, NULL, reqs, n, &o, res) != AS_OK) as_die("bench_inference: %s", as_last_error());
    const double dt = as_time() - t0;
    int64_t total = 0;
    for (int i = 0; i < n; i++) total += res[i].n_ids, generate_result_free(&res[i]);
    if (total != (int64_t)n * n_new) as_die("bench_inference: %lld tokens generated, expected %d x %d", (long long)total, n, n_new);
    free(ids), free(reqs), free(res);
    return (double)total / dt;
}

static void usage(FILE *f) {
    fprintf(f, "usage: bench_inference MODEL [f32|q8|bf16] [threads] [batch] [prefill] [options]\n"
               "  MODEL               a GGUF file or a Hugging Face folder (config.json + safetensors)\n"
               "  --device D          cpu | cuda | cuda:N (default cpu)\n"
               "  --b1-tokens N       timed batch-1 decoding steps (default 128)\n"
               "  --generate N        instead of the decode/prefill runs: N prompts, each continued by\n"
               "                      --new-tokens M (default 128) tokens sampled at --temperature T\n"
               "                      (default 1), --batch B at once (default: the positional batch, 32),\n"
               "                      prompts of --prompt-len P random ids (default 32), --seed S (1234)\n");
}

int main(int argc, char **argv) {
    const char *pos[5] = {0}, *device = NULL;
    int n_pos = 0, n_gen = 0, n_new = 128, P = 32, N = 128, batch_opt = 0;
    double temp = 1.0;
    uint64_t seed = 1234;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return usage(stdout), 0;
        if (strncmp(a, "--", 2)) {
            if (n_pos == 5) return usage(stderr), 2;
            pos[n_pos++] = a;
            continue;
        }
        if (!v) return fprintf(stderr, "bench_inference: %s needs a value\n", a), 2;
        if (!strcmp(a, "--device")) device = v;
        else if (!strcmp(a, "--generate")) n_gen = atoi(v);
        else if (!strcmp(a, "--new-tokens")) n_new = atoi(v);
        else if (!strcmp(a, "--prompt-len")) P = atoi(v);
        else if (!strcmp(a, "--temperature")) temp = atof(v);
        else if (!strcmp(a, "--batch")) batch_opt = atoi(v);
        else if (!strcmp(a, "--b1-tokens")) N = atoi(v);
        else if (!strcmp(a, "--seed")) seed = strtoull(v, NULL, 10);
        else return fprintf(stderr, "bench_inference: unknown option %s (see --help)\n", a), 2;
        i++;
    }
    if (n_pos < 1) return usage(stderr), 2;
    const char *prec = n_pos > 1 ? pos[1] : "q8";
    if (n_pos > 2) kernel_set_threads(atoi(pos[2]));
    int B = batch_opt > 0 ? batch_opt : n_pos > 3 ? atoi(pos[3]) : 32, T = n_pos > 4 ? atoi(pos[4]) : 512;
    if ((n_pos > 2 && atoi(pos[2]) < 1) || B < 1 || T < 1 || N < 1 || P < 1 || n_new < 1 || n_gen < 0 || !(temp >= 0)) {
        fprintf(stderr, "bench_inference: threads, batch, prefill, --b1-tokens, --prompt-len and --new-tokens must be positive integers\n");
        return 2;
    }
    kernel_precision kp;
    if (kernel_precision_parse(prec, &kp)) {
        fprintf(stderr, "bench_inference: precision must be f32, q8 or bf16, got '%s'\n", prec);
        return 2;
    }
    // The device first, so that a machine without one fails at once, in one line.
    const as_backend *be = NULL;
    if (device && !(be = as_backend_open(device))) {
        fprintf(stderr, "bench_inference: --device %s: %s\n", device, as_last_error());
        return 1;
    }
    model *m;
    if (model_load(&m, pos[0]) != AS_OK || (be && model_use_backend(m, be) != AS_OK)) {
        fprintf(stderr, "bench_inference: %s\n", as_last_error());
        return 1;
    }
    const char *dev_name = be ? device : "cpu";
    if (n_gen > 0) {
        const double t0 = as_time();
        const double r = generate_bench(m, kp, B, n_gen, P, n_new, (float)temp, seed);
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        printf("{\"engine\": \"alphaspin\", \"device\": \"%s\", \"precision\": \"%s\", \"prompts\": %d, \"prompt_len\": %d, \"new_tokens\": %d, "
               "\"temperature\": %g, \"batch\": %d, \"seconds\": %.3f, \"gen_tok_s\": %.2f, \"peak_rss_mb\": %.1f}\n",
               dev_name, prec, n_gen, P, n_new, temp, B, as_time() - t0, r, ru.ru_maxrss / 1024.0);
        model_free(m);
        return 0;
    }
    prefill_run(m, kp, 64); // warm-up: page the weights in
    // BENCH_ONLY=b1|bB|prefill runs one part (profiling; the others print 0).
    const char *only = getenv("BENCH_ONLY");
    const bool all = !only || !*only;
    double d1 = all || !strcmp(only, "b1") ? decode_run(m, kp, 1, P, N) : 0;
    double dB = all || !strcmp(only, "bB") ? decode_run(m, kp, B, P, N) : 0;
    double pf = 0;
    if (all || !strcmp(only, "prefill")) {
        const char *r = getenv("PREFILL_REPS");
        const int reps = r && atoi(r) > 0 ? AS_MIN(atoi(r), 99) : 5;
        double v[99];
        for (int i = 0; i < reps; i++) v[i] = prefill_run(m, kp, T);
        for (int i = 1; i < reps; i++) // insertion sort; median below
            for (int j = i; j > 0 && v[j] < v[j - 1]; j--) {
                const double t = v[j];
                v[j] = v[j - 1], v[j - 1] = t;
            }
        pf = reps % 2 ? v[reps / 2] : 0.5 * (v[reps / 2 - 1] + v[reps / 2]);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"peer\": \"alphaspin (%s, %d threads, %s)\", \"device\": \"%s\", \"decode_b1_tok_s\": %.2f, \"decode_b%d_tok_s\": %.2f, "
           "\"prefill_%d_tok_s\": %.2f, \"peak_rss_mb\": %.1f}\n",
           prec, kernel_get_threads(), cpu_describe(), dev_name, d1, B, dB, T, pf, ru.ru_maxrss / 1024.0);
    model_free(m);
    return 0;
}
