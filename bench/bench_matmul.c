// Matmul throughput for the default model's shapes (SmolLM2-135M: d=576,
// kv=192, ffn=1536, vocab=49152), each precision and n_tokens 1/32/512.
//
//   bench_matmul [--isa scalar|avx2|avx512|amx|all] [--threads N] [--seconds S] [--decode-only]
//                [--tokens N,N,...] [--shape NAME] [--q8-only]
//
// GB/s counts the weight bytes read once per call (the decode bound: weights
// stream from memory, activations stay in cache); GFLOP/s counts 2*rows*cols
// per token.  The last lines add the per-token matmul time of one decode step
// of the whole model (30 layers x 7 projections + the output head).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/kernels_impl.h"
#include "tensor/quant.h"
#include "util/common.h"
#include "util/rng.h"

typedef struct bench_shape {
    const char *name;
    int64_t rows, cols;
    ggml_type type;
    int per_layer; // how many per layer (0: once per token)
} bench_shape;

static const bench_shape shapes[] = {
    {"attn_q/o", 576, 576, GGML_TYPE_Q4_1, 2},   {"attn_k/v", 192, 576, GGML_TYPE_Q4_1, 2},
    {"ffn_gate/up", 1536, 576, GGML_TYPE_Q4_1, 2}, {"ffn_down", 576, 1536, GGML_TYPE_Q4_1, 1},
    {"output", 49152, 576, GGML_TYPE_Q8_0, 0},
};
static int64_t token_counts[16] = {1, 32, 512};
static size_t n_token_counts = 3;
#define N_LAYERS 30

// One token through the whole model's projections, each layer with its own
// copy of the weights, so the 30 layers stream ~70 MB as real decoding does.
static as_matrix layers[N_LAYERS][7];

static double decode_step(float *out, const float *x, as_matrix (*ls)[7], const as_matrix *head, kernel_precision p, double seconds) {
    double best = 1e30, t_end = as_time() + seconds;
    for (int reps = 0; reps < 3 || as_time() < t_end; reps++) {
        double t0 = as_time();
        for (int l = 0; l < N_LAYERS; l++)
            for (int k = 0; k < 7; k++) kernel_matmul(out, ls[l][k].rows, x, 1, &ls[l][k], p);
        kernel_matmul(out, head->rows, x, 1, head, p);
        double dt = as_time() - t0;
        if (dt < best) best = dt;
    }
    return best;
}

