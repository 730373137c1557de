// The training products alone (fp32 kernel_sgemm vs kernel_gemm_bf16) on the
// default model's layer shapes at 2048 tokens: forward x W^T, dX = dY W,
// dW = dY^T X.  Prints GFLOP/s (best of --reps) per shape and precision.
//   bench_train_gemm [--threads 2] [--tokens 2048] [--reps 3]
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/kernels.h"
#include "tensor/gemm.h"
#include "train/ops.h"
#include "util/common.h"

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: bench_train_gemm [--threads 2] [--tokens 2048] [--reps 3]\nThe training products alone (fp32 sgemm vs bf16) on the default model's shapes, GFLOP/s.\n");
            return 0;
        }
    int nth = 2, reps = 3;
    int64_t T = 2048;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--threads")) nth = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--tokens")) T = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
    }
    kernel_init();
    const int64_t shapes[][2] = {{576, 576}, {1536, 576}, {576, 1536}, {49152, 576}}; // (out, in)
    printf("threads %d, tokens %lld, %s, bf16 on %s\n", nth, (long long)T, cpu_describe(), kernel_gemm_bf16_amx() ? "AMX" : kernel_gemm_bf16_dpbf() ? "dpbf16" : "fallback");
    for (size_t s = 0; s < AS_ARRAY_LEN(shapes); s++) {
        const int64_t O = shapes[s][0], I = shapes[s][1], Tt = O > 10000 ? 64 : T;
        float *X = as_aligned_alloc(sizeof(float) * (size_t)(Tt * I)), *W = as_aligned_alloc(sizeof(float) * (size_t)(O * I));
        float *Y = as_aligned_alloc(sizeof(float) * (size_t)(Tt * O)), *dW = as_aligned_alloc(sizeof(float) * (size_t)(O * I));
        for (int64_t i = 0; i < Tt * I; i++) X[i] = (float)((i * 7919) % 1000) * 1e-3f;
        for (int64_t i = 0; i < O * I; i++) W[i] = (float)((i * 104729) % 1000) * 1e-3f - 0.5f;
        for (int64_t i = 0; i < Tt * O; i++) Y[i] = (float)((i * 31) % 1000) * 1e-3f;
        const double flops = 2.0 * (double)Tt * (double)O * (double)I;
        for (int bf = 0; bf < 2; bf++) {
            double best[3] = {1e30, 1e30, 1e30};
            for (int r = 0; r < reps; r++)
                for (int op = 0; op < 3; op++) {
                    const double t0 = as_time();
                    const bool ta = op == 2, tb = op == 0;
                    const int64_t M = op == 0 ? Tt : op == 1 ? Tt : O, N = op == 0 ? O : I, K = op == 0 ? I : op == 1 ? O : Tt;
                    const float *A = op == 0 ? X : Y, *B = op == 0 ? W : op == 1 ? W : X;
                    const int64_t lda = op == 0 ? I : O, ldb = op == 0 ? I : I;
                    float *C = op == 0 ? Y : op == 1 ? X : dW;
                    if (bf) kernel_gemm_bf16(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, 0.0f, C, N, nth);
                    else kernel_sgemm(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, 0.0f, C, N, nth);
                    best[op] = AS_MIN(best[op], as_time() - t0);
                }
            printf("%5lld x %5lld x %4lld %s: fwd %6.1f  dX %6.1f  dW %6.1f GFLOP/s\n", (long long)O, (long long)I, (long long)Tt, bf ? "bf16" : "f32 ",
                   flops / best[0] * 1e-9, flops / best[1] * 1e-9, flops / best[2] * 1e-9);
        }
        free(X), free(W), free(Y), free(dW);
    }
    return 0;
}
