// Shared helpers for the cmocka test executables (one per source concept).
// Include after <stdarg.h>, <stddef.h>, <setjmp.h>, <stdint.h> as cmocka requires;
// this header does so itself.
#ifndef AS_TEST_COMMON_H
#define AS_TEST_COMMON_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// ctest treats exit code 77 as "skipped" (SKIP_RETURN_CODE in CMakeLists.txt).
#define AS_TEST_SKIP 77

// Path of the default model (SmolLM2-135M-Instruct Q4_1) in the alphaspin cache,
// or NULL when it has not been fetched (`alphaspin fetch-model`).
static inline const char *as_test_default_model(void) {
    static char path[4096];
    const char *home = getenv("ALPHASPIN_HOME");
    if (home && *home) snprintf(path, sizeof path, "%s/models/SmolLM2-135M-Instruct.Q4_1.gguf", home);
    else snprintf(path, sizeof path, "%s/.cache/alphaspin/models/SmolLM2-135M-Instruct.Q4_1.gguf", getenv("HOME") ? getenv("HOME") : "/tmp");
    return access(path, R_OK) == 0 ? path : NULL;
}

// For main(): skip the whole executable (exit 77) with a message when the default model is absent.
#define AS_REQUIRE_DEFAULT_MODEL()                                                                     \
    do {                                                                                               \
        if (!as_test_default_model()) {                                                                \
            fprintf(stderr, "SKIP: default model not fetched; run `build/alphaspin fetch-model`\n"); \
            return AS_TEST_SKIP;                                                                       \
        }                                                                                              \
    } while (0)

// For main(): skip when ../shared/data is absent.
#define AS_REQUIRE_SHARED_DATA()                                                                       \
    do {                                                                                               \
        if (access(AS_SHARED_DATA, R_OK) != 0) {                                                       \
            fprintf(stderr, "SKIP: %s absent (the shared benchmark data)\n", AS_SHARED_DATA);          \
            return AS_TEST_SKIP;                                                                       \
        }                                                                                              \
    } while (0)

// Temporary folder for a test's files, removed by the caller with as_test_rmdir.
static inline char *as_test_tmpdir(void) {
    static char tmpl[256];
    snprintf(tmpl, sizeof tmpl, "%s/as_test_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    return mkdtemp(tmpl);
}

#endif
