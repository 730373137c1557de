// Helpers shared by the training tests: random fills and finite differences.
#ifndef AS_TRAIN_TEST_UTIL_H
#define AS_TRAIN_TEST_UTIL_H

#include "test_common.h"

#include <math.h>

#include "util/rng.h"

// Standard normal (Box-Muller) times sd.
static inline void fill_normal(float *x, int64_t n, float sd, as_rng *r) {
    for (int64_t i = 0; i < n; i++) {
        const double u1 = as_rng_uniform(r) + 1e-300, u2 = as_rng_uniform(r);
        x[i] = (float)(sd * sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
    }
}

// The loss of a finite-difference check, evaluated at the current inputs.
typedef double (*fd_loss_fn)(void *ctx);

// Fourth-order central difference of loss with respect to x[i]:
//   f'(x) = [f(x-2h) - 8 f(x-h) + 8 f(x+h) - f(x+2h)] / (12 h) + O(h^4),
// with h relative to |x[i]|.  Values are set in float (what the op sees); h is
// the float difference actually applied, so rounding of x + h does not bias it.
static inline double fd_derivative(float *x, int64_t i, fd_loss_fn loss, void *ctx, double h_rel) {
    const float x0 = x[i];
    const float h = (float)(h_rel * fmax(1.0, fabs((double)x0)));
    double f[4];
    const float steps[4] = {-2.0f, -1.0f, 1.0f, 2.0f};
    double hh[4];
    for (int s = 0; s < 4; s++) {
        x[i] = x0 + steps[s] * h;
        hh[s] = (double)x[i] - (double)x0;
        f[s] = loss(ctx);
    }
    x[i] = x0;
    // Nominal h from the actually applied +-h steps (symmetric up to rounding).
    const double hn = (hh[2] - hh[1]) / 2.0;
    return (f[0] - 8.0 * f[1] + 8.0 * f[2] - f[3]) / (12.0 * hn);
}

// Checks analytic gradient g of x (n elements; every element when n is small,
// else `max_checks` spread over the tensor) against finite differences.
// Passes when max |fd - g| <= tol * max(max |g|, floor).  Returns the ratio.
static inline double fd_check(const char *what, float *x, const float *g, int64_t n, fd_loss_fn loss, void *ctx, double h_rel,
                              double tol, double floor_, int64_t max_checks) {
    double gmax = 0.0;
    for (int64_t i = 0; i < n; i++) gmax = fmax(gmax, fabs((double)g[i]));
    const double scale = fmax(gmax, floor_);
    const int64_t stride = n <= max_checks ? 1 : (n + max_checks - 1) / max_checks;
    double worst = 0.0;
    int64_t worst_i = 0;
    double worst_fd = 0.0;
    for (int64_t i = 0; i < n; i += stride) {
        const double fd = fd_derivative(x, i, loss, ctx, h_rel);
        const double e = fabs(fd - (double)g[i]) / scale;
        if (e > worst) worst = e, worst_i = i, worst_fd = fd;
    }
    if (!(worst <= tol))
        fail_msg("%s: gradient mismatch at element %lld: analytic %.8g, finite difference %.8g (error %.3g of max |g| %.3g > %.1e)", what,
                 (long long)worst_i, (double)g[worst_i], worst_fd, worst, gmax, tol);
    return worst;
}

#endif
