// The preference losses: every gradient against central finite differences,
// the special cases (alpha = 0 is SPIN, alpha = 1 is DPO against the base,
// label smoothing 0 is the plain sigmoid loss), and the arithmetic reference
// against its definition.
#include "test_common.h"

#include <math.h>

#include "spin/loss.h"
#include "util/rng.h"

static double loss_at(const spin_loss_config *c, spin_pair_logps p) {
    spin_pair_loss r;
    spin_loss_pair(c, &p, &r);
    return r.loss;
}

// Central differences of the loss in pol_w and pol_l vs the analytic gradient.
static void check_fd(const spin_loss_config *c, spin_pair_logps p) {
    spin_pair_loss r;
    spin_loss_pair(c, &p, &r);
    const double h = 1e-5;
    spin_pair_logps a = p, b = p;
    a.pol_w += h; b.pol_w -= h;
    double fw = (loss_at(c, a) - loss_at(c, b)) / (2 * h);
    a = p; b = p;
    a.pol_l += h; b.pol_l -= h;
    double fl = (loss_at(c, a) - loss_at(c, b)) / (2 * h);
    double tol = 1e-6 * (1 + fabs(fw) + fabs(fl));
    if (fabs(fw - r.dpol_w) > tol || fabs(fl - r.dpol_l) > tol)
        fail_msg("%s: fd (%.9g, %.9g) vs analytic (%.9g, %.9g) at pol (%g, %g) ref (%g, %g)", spin_loss_kind_name(c->kind), fw,
                 fl, r.dpol_w, r.dpol_l, p.pol_w, p.pol_l, p.ref_w, p.ref_l);
}

// Random pairs away from the kinks of hinge and slic (where no derivative exists).
static void test_gradients_fd(void **state) {
    (void)state;
    as_rng rng;
    as_rng_seed(&rng, 7);
    int checked[4] = {0};
    for (int kind = 0; kind < 4; kind++) {
        for (int trial = 0; trial < 200; trial++) {
            spin_loss_config c;
            spin_loss_config_default(&c);
            c.kind = (spin_loss_kind)kind;
            c.beta = 0.05 + as_rng_uniform(&rng);
            c.label_smoothing = trial % 2 ? 0.3 * as_rng_uniform(&rng) : 0;
            c.delta = 2 * as_rng_uniform(&rng);
            c.lambda = as_rng_uniform(&rng);
            spin_pair_logps p = {
                .pol_w = -40 * as_rng_uniform(&rng), .pol_l = -40 * as_rng_uniform(&rng),
                .ref_w = -40 * as_rng_uniform(&rng), .ref_l = -40 * as_rng_uniform(&rng),
                .n_w = 1 + (int32_t)as_rng_below(&rng, 30), .n_l = 1 + (int32_t)as_rng_below(&rng, 30),
            };
            double hh = (p.pol_w - p.ref_w) - (p.pol_l - p.ref_l);
            if (c.kind == SPIN_LOSS_HINGE && fabs(1 - c.beta * hh) < 1e-3) continue;
            if (c.kind == SPIN_LOSS_SLIC && fabs(c.delta - p.pol_w + p.pol_l) < 1e-3) continue;
            check_fd(&c, p);
            checked[kind]++;
        }
    }
    for (int k = 0; k < 4; k++) assert_true(checked[k] > 150);
    // Both sides of each kink are reached: the hinge and slic gradients are not always zero.
    spin_loss_config c;
    spin_loss_config_default(&c);
    c.kind = SPIN_LOSS_HINGE; c.beta = 0.5;
    spin_pair_loss r;
    spin_pair_logps in = {.pol_w = -10, .pol_l = -10, .ref_w = -10, .ref_l = -10, .n_w = 1, .n_l = 1};
    spin_loss_pair(&c, &in, &r);
    assert_true(r.loss == 1.0 && r.dpol_w == -0.5 && r.dpol_l == 0.5);
    in.pol_w = 0; // h = 10, beta h = 5 > 1
    spin_loss_pair(&c, &in, &r);
    assert_true(r.loss == 0.0 && r.dpol_w == 0.0);
}

static double spin_sigmoid_loss(double beta, double pw, double pl, double rw, double rl) {
    double z = beta * ((pw - rw) - (pl - rl));
    return log1p(exp(-z)); // -log sigmoid(z), the SPIN/DPO loss written directly
}