static double bench_one(float *out, const float *x, int64_t nt, const as_matrix *m, kernel_precision p, double seconds) {
    kernel_matmul(out, m->rows, x, nt, m, p); // warm-up: scratch allocation, page faults
    double best = 1e30;
    double t_end = as_time() + seconds;
    int reps = 0;
    while (reps < 3 || as_time() < t_end) {
        double t0 = as_time();
        kernel_matmul(out, m->rows, x, nt, m, p);
        double dt = as_time() - t0;
        if (dt < best) best = dt;
        reps++;
    }
    return best;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: bench_matmul [--isa scalar|avx2|avx512|amx|all] [--threads N] [--seconds S] [--decode-only]\n                    [--tokens N,N,...] [--shape NAME] [--q8-only]\n");
            return 0;
        }
    const char *isa_arg = "auto";
    double seconds = 0.3;
    bool decode_only = false, q8_only = false;
    const char *shape_arg = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--isa") && i + 1 < argc) isa_arg = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) kernel_set_threads(atoi(argv[++i]));
        else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--decode-only")) decode_only = true;
        else if (!strcmp(argv[i], "--q8-only")) q8_only = true;
        else if (!strcmp(argv[i], "--shape") && i + 1 < argc) shape_arg = argv[++i];
        else if (!strcmp(argv[i], "--tokens") && i + 1 < argc) {
            n_token_counts = 0;
            for (char *p = argv[++i]; *p && n_token_counts < AS_ARRAY_LEN(token_counts); p += *p == ',') {
                char *end;
                long v = strtol(p, &end, 10);
                if (end == p || v < 1 || v > 512) {
                    fprintf(stderr, "bench_matmul: --tokens wants numbers 1..512 separated by commas\n");
                    return 2;
                }
                token_counts[n_token_counts++] = v;
                p = end;
            }
        } else {
            fprintf(stderr, "usage: %s [--isa scalar|avx2|avx512|amx|all] [--threads N] [--seconds S] [--decode-only] [--tokens N,N,...] [--shape NAME] [--q8-only]\n", argv[0]);
            return 2;
        }
    }
    kernel_force_isa(KERNEL_ISA_AUTO); // initialises the kernels (and OpenBLAS core selection)
    printf("cpu: %s; threads %d\n", cpu_describe(), kernel_get_threads());
    as_rng rng;
    as_rng_seed(&rng, 1);
    const int64_t max_tok = 512;
    as_matrix mats[AS_ARRAY_LEN(shapes)];
    memset(mats, 0, sizeof mats); // no packed copies (kernel_pack)
    int64_t max_rows = 0, max_cols = 0;
    for (size_t s = 0; s < AS_ARRAY_LEN(shapes); s++) {
        max_rows = AS_MAX(max_rows, shapes[s].rows);
        max_cols = AS_MAX(max_cols, shapes[s].cols);
    }
    float *row = malloc(sizeof(float) * max_cols);
    for (size_t s = 0; s < AS_ARRAY_LEN(shapes); s++) {
        as_matrix *m = &mats[s];
        m->type = shapes[s].type;
        m->rows = shapes[s].rows;
        m->cols = shapes[s].cols;
        m->row_bytes = quant_row_size(m->type, m->cols);
        uint8_t *data = as_aligned_alloc(m->row_bytes * m->rows);
        for (int64_t r = 0; r < m->rows; r++) {
            for (int64_t c = 0; c < m->cols; c++) row[c] = (float)(as_rng_uniform(&rng) - 0.5) * 0.1f;
            quant_quantize_row(m->type, row, data + r * m->row_bytes, m->cols);
        }
        m->data = data;
    }
    // Layer copies in model order: q, k, v, o, gate, up, down.
    const int layer_shape[7] = {0, 1, 1, 0, 2, 2, 3};
    double decode_bytes = (double)mats[4].row_bytes * mats[4].rows;
    for (int l = 0; l < N_LAYERS; l++)
        for (int k = 0; k < 7; k++) {
            const as_matrix *src = &mats[layer_shape[k]];
            size_t nb = src->row_bytes * src->rows;
            void *copy = as_aligned_alloc(nb);
            memcpy(copy, src->data, nb);
            layers[l][k] = *src;
            layers[l][k].data = copy;
            decode_bytes += (double)nb;
        }
    float *x = malloc(sizeof(float) * max_tok * max_cols);
    for (int64_t i = 0; i < max_tok * max_cols; i++) x[i] = (float)(as_rng_uniform(&rng) - 0.5);
    float *out = malloc(sizeof(float) * max_tok * max_rows);

    for (int isa = 0; isa < KERNEL_ISA_COUNT; isa++) {
        if (strcmp(isa_arg, "all") != 0) {
            kernel_isa want = KERNEL_ISA_AUTO;
            for (int k = 0; k < KERNEL_ISA_COUNT; k++)
                if (!strcmp(isa_arg, kernel_isa_name((kernel_isa)k))) want = (kernel_isa)k;
            if (kernel_force_isa(want) != AS_OK) {
                fprintf(stderr, "bench_matmul: ISA %s not available on this CPU\n", isa_arg);
                return 1;
            }
            if (isa > 0) break;
        } else if (kernel_force_isa((kernel_isa)isa) != AS_OK) {
            continue;
        }
        printf("\nisa %s\n%-12s %5s %5s %4s %5s %-3s %10s %8s %9s\n", kernel_isa_name(kernel_current_isa()), "shape", "rows", "cols",
               "type", "ntok", "pre", "ms/call", "GB/s", "GFLOP/s");
        double decode_ms[2] = {0, 0};
        for (size_t s = 0; s < (decode_only ? 0 : AS_ARRAY_LEN(shapes)); s++) {
            const as_matrix *m = &mats[s];
            const double bytes = (double)m->row_bytes * m->rows;
            if (shape_arg && strcmp(shape_arg, shapes[s].name) != 0) continue;
            for (size_t k = 0; k < n_token_counts; k++) {
                const int64_t nt = token_counts[k];
                for (int p = q8_only; p < 2; p++) {
                    double dt = bench_one(out, x, nt, m, (kernel_precision)p, seconds);
                    printf("%-12s %5lld %5lld %4s %5lld %-3s %10.4f %8.2f %9.2f\n", shapes[s].name, (long long)m->rows, (long long)m->cols,
                           m->type == GGML_TYPE_Q8_0 ? "Q8_0" : "Q4_1", (long long)nt, p ? "Q8" : "F32", dt * 1e3, bytes / dt * 1e-9,
                           2.0 * m->rows * m->cols * nt / dt * 1e-9);
                    if (nt == 1) decode_ms[p] += dt * 1e3 * (shapes[s].per_layer ? shapes[s].per_layer * N_LAYERS : 1);
                }
            }
        }
        if (!decode_only) printf("sum of the rows above for one decode step (weights cache-hot): F32 %.2f ms, Q8 %.2f ms\n", decode_ms[0], decode_ms[1]);
        for (int p = q8_only; p < 2 && !shape_arg; p++) { // --shape: that shape only
            double dt = decode_step(out, x, layers, &mats[AS_ARRAY_LEN(shapes) - 1], (kernel_precision)p, seconds);
            printf("decode step, distinct weights per layer (%.1f MB streamed): %s %.2f ms = %.0f tok/s (matmuls only), %.1f GB/s\n",
                   decode_bytes * 1e-6, p ? "Q8" : "F32", dt * 1e3, 1.0 / dt, decode_bytes / dt * 1e-9);
        }
    }
    for (size_t s = 0; s < AS_ARRAY_LEN(shapes); s++) free((void *)mats[s].data);
    for (int l = 0; l < N_LAYERS; l++)
        for (int k = 0; k < 7; k++) free((void *)layers[l][k].data);
    free(row);
    free(x);
    free(out);
    return 0;
}
