// Forward-pass throughput on a GGUF model (default: SmolLM2-135M-Instruct):
//   decode tok/s at batch 1 (one sequence, one token per call),
//   aggregate decode tok/s at batch B (B sequences, B tokens per call),
//   prefill tok/s of one P-token prompt (logits for the last row only),
// each with KERNEL_PRECISION_F32 and _Q8.  Greedy tokens are fed back so the
// work is the real work of generation.  Prints a table and one JSON line.
//
//   bench_forward [--model F.gguf] [--threads N] [--batch B] [--prompt P0] [--new N] [--prefill P]
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "util/common.h"

static int32_t argmax(const float *x, int64_t n) {
    int64_t b = 0;
    for (int64_t i = 1; i < n; i++) b = x[i] > x[b] ? i : b;
    return (int32_t)b;
}

// B sequences: prefill P0 pseudo-random tokens each (one call), then `n_new`
// decode steps of B tokens.  Returns aggregate decode tokens per second.
static double bench_decode(model *m, kernel_precision prec, int B, int P0, int n_new) {
    const int64_t V = m->cfg.n_vocab;
    kv_cache *kv = kv_cache_init(&m->cfg, B, P0 + n_new, prec);
    int32_t *tok = as_malloc(sizeof(int32_t) * (size_t)B * P0), *seq = as_malloc(sizeof(int32_t) * (size_t)B * P0),
            *pos = as_malloc(sizeof(int32_t) * (size_t)B * P0);
    bool *want = as_malloc((size_t)B * P0);
    float *logits = as_malloc(sizeof(float) * (size_t)B * V);
    uint32_t r = 12345;
    for (int s = 0, n = 0; s < B; s++)
        for (int i = 0; i < P0; i++, n++) {
            r = r * 1664525u + 1013904223u;
            tok[n] = 100 + (int32_t)(r >> 8) % (int32_t)(V - 200), seq[n] = s, pos[n] = i, want[n] = i == P0 - 1;
        }
    if (model_forward(m, kv, &(model_batch){.n_tokens = B * P0, .token = tok, .seq = seq, .pos = pos, .want_logits = want}, logits))
        as_die("%s", as_last_error());
    double t0 = as_time();
    for (int step = 0; step < n_new; step++) {
        for (int s = 0; s < B; s++) tok[s] = argmax(logits + (int64_t)s * V, V), seq[s] = s, pos[s] = P0 + step;
        if (model_forward(m, kv, &(model_batch){.n_tokens = B, .token = tok, .seq = seq, .pos = pos}, logits)) as_die("%s", as_last_error());
    }
    double dt = as_time() - t0;
    kv_cache_free(kv);
    free(tok), free(seq), free(pos), free(want), free(logits);
    return (double)B * n_new / dt;
}

static double bench_prefill(model *m, kernel_precision prec, int P, int reps) {
    const int64_t V = m->cfg.n_vocab;
    kv_cache *kv = kv_cache_init(&m->cfg, 1, P, prec);
    int32_t *tok = as_malloc(sizeof(int32_t) * (size_t)P), *seq = as_calloc((size_t)P, sizeof(int32_t)), *pos = as_malloc(sizeof(int32_t) * (size_t)P);
    bool *want = as_calloc((size_t)P, 1);
    float *logits = as_malloc(sizeof(float) * (size_t)V);
    for (int i = 0; i < P; i++) tok[i] = 100 + (i * 7919) % (int32_t)(V - 200), pos[i] = i;
    want[P - 1] = true;
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        kv_cache_clear_seq(kv, 0);
        double t0 = as_time();
        if (model_forward(m, kv, &(model_batch){.n_tokens = P, .token = tok, .seq = seq, .pos = pos, .want_logits = want}, logits))
            as_die("%s", as_last_error());
        best = AS_MIN(best, as_time() - t0);
    }
    kv_cache_free(kv);
    free(tok), free(seq), free(pos), free(want), free(logits);
    return P / best;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: bench_forward [--model M] [--threads N] [--batch 32] [--prompt 32] [--new 64] [--prefill 512]\n");
            return 0;
        }
    char def[4096];
    snprintf(def, sizeof def, "%s/.cache/alphaspin/models/SmolLM2-135M-Instruct.Q4_1.gguf", getenv("HOME") ? getenv("HOME") : ".");
    const char *path = def;
    int threads = 0, B = 32, P0 = 32, n_new = 64, P = 512;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--model")) path = argv[i + 1];
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--batch")) B = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--prompt")) P0 = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--new")) n_new = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--prefill")) P = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "bench_forward: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (B < 1 || P0 < 1 || n_new < 1 || P < 1) {
        fprintf(stderr, "bench_forward: sizes must be positive\n");
        return 2;
    }
    if (threads > 0) kernel_set_threads(threads);
    model *m;
    if (model_load(&m, path)) {
        fprintf(stderr, "bench_forward: %s\n", as_last_error());
        return 1;
    }
    printf("model %s\nthreads %d, cpu: %s\n", path, kernel_get_threads(), cpu_describe());
    printf("%-4s %14s %14s %10s %14s\n", "prec", "decode b=1", "decode b=B", "ratio", "prefill P");
    double res[2][3];
    for (int p = 0; p < 2; p++) {
        const kernel_precision prec = p ? KERNEL_PRECISION_Q8 : KERNEL_PRECISION_F32;
        bench_decode(m, prec, 1, P0, 4); // warm-up: page in the weights, size the scratch
        res[p][0] = bench_decode(m, prec, 1, P0, n_new);
        res[p][1] = bench_decode(m, prec, B, P0, n_new);
        res[p][2] = bench_prefill(m, prec, P, 2);
        printf("%-4s %10.1f t/s %10.1f t/s %9.1fx %10.1f t/s\n", p ? "Q8" : "F32", res[p][0], res[p][1], res[p][1] / res[p][0], res[p][2]);
    }
    printf("{\"threads\": %d, \"batch\": %d, \"prefill_tokens\": %d, \"f32\": {\"decode_b1\": %.2f, \"decode_bB\": %.2f, \"prefill\": %.2f}, "
           "\"q8\": {\"decode_b1\": %.2f, \"decode_bB\": %.2f, \"prefill\": %.2f}}\n",
           kernel_get_threads(), B, P, res[0][0], res[0][1], res[0][2], res[1][0], res[1][1], res[1][2]);
    model_free(m);
    return 0;
}