static void test_alpha_limits(void **state) {
    (void)state;
    as_rng rng;
    as_rng_seed(&rng, 11);
    for (int mode = 0; mode < 2; mode++) {
        for (int trial = 0; trial < 50; trial++) {
            double pw = -30 * as_rng_uniform(&rng), pl = -30 * as_rng_uniform(&rng);
            double tw = -30 * as_rng_uniform(&rng), tl = -30 * as_rng_uniform(&rng); // log pi_t
            double bw = -30 * as_rng_uniform(&rng), bl = -30 * as_rng_uniform(&rng); // log pi_0
            spin_loss_config c;
            spin_loss_config_default(&c);
            c.ref = (spin_ref_mode)mode;
            c.beta = 0.1 + as_rng_uniform(&rng);
            // alpha = 0: the SPIN loss with pi_t as reference (pi_0 not even needed).
            c.alpha = 0;
            spin_pair_logps p = {pw, pl, spin_ref_logp(c.ref, 0, tw, NAN), spin_ref_logp(c.ref, 0, tl, NAN), 1, 1};
            assert_true(fabs(loss_at(&c, p) - spin_sigmoid_loss(c.beta, pw, pl, tw, tl)) < 1e-12);
            // alpha = 1: DPO against the base (pi_t not needed).
            c.alpha = 1;
            p.ref_w = spin_ref_logp(c.ref, 1, NAN, bw);
            p.ref_l = spin_ref_logp(c.ref, 1, NAN, bl);
            assert_true(fabs(loss_at(&c, p) - spin_sigmoid_loss(c.beta, pw, pl, bw, bl)) < 1e-12);
        }
    }
    assert_false(spin_ref_needs_0(0));
    assert_true(spin_ref_needs_t(0));
    assert_true(spin_ref_needs_0(1));
    assert_false(spin_ref_needs_t(1));
    assert_true(spin_ref_needs_0(0.1) && spin_ref_needs_t(0.1));
}

static void test_label_smoothing(void **state) {
    (void)state;
    spin_loss_config c;
    spin_loss_config_default(&c);
    c.beta = 0.3;
    for (double hh = -20; hh <= 20; hh += 0.7) {
        spin_pair_logps p = {.pol_w = hh - 5, .pol_l = -5, .ref_w = 0, .ref_l = 0, .n_w = 1, .n_l = 1};
        c.label_smoothing = 0;
        double plain = spin_sigmoid_loss(c.beta, p.pol_w, p.pol_l, 0, 0);
        assert_true(fabs(loss_at(&c, p) - plain) < 1e-12);
        // eps > 0: the conservative-DPO mixture of the two directions.
        c.label_smoothing = 0.2;
        double z = c.beta * hh;
        double want = 0.8 * log1p(exp(-z)) + 0.2 * log1p(exp(z));
        assert_true(fabs(loss_at(&c, p) - want) < 1e-12);
    }
    // Stable far out: no inf/nan at |beta h| = 1000.
    c.label_smoothing = 0;
    spin_pair_logps far = {.pol_w = -10000, .pol_l = 0, .ref_w = 0, .ref_l = 0, .n_w = 1, .n_l = 1};
    spin_pair_loss r;
    c.beta = 0.1;
    spin_loss_pair(&c, &far, &r);
    assert_true(isfinite(r.loss) && fabs(r.loss - 1000) < 1e-9 && fabs(r.dpol_w + 0.1) < 1e-12);
}

static void test_ipo_slic_values(void **state) {
    (void)state;
    spin_loss_config c;
    spin_loss_config_default(&c);
    c.kind = SPIN_LOSS_IPO;
    c.beta = 0.5;
    // Per-token log-ratios: winner (-10 - -12)/4 = 0.5, loser (-20 - -18)/5 = -0.4; h = 0.9; (0.9 - 1)^2.
    spin_pair_logps p = {.pol_w = -10, .pol_l = -20, .ref_w = -12, .ref_l = -18, .n_w = 4, .n_l = 5};
    spin_pair_loss r;
    spin_loss_pair(&c, &p, &r);
    assert_true(fabs(r.loss - 0.01) < 1e-12);
    assert_true(fabs(r.reward_w - 0.25) < 1e-12 && fabs(r.reward_l + 0.2) < 1e-12);
    c.kind = SPIN_LOSS_SLIC;
    c.delta = 1;
    c.lambda = 0.1;
    // max(0, 1 + 10 - 20) = 0, minus 0.1 * -10.
    spin_loss_pair(&c, &p, &r);
    assert_true(fabs(r.loss - 1.0) < 1e-12 && r.dpol_l == 0 && fabs(r.dpol_w + 0.1) < 1e-12);
}

