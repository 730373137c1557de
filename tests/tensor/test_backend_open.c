// as_backend_open (tensor/backend.h): the device specs a `--device` flag
// takes.  Runs everywhere: "cpu" works; malformed specs fail with one clear
// line; "cuda" either gives the CUDA backend (a GPU machine with the plugin)
// or fails with one line saying why (this development machine: no device,
// or no plugin), without crashing.
#include "test_common.h"

#include "tensor/backend.h"
#include "util/common.h"

// The last error: non-empty, one line, naming the spec.
static void expect_one_line(const char *spec) {
    const char *e = as_last_error();
    assert_non_null(e);
    fprintf(stderr, "as_backend_open(\"%s\"): %s\n", spec, e);
    assert_true(strlen(e) > 0);
    assert_null(strchr(e, '\n'));
    assert_non_null(strstr(e, spec));
}

static void test_cpu(void **st) {
    (void)st;
    const as_backend *b = as_backend_open("cpu");
    assert_ptr_equal(b, &as_backend_cpu);
    assert_string_equal(b->name, "cpu");
}

static void test_malformed(void **st) {
    (void)st;
    static const char *bad[] = {"bogus", "cuda:x", "cuda:", "cuda:-1", "cuda:1x", "cuda:99999", "CPU", "cpu:0", "cuda0", " cuda"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_null(as_backend_open(bad[i]));
        expect_one_line(bad[i]);
    }
    assert_null(as_backend_open(""));
    assert_null(as_backend_open(NULL));
}

static void test_cuda(void **st) {
    (void)st;
    const as_backend *b = as_backend_open("cuda");
    const char *why = as_backend_cuda_status();
    if (b) {
        assert_string_equal(b->name, "cuda");
        assert_null(why);
        assert_ptr_equal(as_backend_find("cuda"), b);
        assert_ptr_equal(as_backend_open("cuda:0"), b);
        fprintf(stderr, "cuda backend available: %s\n", b->variant_name(0));
    } else {
        expect_one_line("cuda");
        // The registry says the same and lists the CPU alone.
        assert_non_null(why);
        assert_null(strchr(why, '\n'));
        assert_null(as_backend_find("cuda"));
        assert_int_equal(as_backend_count(), 1);
        assert_null(as_backend_open("cuda:0"));
        expect_one_line("cuda:0");
        assert_null(as_backend_open("cuda:3"));
        expect_one_line("cuda:3");
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_cpu), cmocka_unit_test(test_malformed), cmocka_unit_test(test_cuda)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
