// The CPU backend's optimizer arithmetic (train_graph.h): the gradient norm's
// sum of squares and the element-wise updates of AdamW, RMSprop and SGD
// (torch.optim's rules).  train/optim.c keeps the schedules, the clipping's
// bookkeeping and the state.
#include "tensor/train_graph.h"

#include <math.h>

#include "util/common.h"

// Blocks of a fixed size, each summed serially, then the block sums in order:
// the same bits for any thread count.
#define NORM_BLOCK 65536

double train_sum_squares(const float *g, size_t n, int nth) {
    const size_t nb = (n + NORM_BLOCK - 1) / NORM_BLOCK;
    double *part = as_calloc(AS_MAX(nb, (size_t)1), sizeof(double));
#pragma omp parallel for num_threads(nth) if (nb > 1)
    for (size_t b = 0; b < nb; b++) {
        const size_t i1 = AS_MIN(n, (b + 1) * NORM_BLOCK);
        double s = 0.0;
        for (size_t i = b * NORM_BLOCK; i < i1; i++) s += (double)g[i] * g[i];
        part[b] = s;
    }
    double ss = 0.0;
    for (size_t b = 0; b < nb; b++) ss += part[b];
    free(part);
    return ss;
}

void train_scale(float *x, size_t n, float c, int nth) {
#pragma omp parallel for num_threads(nth) if (n > 65536)
    for (size_t i = 0; i < n; i++) x[i] *= c;
}

void train_adamw_update(float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1, float beta2, float eps, float wd,
                        int64_t t, int nth) {
    const float b1 = beta1, b2 = beta2;
    const float bc1 = (float)(1.0 - pow((double)b1, (double)t)), bc2s = (float)sqrt(1.0 - pow((double)b2, (double)t));
    const float step_size = lr / bc1;
#pragma omp parallel for num_threads(nth) if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        float pi = p[i] * (1.0f - lr * wd);
        m[i] = b1 * m[i] + (1.0f - b1) * g[i];
        v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
        p[i] = pi - step_size * m[i] / (sqrtf(v[i]) / bc2s + eps);
    }
}

void train_rmsprop_update(float *p, const float *g, float *v, size_t n, float lr, float alpha, float eps, float wd, int nth) {
    const float a = alpha;
#pragma omp parallel for num_threads(nth) if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        const float gi = g[i] + wd * p[i];
        v[i] = a * v[i] + (1.0f - a) * gi * gi;
        p[i] -= lr * gi / (sqrtf(v[i]) + eps);
    }
}

void train_sgd_update(float *p, const float *g, float *m, size_t n, float lr, float momentum, float wd, int64_t t, int nth) {
    const float mu = momentum;
#pragma omp parallel for num_threads(nth) if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        float gi = g[i] + wd * p[i];
        if (m) {
            m[i] = t == 1 ? gi : mu * m[i] + gi;
            gi = m[i];
        }
        p[i] -= lr * gi;
    }
}