static void test_arithmetic_reference(void **state) {
    (void)state;
    as_rng rng;
    as_rng_seed(&rng, 3);
    for (int trial = 0; trial < 200; trial++) {
        double a = as_rng_uniform(&rng);
        double lt = -20 * as_rng_uniform(&rng), l0 = -20 * as_rng_uniform(&rng);
        double got = spin_ref_logp(SPIN_REF_ARITHMETIC, a, lt, l0);
        double want = log((1 - a) * exp(lt) + a * exp(l0)); // fine at these magnitudes
        assert_true(fabs(got - want) < 1e-10);
        // The arithmetic mean bounds the geometric one (AM-GM).
        assert_true(got >= spin_ref_logp(SPIN_REF_GEOMETRIC, a, lt, l0) - 1e-12);
        // Shift-equivariant, so sequence log-probs of -1000 stay finite and exact.
        double far = spin_ref_logp(SPIN_REF_ARITHMETIC, a, lt - 1000, l0 - 1000);
        assert_true(isfinite(far) && fabs(far - (got - 1000)) < 1e-9);
    }
    assert_true(spin_ref_logp(SPIN_REF_GEOMETRIC, 0.25, -8, -4) == -7.0);
}

static void test_batch(void **state) {
    (void)state;
    spin_loss_config c;
    spin_loss_config_default(&c);
    c.beta = 0.2;
    spin_pair_logps p[3] = {
        {-10, -20, -11, -19, 3, 4}, {-30, -5, -29, -6, 5, 2}, {-8, -9, -8, -9, 1, 1},
    };
    float gw[3], gl[3];
    spin_loss_metrics m;
    double L = spin_loss_batch(&c, p, 3, 0.5, gw, gl, &m);
    double sum = 0;
    for (int i = 0; i < 3; i++) {
        spin_pair_loss r;
        spin_loss_pair(&c, &p[i], &r);
        sum += r.loss;
        assert_true(fabs(gw[i] - 0.5 * r.dpol_w / 3) < 1e-7 && fabs(gl[i] - 0.5 * r.dpol_l / 3) < 1e-7);
    }
    assert_true(fabs(L - sum / 3) < 1e-12 && m.n == 3);
    // Margins: pair 0: 0.2*(1) - 0.2*(-1) = 0.4; pair 1: 0.2*(-1) - 0.2*(1) = -0.4; pair 2: 0.
    assert_true(fabs(m.rewards_margins - 0.0) < 1e-12);
    assert_true(fabs(m.rewards_accuracies - 1.0 / 3) < 1e-12);
    assert_true(fabs(m.rewards_real - 0.2 * (1 - 1 + 0) / 3) < 1e-12);
    assert_true(fabs(m.logps_real - (-48.0 / 3)) < 1e-12 && fabs(m.logps_generated - (-34.0 / 3)) < 1e-12);
}

static void test_names(void **state) {
    (void)state;
    spin_loss_kind k;
    spin_ref_mode r;
    assert_int_equal(spin_loss_kind_parse("ipo", &k), 0);
    assert_int_equal(k, SPIN_LOSS_IPO);
    assert_int_equal(spin_loss_kind_parse("dpo", &k), -1);
    assert_int_equal(spin_ref_mode_parse("arithmetic", &r), 0);
    assert_int_equal(r, SPIN_REF_ARITHMETIC);
    assert_string_equal(spin_loss_kind_name(SPIN_LOSS_SLIC), "slic");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gradients_fd),  cmocka_unit_test(test_alpha_limits),
        cmocka_unit_test(test_label_smoothing), cmocka_unit_test(test_ipo_slic_values),
        cmocka_unit_test(test_arithmetic_reference), cmocka_unit_test(test_batch), cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
