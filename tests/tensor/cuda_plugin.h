// For the tests that run the CUDA plugin's host-side code on machines without
// a GPU (test_cuda_dequant, test_cuda_train_host, test_cuda_nccl_load): the
// plugin's exported entry `name`, from $ALPHASPIN_CUDA_PLUGIN or this build's
// libalphaspin_cuda.so.  Exits 77 (skipped, with a message) when the plugin
// was not built or does not load here (its libraries, cuBLAS, not found), and
// 1 when it loads but lacks the entry.
#ifndef AS_TEST_CUDA_PLUGIN_H
#define AS_TEST_CUDA_PLUGIN_H

#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "test_common.h"

static inline void *cuda_plugin_entry(const char *name) {
    const char *env = getenv("ALPHASPIN_CUDA_PLUGIN");
    const char *path = env && *env ? env : AS_BINARY_DIR "/libalphaspin_cuda.so";
    if (access(path, R_OK)) {
        printf("SKIP: CUDA plugin not built (%s)\n", path);
        exit(AS_TEST_SKIP);
    }
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        printf("SKIP: CUDA plugin does not load here (%s)\n", dlerror());
        exit(AS_TEST_SKIP);
    }
    void *f = dlsym(h, name);
    if (!f) {
        fprintf(stderr, "%s: no %s\n", path, name);
        exit(1);
    }
    return f;
}

#endif
