// steal.h, the work ranges of the Q8 tile kernels: in an OpenMP region of nt
// threads every item is run exactly once, each thread's own items come in
// order from the front of its range (the kernels prefetch ahead of it), and a
// slow thread's last items go to the others.
#include "test_common.h"

#include <omp.h>

#include "tensor/steal.h"

// Runs n items on nt threads; thread 0 spins `slow` iterations per item.
// count[i]: times item i ran; stolen[t]: items thread t took from others.
// Returns the threads the region had.
static int run(int nt, int64_t n, long slow, int *count, int64_t *stolen, bool *in_order) {
    steal_ranges r;
    int got = 0;
    memset(count, 0, sizeof(int) * (size_t)(n > 0 ? n : 1));
    *in_order = true;
#pragma omp parallel num_threads(nt)
    {
        const int tid = omp_get_thread_num(), T = omp_get_num_threads();
        if (tid == 0) got = T;
        steal_init(&r, tid, T, n);
#pragma omp barrier
        int victim = tid;
        int64_t item, next_own = n * tid / T, mine = 0;
        while (steal_next(&r, tid, T, &victim, &item)) {
            if (victim == tid) {
                if (item != next_own) {
#pragma omp atomic write
                    *in_order = false;
                }
                next_own = item + 1;
            } else mine++;
#pragma omp atomic
            count[item]++;
            if (tid == 0)
                for (volatile long s = 0; s < slow; s++) {
                }
        }
        stolen[tid] = mine;
    }
    return got;
}

static void test_each_item_once(void **state) {
    (void)state;
    const int threads[] = {1, 2, 3, 4, 7};
    const int64_t sizes[] = {0, 1, 2, 5, 100, 1000};
    int *count = malloc(sizeof(int) * 1000);
    int64_t stolen[8];
    for (size_t a = 0; a < sizeof threads / sizeof *threads; a++)
        for (size_t b = 0; b < sizeof sizes / sizeof *sizes; b++) {
            bool in_order;
            run(threads[a], sizes[b], 0, count, stolen, &in_order);
            for (int64_t i = 0; i < sizes[b]; i++) assert_int_equal(count[i], 1);
            assert_true(in_order);
        }
    free(count);
}

// Thread 0 much slower than the others: they finish their own ranges and take
// items from the back of its range, and still every item runs once.
static void test_slow_thread_is_helped(void **state) {
    (void)state;
    const int64_t n = 400;
    int *count = malloc(sizeof(int) * (size_t)n);
    int64_t stolen[2] = {0, 0};
    bool in_order;
    if (run(2, n, 200000, count, stolen, &in_order) < 2) {
        free(count);
        skip(); // the OpenMP runtime gave one thread
    }
    for (int64_t i = 0; i < n; i++) assert_int_equal(count[i], 1);
    assert_true(in_order);
    assert_int_equal(stolen[0], 0);
    assert_true(stolen[1] > 0);
    free(count);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_item_once),
        cmocka_unit_test(test_slow_thread_is_helped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
