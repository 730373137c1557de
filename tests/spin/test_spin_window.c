// The history window and the documented counts of pairs per iterate
// (window.h): written out by hand for small cases, then the invariants over a grid.
#include "test_common.h"

#include "spin/window.h"

static void test_window_first(void **state) {
    (void)state;
    assert_int_equal(spin_window_first(0, 1), 0);
    assert_int_equal(spin_window_first(3, 1), 3);            // SPIN: only pi_t
    assert_int_equal(spin_window_first(3, 2), 2);            // pi_{t-1}, pi_t
    assert_int_equal(spin_window_first(1, 5), 0);            // window longer than history
    assert_int_equal(spin_window_first(7, SPIN_TAU_INF), 0); // fictitious play: all from pi_0
}

static void test_counts_by_hand(void **state) {
    (void)state;
    int64_t c[8];
    // t = 2, tau = inf, N = 10: iterates 0, 1, 2 get 3, 3, 4 (remainder to the newest).
    assert_int_equal(spin_window_counts(SPIN_MIX_SAMPLE, 2, SPIN_TAU_INF, 10, c), 10);
    assert_int_equal(c[0], 3); assert_int_equal(c[1], 3); assert_int_equal(c[2], 4);
    // N = 11: 3, 4, 4.
    spin_window_counts(SPIN_MIX_SAMPLE, 2, SPIN_TAU_INF, 11, c);
    assert_int_equal(c[0], 3); assert_int_equal(c[1], 4); assert_int_equal(c[2], 4);
    // tau = 2 at t = 3: iterates 2, 3; N = 7: 3, 4.
    assert_int_equal(spin_window_counts(SPIN_MIX_SAMPLE, 3, 2, 7, c), 7);
    assert_int_equal(c[0], 3); assert_int_equal(c[1], 4);
    // concat: N from each, 2N with tau = 2.
    assert_int_equal(spin_window_counts(SPIN_MIX_CONCAT, 3, 2, 7, c), 14);
    assert_int_equal(c[0], 7); assert_int_equal(c[1], 7);
    // concat, t = 0: only pi_0.
    assert_int_equal(spin_window_counts(SPIN_MIX_CONCAT, 0, 2, 5, c), 5);
    // Fresh generations: concat only the current iterate.
    assert_int_equal(spin_window_fresh(SPIN_MIX_CONCAT, 3, 2, 7, 3), 7);
    assert_int_equal(spin_window_fresh(SPIN_MIX_CONCAT, 3, 2, 7, 2), 0);
    assert_int_equal(spin_window_fresh(SPIN_MIX_SAMPLE, 3, 2, 7, 2), 3);
    assert_int_equal(spin_window_fresh(SPIN_MIX_SAMPLE, 3, 2, 7, 1), 0); // outside the window
    // N smaller than the window: the newest iterates get one each, the oldest none.
    spin_window_counts(SPIN_MIX_SAMPLE, 4, SPIN_TAU_INF, 2, c);
    assert_int_equal(c[0] + c[1] + c[2], 0); assert_int_equal(c[3], 1); assert_int_equal(c[4], 1);
}

static void test_counts_grid(void **state) {
    (void)state;
    int64_t c[64];
    for (int32_t t = 0; t < 12; t++)
        for (int32_t tau = 0; tau <= 5; tau++)
            for (int64_t n = 1; n < 40; n++) {
                const int32_t first = spin_window_first(t, tau), size = t - first + 1;
                assert_int_equal(size, tau == SPIN_TAU_INF ? t + 1 : (tau < t + 1 ? tau : t + 1));
                int64_t tot = spin_window_counts(SPIN_MIX_SAMPLE, t, tau, n, c), sum = 0;
                assert_int_equal(tot, n);
                for (int32_t i = 0; i < size; i++) {
                    sum += c[i];
                    // Equal shares up to one, never decreasing toward the newest iterate.
                    assert_true(c[i] == n / size || c[i] == n / size + 1);
                    if (i > 0) assert_true(c[i] >= c[i - 1]);
                    assert_int_equal(spin_window_fresh(SPIN_MIX_SAMPLE, t, tau, n, first + i), c[i]);
                }
                assert_int_equal(sum, n);
                assert_int_equal(spin_window_counts(SPIN_MIX_CONCAT, t, tau, n, c), (int64_t)size * n);
            }
}

static void test_names(void **state) {
    (void)state;
    spin_mixing m;
    assert_int_equal(spin_mixing_parse("concat", &m), 0);
    assert_int_equal(m, SPIN_MIX_CONCAT);
    assert_int_equal(spin_mixing_parse("mix", &m), -1);
    assert_string_equal(spin_mixing_name(SPIN_MIX_SAMPLE), "sample");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_window_first), cmocka_unit_test(test_counts_by_hand),
        cmocka_unit_test(test_counts_grid), cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
