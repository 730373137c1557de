// The thread tuner's decisions (tensor/tuner.h), on steps whose time is set by
// the test: a step's duration, given to tuner_record, depends on the thread
// count the tuner gave it (kernel_get_threads() inside the step), so which arm
// is faster is known, and the tuner must find it, follow a change, leave
// prefill-sized steps alone, restore the caller's cap, and do nothing when
// turned off.  No clock is read, so the machine's load cannot change the
// outcome.
// (That the thread count does not change any result is test_isa_conformance's
// test_model_threads.)
#include "test_common.h"

#include "tensor/kernels.h"
#include "tensor/tuner.h"

// n steps of n_tokens tokens; a step takes ms_full (all threads) or ms_half;
// returns how many of the last `tail` steps ran on half the threads.
static int run_steps(int n, int64_t n_tokens, double ms_full, double ms_half, int tail) {
    int half = 0;
    for (int i = 0; i < n; i++) {
        tuner_step t;
        tuner_begin(&t, n_tokens);
        const int th = kernel_get_threads();
        assert_true(th == 1 || th == 2);
        tuner_record(&t, 1e-3 * (th == 2 ? ms_full : ms_half));
        assert_int_equal(kernel_get_threads(), 2); // the cap is restored
        if (i >= n - tail) half += th == 1;
    }
    return half;
}

static void test_finds_faster_arm(void **state) {
    (void)state;
    kernel_set_threads(2);
    tuner_reset(NULL);
    // All threads twice as fast: explorations only (at most one step in 32).
    int half = run_steps(200, 1, 1.0, 2.0, 150);
    assert_in_range(half, 0, 8);
    // Another size class keeps its own measurements: half twice as fast there.
    half = run_steps(200, 8, 2.0, 1.0, 150);
    assert_in_range(half, 140, 150);
    // The load changes under class 1: half becomes 3x faster; found within ~40 steps.
    half = run_steps(120, 1, 3.0, 1.0, 80);
    assert_in_range(half, 75, 80);
    // ... and changes back: all threads 3x faster again; found at the next
    // exploration (at most 128 steps on: the last one found all threads 3x slower).
    half = run_steps(300, 1, 1.0, 3.0, 100);
    assert_in_range(half, 0, 5);
    tuner_reset(NULL);
    kernel_set_threads(0);
}

static void test_leaves_alone(void **state) {
    (void)state;
    kernel_set_threads(2);
    tuner_reset(NULL);
    // Prefill-sized steps always run on all threads.
    assert_int_equal(run_steps(60, TUNER_MAX_TOKENS + 1, 2.0, 1.0, 60), 0);
    // Turned off: all threads.
    tuner_reset("0");
    assert_int_equal(run_steps(60, 1, 2.0, 1.0, 60), 0);
    // Alternate: every other step on half.
    tuner_reset("alternate");
    assert_int_equal(run_steps(40, 1, 1.0, 1.0, 40), 20);
    // A caller's own cap of 1 thread: nothing to tune (max < 2), the cap stays.
    tuner_reset(NULL);
    const int old = kernel_cap_threads(1);
    for (int i = 0; i < 40; i++) {
        tuner_step t;
        tuner_begin(&t, 1);
        assert_int_equal(kernel_get_threads(), 1);
        tuner_end(&t);
        assert_int_equal(kernel_get_threads(), 1);
    }
    kernel_cap_threads(old);
    tuner_reset(NULL);
    kernel_set_threads(0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_finds_faster_arm),
        cmocka_unit_test(test_leaves_alone),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
