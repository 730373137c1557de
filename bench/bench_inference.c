// Inference speed of alphaspin on a GGUF model, measured exactly as the peers
// (bench/peer_llama_cpp.py, bench/peer_torch.py) measure it: random prompt ids,
// greedy decode through model_forward with a KV cache.  Prints one JSON line.
//   decode_b1_tok_s   : 1 sequence, prompt P, then 16 untimed and N timed new tokens
//   decode_bB_tok_s   : B sequences decoded together, aggregate tokens/s
//   prefill_T_tok_s   : one forward over T prompt tokens, median of
//                       PREFILL_REPS (default 5) passes, as the peers
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

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

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help")) {
        fprintf(stderr, "usage: bench_inference MODEL.gguf [f32|q8|bf16] [threads] [batch] [prefill]\n");
        return argc < 2 ? 2 : 0;
    }
    const char *prec = argc > 2 ? argv[2] : "q8";
    if (argc > 3) kernel_set_threads(atoi(argv[3]));
    int B = argc > 4 ? atoi(argv[4]) : 32, T = argc > 5 ? atoi(argv[5]) : 512, P = 32, N = 128;
    if ((argc > 3 && atoi(argv[3]) < 1) || B < 1 || T < 1) {
        fprintf(stderr, "bench_inference: threads, batch and prefill must be positive integers\n");
        return 2;
    }
    model *m;
    if (model_load(&m, argv[1]) != AS_OK) {
        fprintf(stderr, "bench_inference: %s\n", as_last_error());
        return 1;
    }
    kernel_precision kp;
    if (kernel_precision_parse(prec, &kp)) {
        fprintf(stderr, "bench_inference: precision must be f32, q8 or bf16, got '%s'\n", prec);
        return 2;
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
    printf("{\"peer\": \"alphaspin (%s, %d threads, %s)\", \"decode_b1_tok_s\": %.2f, \"decode_b%d_tok_s\": %.2f, "
           "\"prefill_%d_tok_s\": %.2f, \"peak_rss_mb\": %.1f}\n",
           prec, kernel_get_threads(), cpu_describe(), d1, B, dB, T, pf, ru.ru_maxrss / 1024.0);
    model_free(m);
    return 0;
}
