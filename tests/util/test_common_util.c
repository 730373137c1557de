#include "test_common.h"
#include "util/common.h"
#include "util/rng.h"

#include <sys/stat.h>

static void test_atomic_write_replaces_whole_file(void **state) {
    (void)state;
    char *dir = as_test_tmpdir();
    assert_non_null(dir);
    char path[512];
    snprintf(path, sizeof path, "%s/a/b/out.txt", dir);
    char sub[512];
    snprintf(sub, sizeof sub, "%s/a/b", dir);
    assert_int_equal(as_mkdir_p(sub), AS_OK);
    assert_int_equal(as_write_file_atomic(path, "first version", 13), AS_OK);
    assert_int_equal(as_write_file_atomic(path, "v2", 2), AS_OK);
    char *buf;
    size_t n;
    assert_int_equal(as_read_file(path, &buf, &n), AS_OK);
    assert_int_equal(n, 2);
    assert_string_equal(buf, "v2");
    free(buf);
    // An aborted write leaves the old content and no temporary file behind.
    as_atomic_file af;
    assert_int_equal(as_atomic_open(&af, path), AS_OK);
    fputs("partial", af.fp);
    as_atomic_abort(&af);
    assert_int_equal(as_read_file(path, &buf, &n), AS_OK);
    assert_string_equal(buf, "v2");
    free(buf);
    unlink(path);
    rmdir(sub);
    snprintf(sub, sizeof sub, "%s/a", dir);
    rmdir(sub);
    assert_int_equal(rmdir(dir), 0); // empty: no stray temporary files
}

static void test_read_missing_file_names_it(void **state) {
    (void)state;
    char *buf;
    assert_int_equal(as_read_file("/nonexistent/x.json", &buf, NULL), AS_FAIL);
    assert_non_null(strstr(as_last_error(), "/nonexistent/x.json"));
}

static void test_rng_reproducible_and_uniform(void **state) {
    (void)state;
    as_rng a, b;
    as_rng_seed(&a, 42);
    as_rng_seed(&b, 42);
    double sum = 0;
    for (int i = 0; i < 100000; i++) {
        uint64_t x = as_rng_u64(&a);
        assert_true(x == as_rng_u64(&b));
        double u = as_rng_uniform(&a);
        (void)as_rng_uniform(&b);
        assert_true(u >= 0.0 && u < 1.0);
        sum += u;
    }
    assert_true(sum / 100000 > 0.49 && sum / 100000 < 0.51);
    as_rng_seed(&b, 43);
    assert_true(as_rng_u64(&a) != as_rng_u64(&b));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_atomic_write_replaces_whole_file),
        cmocka_unit_test(test_read_missing_file_names_it),
        cmocka_unit_test(test_rng_reproducible_and_uniform),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
