// The CUDA plugin's NCCL loader (cuda_backend.cu, nccl_load) on a machine
// without a GPU: libnccl.so.2 is found the way a job would find it, every
// function the collectives call resolves, and ncclGetVersion answers (NCCL
// 2.x).  What needs a GPU (a communicator, a gather) is test_cuda_nccl's, on
// the device.  Skips (77) when the plugin was not built, does not load here,
// was built without NCCL, or NCCL is not installed.
#include "test_common.h"

#include "cuda_plugin.h"

#include "util/common.h"

typedef int (*version_fn)(char *err, size_t n);
static version_fn g_version;

static void test_version(void **st) {
    (void)st;
    char err[512] = "";
    const int v = g_version(err, sizeof err);
    if (v < 0) fail_msg("NCCL did not load: %s", err);
    printf("NCCL %d.%d.%d\n", v / 10000, v / 100 % 100, v % 100);
    assert_true(v >= 20000 && v < 30000); // NCCL 2.x: the API the plugin is compiled against
    // Loaded once: a second call answers the same.
    assert_int_equal(g_version(err, sizeof err), v);
}

int main(void) {
    g_version = (version_fn)(uintptr_t)cuda_plugin_entry("alphaspin_cuda_nccl_version_host");
    char err[512] = "";
    if (g_version(err, sizeof err) < 0 && (strstr(err, "without NCCL") || strstr(err, "not installed"))) {
        printf("SKIP: %s\n", err);
        return AS_TEST_SKIP;
    }
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_version)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
