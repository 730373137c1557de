// Shared by the op-level conformance test of the backends (test_backend_ops.c:
// inference ops and training's softmax pieces; test_backend_ops_train.c: the
// training graph), one executable: the random stream, the error measures, the
// check that records the worst error per op, and the loop over every backend
// and variant.
#ifndef AS_TEST_BACKEND_OPS_COMMON_H
#define AS_TEST_BACKEND_OPS_COMMON_H

#include "test_common.h"

#include "tensor/backend.h"
#include "util/rng.h"

extern as_rng g_rng;
extern int g_checks; // checks made (expect() counts its own)
// ALPHASPIN_BACKEND_ONLY=name: test that backend alone (the `gpu` test
// test_cuda_backend runs this program with cuda; where the backend is not
// available main prints SKIP and exits 77, which ctest reports as skipped).
extern const char *g_only;

// x[i] uniform in [lo, hi).
void fill(float *x, int64_t n, double lo, double hi);
// ||y - ref|| / ||ref||.
double norm_err(const float *y, const double *ref, int64_t n);
// max |y - ref| / max(1, |ref|).
double elem_err(const float *y, const double *ref, int64_t n);
// Checks err <= tol, naming the backend, variant, op and case; keeps the
// worst error per op (and matmul precision) for report().
void expect(double err, double tol, const as_backend *b, int v, const char *op, const char *what);
// Runs fn for every backend (g_only's alone when set) and each of its variants available here.
// for_each_in: only the backends that provide every op of the groups
// (as_backend_missing's AS_BACKEND_*); the others are named and left out
// (test_registry fails for them), so that a backend still being written is
// tested on what it has instead of crashing the program.
typedef void (*op_test)(const as_backend *b, int v);
void for_each(op_test fn);
void for_each_in(unsigned groups, op_test fn);
// cmocka group teardown: prints the number of checks and the worst error per op.
int report(void **st);

// The training graph's tests (test_backend_ops_train.c).
void test_train_graph_registry(void **st);
void test_train_graph_embedding(void **st);
void test_train_graph_linear(void **st);
void test_train_graph_gemm_bf16(void **st);
void test_train_graph_rmsnorm(void **st);
void test_train_graph_rope(void **st);
void test_train_graph_attention(void **st);
void test_train_graph_glu(void **st);
void test_train_graph_logsoftmax(void **st);
void test_train_graph_residual(void **st);
void test_train_graph_dropout(void **st);
void test_train_graph_lora(void **st);
void test_train_graph_optimizer(void **st);

#define TRAIN_GRAPH_TESTS                                                                                                            \
    cmocka_unit_test(test_train_graph_registry), cmocka_unit_test(test_train_graph_embedding), cmocka_unit_test(test_train_graph_linear), \
        cmocka_unit_test(test_train_graph_gemm_bf16), cmocka_unit_test(test_train_graph_rmsnorm), cmocka_unit_test(test_train_graph_rope), \
        cmocka_unit_test(test_train_graph_attention), cmocka_unit_test(test_train_graph_glu),                                             \
        cmocka_unit_test(test_train_graph_logsoftmax), cmocka_unit_test(test_train_graph_residual),                                      \
        cmocka_unit_test(test_train_graph_dropout), cmocka_unit_test(test_train_graph_lora), cmocka_unit_test(test_train_graph_optimizer)

#endif
