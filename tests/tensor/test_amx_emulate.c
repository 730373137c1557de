// The AMX-INT8 Q8 matmul (kernels_amx.c) run with its tile instructions
// emulated in C (amx_emulate.h: the file compiled a second time with
// KERNEL_AMX_EMULATE; everything but the tile instructions is the
// production code), so that it is checked on CPUs without AMX.
//
// The integer block sums are exact and the float part is the VNNI kernel's
// operations in its order (kernels_amx.c's header), so the emulated AMX
// kernel must give bit for bit the outputs of the AVX-512 row kernel
// (kernel_matmul_q8_rows) and of the VNNI tile kernel: Q4_0 / Q4_1 / Q8_0,
// rows no multiple of 16, the model's shapes (576x576, 1536x576, 576x1536,
// a 3001x576 output head), 1..40 tokens and 64, 100, 129, 512, 1 and 2
// threads, plain and packed (kernel_pack) weights; the outputs' padding
// (ldo > rows) untouched.  kernel_matmul_q8_tiles_emu (AMX from
// KERNEL_AMX_MIN_TOKENS, VNNI below) likewise.  Registered twice: as is
// (token tiles in pairs, amx_tile_dot2) and with ALPHASPIN_AMX_PAIRS=0 (one
// token tile per call, amx_tile_dot).
//
// The emulator itself is checked against a plain matrix product of tiles
// (int8 x uint8 with 32-bit wrapping, nothing stored past the configured
// shape), and the test checks that it notices planted faults in the tile
// unit (one int32 off by one; A's bytes read unsigned).  Where the CPU
// really has AMX, the real kernel is compared with the emulated one too.
//
// AMX-BF16 (not with ALPHASPIN_AMX_PAIRS=0, which only the INT8 kernel
// reads): gemm.c's tile GEMM, emulated, within the worst-case fp32 bound of
// a double product of the bf16-rounded operands (TDPBF16PS's order of
// additions is not specified, so no bitwise comparison with the fallback),
// for every transposition, alpha / beta, partial blocks, the model's shapes,
// 1 and 2 threads; its packed-B forms and a row alone give bitwise the same
// outputs (gemm.h); the padding of C untouched; a planted fault (B's bf16
// pairs swapped) breaks the bound 10^5 times over.  The AMX attention on the
// cache's own bf16 tiles (kernel_attention_store_bf16_tiles) gives bitwise
// the outputs it gives on the fp32 cache; test_attention_amx_emu runs
// test_attention's reference checks on it.
//
// The kernels' vector parts are AVX-512 code: skipped (exit 77) without
// AVX-512 VNNI.
#include "test_common.h"

#include <math.h>
#include <time.h>

#include "amx_emulate.h"
#include "tensor/attention.h"
#include "tensor/kernels_impl.h"
#include "tensor/quant.h"
#include "util/common.h"
#include "util/rng.h"

// ---- the emulator against the definition of TDPBSUD ----

typedef struct {
    uint8_t palette_id, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} __attribute__((aligned(64))) test_tilecfg;

static void test_emulator_tdpbsud(void **state) {
    (void)state;
    as_rng r;
    as_rng_seed(&r, 11);
    // Shapes (M rows of C and A, N dwords of C / B, K dwords of A = rows of B):
    // the kernel's (16, 16, 8), full tiles, and small odd ones.
    static const int shapes[][3] = {{16, 16, 8}, {16, 16, 16}, {3, 5, 7}, {16, 1, 1}, {1, 16, 16}};
    for (size_t si = 0; si < AS_ARRAY_LEN(shapes); si++) {
        const int M = shapes[si][0], N = shapes[si][1], K = shapes[si][2];
        test_tilecfg cfg;
        memset(&cfg, 0, sizeof cfg);
        cfg.palette_id = 1;
        cfg.rows[0] = (uint8_t)M, cfg.colsb[0] = (uint16_t)(4 * N); // C
        cfg.rows[1] = (uint8_t)M, cfg.colsb[1] = (uint16_t)(4 * K); // A
        cfg.rows[2] = (uint8_t)K, cfg.colsb[2] = (uint16_t)(4 * N); // B
        amx_emu_loadconfig(&cfg);
        // Strides larger than the rows, filled with a pattern the tiles must not read or write.
        enum { LD = 80 };
        _Alignas(64) uint8_t A[16][LD], B[16][LD], C[16][LD], out[17][LD];
        for (int i = 0; i < 16; i++)
            for (int j = 0; j < LD; j++) A[i][j] = (uint8_t)as_rng_u64(&r), B[i][j] = (uint8_t)as_rng_u64(&r), C[i][j] = (uint8_t)as_rng_u64(&r);
        // Extreme values: -128 x 255 in every product of row 0, and C near the int32 limits (wrapping).
        for (int j = 0; j < 4 * K; j++) A[0][j] = 0x80;
        for (int k = 0; k < K; k++)
            for (int j = 0; j < 4 * N; j++) B[k][j] = 0xFF;
        for (int n = 0; n < N; n++) {
            const int32_t lim = n % 2 ? INT32_MIN + 5 : INT32_MAX - 5;
            memcpy(&C[0][4 * n], &lim, 4);
        }
        amx_emu_loadd(0, C, LD);
        amx_emu_loadd(1, A, LD);
        amx_emu_loadd(2, B, LD);
        amx_emu_dpbsud(0, 1, 2);
        memset(out, 0xA5, sizeof out);
        amx_emu_stored(0, out, LD);
        for (int m = 0; m < 17; m++)
            for (int j = 0; j < LD; j++) {
                if (m >= M || j >= 4 * N) {
                    assert_int_equal(out[m][j], 0xA5); // nothing stored outside the configured shape
                    continue;
                }
                if (j % 4) continue;
                const int n = j / 4;
                int32_t c0;
                memcpy(&c0, &C[m][4 * n], 4);
                int64_t s = c0;
                for (int i = 0; i < 4 * K; i++) s += (int64_t)(int8_t)A[m][i] * B[i / 4][4 * n + i % 4];
                int32_t got;
                memcpy(&got, &out[m][4 * n], 4);
                assert_int_equal((uint32_t)got, (uint32_t)(uint64_t)s); // modulo 2^32
            }
        amx_emu_release();
    }
    // TILEZERO after a load.
    test_tilecfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette_id = 1;
    cfg.rows[0] = 16, cfg.colsb[0] = 64;
    amx_emu_loadconfig(&cfg);
    _Alignas(64) uint8_t ones[16][64], back[16][64];
    memset(ones, 1, sizeof ones);
    amx_emu_loadd(0, ones, 64);
    amx_emu_zero(0);
    amx_emu_stored(0, back, 64);
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 64; j++) assert_int_equal(back[i][j], 0);
    amx_emu_release();
}

// ---- the kernels ----

typedef struct {
    as_matrix w;
    void *data, *packed;
} test_mat;

static void make_mat(test_mat *m, ggml_type t, int64_t rows, int64_t cols, as_rng *r) {
    memset(m, 0, sizeof *m);
    const size_t rb = quant_row_size(t, cols);
    m->data = as_malloc(rb * (size_t)rows);
    float *row = as_malloc(sizeof(float) * (size_t)cols);
    for (int64_t i = 0; i < rows; i++) {
        const double scale = 0.05 * (1 + (i % 7)); // rows of different magnitude
        for (int64_t c = 0; c < cols; c++) row[c] = (float)(scale * (2.0 * as_rng_uniform(r) - 1.0));
        quant_quantize_row(t, row, (uint8_t *)m->data + (size_t)i * rb, cols);
    }
    free(row);
    m->w = (as_matrix){.data = m->data, .type = t, .rows = rows, .cols = cols, .row_bytes = rb};
}

// The packed copy (kernel_pack: the library's kernel_amx_pack, the same code as the emulated file's).
static as_matrix packed_view(test_mat *m) {
    const size_t sz = kernel_pack_size(&m->w);
    assert_int_equal(sz, kernel_amx_pack_size_emu(&m->w));
    if (!m->packed) {
        as_matrix w = m->w;
        m->packed = as_aligned_alloc(sz);
        kernel_pack(&w, m->packed);
        // The emulated file's packing makes the same bytes.
        void *again = as_aligned_alloc(sz);
        kernel_amx_pack_emu(&m->w, again, kernel_get_threads());
        assert_memory_equal(m->packed, again, sz);
        free(again);
    }
    as_matrix w = m->w;
    w.packed = m->packed;
    return w;
}

static void free_mat(test_mat *m) { free(m->data), free(m->packed); }

typedef struct {
    float *ref, *out;
    int64_t ldo;
    int n_checked, n_amx;
} sweep;

static void fill_nan(float *o, int64_t n) {
    for (int64_t i = 0; i < n; i++) o[i] = NAN;
}

// out (nt x rows, row stride ldo, NaN beyond rows) must be ref bit for bit.
static bool same(const float *ref, const float *out, int64_t ldo, int64_t nt, int64_t rows, const char *what, const as_matrix *w, int nth,
                 bool quiet) {
    for (int64_t i = 0; i < nt; i++) {
        if (memcmp(ref + i * ldo, out + i * ldo, sizeof(float) * (size_t)rows) != 0) {
            if (quiet) return false;
            int64_t o = 0;
            while (!memcmp(ref + i * ldo + o, out + i * ldo + o, sizeof(float))) o++;
            fail_msg("%s %s %lldx%lld%s, %lld tokens, %d threads: token %lld row %lld: %.9g, the row kernel %.9g", what, ggml_type_name(w->type),
                     (long long)w->rows, (long long)w->cols, w->packed ? " packed" : "", (long long)nt, nth, (long long)i, (long long)o,
                     (double)out[i * ldo + o], (double)ref[i * ldo + o]);
        }
        for (int64_t r = rows; r < ldo; r++)
            if (!isnan(out[i * ldo + r])) {
                if (quiet) return false;
                fail_msg("%s %s %lldx%lld: token %lld: wrote past the rows (column %lld)", what, ggml_type_name(w->type), (long long)w->rows,
                         (long long)w->cols, (long long)i, (long long)r);
            }
    }
    return true;
}

// One matrix, one token count, one thread count: the row kernel's outputs,
// then the VNNI kernel, the emulated AMX kernel and the emulated "amx" ISA
// dispatch (tiles) against them.
static void check_case(sweep *s, const as_matrix *w, const float *x, int64_t nt, int nth) {
    const int64_t ldo = s->ldo, rows = w->rows;
    kernel_set_threads(nth);
    fill_nan(s->ref, nt * ldo);
    kernel_matmul_q8_rows(s->ref, ldo, x, nt, w, nth);
    fill_nan(s->out, nt * ldo);
    const bool ran_vnni = kernel_matmul_q8_vnni(s->out, ldo, x, nt, w, nth);
    assert_int_equal(ran_vnni, nt >= KERNEL_VNNI_TILE_MIN_TOKENS);
    if (ran_vnni) same(s->ref, s->out, ldo, nt, rows, "VNNI tiles", w, nth, false);

    const uint64_t before = amx_emu_get_counts().dpbsud;
    fill_nan(s->out, nt * ldo);
    const bool ran = kernel_matmul_q8_amx_emu(s->out, ldo, x, nt, w, nth);
    assert_int_equal(ran, nt >= KERNEL_AMX_MIN_TOKENS);
    const uint64_t products = amx_emu_get_counts().dpbsud - before;
    if (ran) {
        // One TDPBSUD per block, 16-row tile and 16-token tile.
        const uint64_t want = (uint64_t)(w->cols / 32) * (uint64_t)((rows + 15) / 16) * (uint64_t)((nt + 15) / 16);
        if (products != want) fail_msg("%lld tokens %lldx%lld: %llu TDPBSUD, expected %llu", (long long)nt, (long long)rows, (long long)w->cols,
                                       (unsigned long long)products, (unsigned long long)want);
        same(s->ref, s->out, ldo, nt, rows, "AMX (emulated)", w, nth, false);
        s->n_amx++;
    } else {
        assert_int_equal(products, 0);
    }

    fill_nan(s->out, nt * ldo);
    const bool ran_tiles = kernel_matmul_q8_tiles_emu(s->out, ldo, x, nt, w, nth);
    assert_int_equal(ran_tiles, nt >= KERNEL_VNNI_TILE_MIN_TOKENS);
    if (ran_tiles) same(s->ref, s->out, ldo, nt, rows, "amx ISA tiles (emulated)", w, nth, false);

    if (kernel_isa_available(KERNEL_ISA_AMX)) { // the real tiles too, where there are any
        fill_nan(s->out, nt * ldo);
        if (kernel_matmul_q8_amx(s->out, ldo, x, nt, w, nth)) same(s->ref, s->out, ldo, nt, rows, "AMX (real)", w, nth, false);
    }
    s->n_checked++;
}

static const ggml_type types[] = {GGML_TYPE_Q4_0, GGML_TYPE_Q4_1, GGML_TYPE_Q8_0};

static void run_shapes(const int64_t (*shapes)[2], size_t n_shapes, const int64_t *counts, size_t n_counts, uint64_t seed) {
    as_rng r;
    as_rng_seed(&r, seed);
    int64_t max_rows = 0, max_cols = 0, max_tok = 0;
    for (size_t i = 0; i < n_shapes; i++) max_rows = AS_MAX(max_rows, shapes[i][0]), max_cols = AS_MAX(max_cols, shapes[i][1]);
    for (size_t i = 0; i < n_counts; i++) max_tok = AS_MAX(max_tok, counts[i]);
    sweep s = {.ldo = max_rows + 3};
    s.ref = as_malloc(sizeof(float) * (size_t)(max_tok * s.ldo));
    s.out = as_malloc(sizeof(float) * (size_t)(max_tok * s.ldo));
    float *x = as_malloc(sizeof(float) * (size_t)(max_tok * max_cols));
    for (int64_t i = 0; i < max_tok * max_cols; i++) x[i] = (float)(2.0 * as_rng_uniform(&r) - 1.0);
    const clock_t t0 = clock();
    for (size_t ti = 0; ti < AS_ARRAY_LEN(types); ti++)
        for (size_t si = 0; si < n_shapes; si++) {
            test_mat m;
            make_mat(&m, types[ti], shapes[si][0], shapes[si][1], &r);
            // x is read with row stride cols: token i's values are x[i * cols ...].
            for (int packed = 0; packed <= 1; packed++) {
                kernel_set_threads(2);
                const as_matrix w = packed ? packed_view(&m) : m.w;
                for (size_t ci = 0; ci < n_counts; ci++)
                    for (int nth = 1; nth <= 2; nth++) check_case(&s, &w, x, counts[ci], nth);
            }
            free_mat(&m);
        }
    fprintf(stderr, "  %d cases (%d ran the emulated AMX kernel), %.1f s CPU\n", s.n_checked, s.n_amx, (double)(clock() - t0) / CLOCKS_PER_SEC);
    kernel_set_threads(0);
    free(s.ref), free(s.out), free(x);
}

// Odd shapes (rows no multiple of 16; 1, 3, 7, 18 blocks: the last group of 4 holding 1, 3, 3, 2), every token count 1..40 and past the chunks.
static void test_small_shapes_all_counts(void **state) {
    (void)state;
    static const int64_t shapes[][2] = {{17, 32}, {45, 96}, {37, 224}, {130, 576}};
    int64_t counts[40 + 3];
    for (int i = 0; i < 40; i++) counts[i] = i + 1;
    counts[40] = 64, counts[41] = 100, counts[42] = 129;
    run_shapes(shapes, AS_ARRAY_LEN(shapes), counts, AS_ARRAY_LEN(counts), 1);
}

// The model's shapes (SmolLM2-135M: hidden 576, FFN 1536) and an output head
// of 3001 rows, around the thresholds and chunk sizes (128 tokens per AMX item).
static void test_model_shapes(void **state) {
    (void)state;
    static const int64_t shapes[][2] = {{576, 576}, {1536, 576}, {576, 1536}, {3001, 576}};
    static const int64_t counts[] = {8, 9, 16, 17, 32, 33, 129};
    run_shapes(shapes, AS_ARRAY_LEN(shapes), counts, AS_ARRAY_LEN(counts), 2);
    static const int64_t big[][2] = {{576, 576}};
    static const int64_t prefill[] = {512};
    run_shapes(big, AS_ARRAY_LEN(big), prefill, AS_ARRAY_LEN(prefill), 3);
}

// A wrong tile unit must fail the comparison: each planted fault changes outputs.
static void test_faults_are_detected(void **state) {
    (void)state;
    as_rng r;
    as_rng_seed(&r, 4);
    static const amx_emu_fault faults[] = {AMX_EMU_FAULT_DPBSUD_PLUS1, AMX_EMU_FAULT_DPBSUD_UNSIGNED};
    for (size_t ti = 0; ti < AS_ARRAY_LEN(types); ti++) {
        test_mat m;
        make_mat(&m, types[ti], 45, 96, &r);
        const int64_t nt = 20, ldo = 48;
        float *x = as_malloc(sizeof(float) * (size_t)(nt * 96)), *ref = as_malloc(sizeof(float) * (size_t)(nt * ldo)),
              *out = as_malloc(sizeof(float) * (size_t)(nt * ldo));
        for (int64_t i = 0; i < nt * 96; i++) x[i] = (float)(2.0 * as_rng_uniform(&r) - 1.0);
        fill_nan(ref, nt * ldo);
        kernel_matmul_q8_rows(ref, ldo, x, nt, &m.w, 1);
        for (size_t f = 0; f < AS_ARRAY_LEN(faults); f++) {
            amx_emu_set_fault(faults[f]);
            fill_nan(out, nt * ldo);
            assert_true(kernel_matmul_q8_amx_emu(out, ldo, x, nt, &m.w, 1));
            amx_emu_set_fault(AMX_EMU_FAULT_NONE);
            if (same(ref, out, ldo, nt, m.w.rows, "", &m.w, 1, true))
                fail_msg("fault %d planted in the emulated TDPBSUD went unnoticed (%s)", (int)faults[f], ggml_type_name(types[ti]));
        }
        // And without the fault, the same call agrees again.
        fill_nan(out, nt * ldo);
        assert_true(kernel_matmul_q8_amx_emu(out, ldo, x, nt, &m.w, 1));
        same(ref, out, ldo, nt, m.w.rows, "AMX (emulated, fault removed)", &m.w, 1, false);
        free(x), free(ref), free(out);
        free_mat(&m);
    }
}

// The emulated build's permission check runs kernel_amx_permitted's own code
// against the emulated CPU and OS; the real one is untouched.
static void test_permission(void **state) {
    (void)state;
    assert_true(kernel_amx_permitted_emu());
    assert_true(kernel_amx_permitted() == cpu_get_features()->amx_int8 || !kernel_amx_permitted());
}

// ---- AMX-BF16: gemm.c ----

static float bf(float x) { return as_bf16_to_f32(as_f32_to_bf16(x)); }

// The double products of the bf16-rounded op(A) and op(B): S = sum_k a_k b_k
// and SA = sum_k |a_k b_k| (M x N).
static void gemm_sums(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb, double *S,
                      double *SA) {
    double *a = as_malloc(sizeof(double) * (size_t)(M * K)), *b = as_malloc(sizeof(double) * (size_t)(N * K)); // op(A) rows, op(B) columns
    for (int64_t i = 0; i < M; i++)
        for (int64_t k = 0; k < K; k++) a[i * K + k] = bf(ta ? A[k * lda + i] : A[i * lda + k]);
    for (int64_t j = 0; j < N; j++)
        for (int64_t k = 0; k < K; k++) b[j * K + k] = bf(tb ? B[j * ldb + k] : B[k * ldb + j]);
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double sum = 0, abs_sum = 0;
            for (int64_t k = 0; k < K; k++) {
                const double p = a[i * K + k] * b[j * K + k];
                sum += p, abs_sum += fabs(p);
            }
            S[i * N + j] = sum, SA[i * N + j] = abs_sum;
        }
    free(a), free(b);
}

// max over C of |C - ref| / bound, ref = alpha S + beta C0 (gemm_sums); bound
// (K + 4) 2^-23 (|alpha| SA + |beta c|) + 2^-126, the worst case of fp32 sums
// of K products in any order (TDPBF16PS's order is not specified).  A wrong
// element, pair or tile (layout, indexing) gives errors of the order of the
// sum itself, hundreds of bounds at these sizes.
static double gemm_error(int64_t M, int64_t N, int64_t K, float alpha, const double *S, const double *SA, float beta, const float *C0, const float *C,
                         int64_t ldc) {
    double worst = 0;
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            const double c0 = beta != 0.0f ? (double)beta * C0[i * ldc + j] : 0.0;
            const double ref = alpha * S[i * N + j] + c0, bound = (double)(K + 4) * 0x1p-23 * (fabs(alpha) * SA[i * N + j] + fabs(c0)) + 0x1p-126;
            worst = fmax(worst, fabs(C[i * ldc + j] - ref) / bound);
        }
    return worst;
}

static void test_gemm_bf16(void **state) {
    (void)state;
    as_rng r;
    as_rng_seed(&r, 21);
    // (M, N, K): single elements, partial 16/32 blocks in every dimension, K
    // not a multiple of 32, the model's projections (576, 1536), a chunked B.
    static const int64_t shapes[][3] = {{1, 1, 1}, {5, 17, 31}, {32, 32, 32}, {33, 50, 33}, {100, 96, 64}, {64, 70, 576}, {7, 1536, 576}, {40, 576, 1536}};
    static const float ab[][2] = {{1.0f, 0.0f}, {0.5f, 1.5f}};
    double worst_emu = 0, worst_real = 0;
    int n_cases = 0;
    const uint64_t before = amx_emu_get_counts().dpbf16ps;
    for (size_t si = 0; si < AS_ARRAY_LEN(shapes); si++) {
        const int64_t M = shapes[si][0], N = shapes[si][1], K = shapes[si][2];
        const int64_t lda_n = K + 2, lda_t = M + 1, ldb_n = N + 3, ldb_t = K + 1, ldc = N + 5;
        float *A = as_malloc(sizeof(float) * (size_t)(AS_MAX(M * lda_n, K * lda_t))), *B = as_malloc(sizeof(float) * (size_t)(AS_MAX(K * ldb_n, N * ldb_t)));
        float *C0 = as_malloc(sizeof(float) * (size_t)(M * ldc)), *C = as_malloc(sizeof(float) * (size_t)(M * ldc)),
              *C2 = as_malloc(sizeof(float) * (size_t)(M * ldc));
        for (int64_t i = 0; i < AS_MAX(M * lda_n, K * lda_t); i++) A[i] = (float)(2.0 * as_rng_uniform(&r) - 1.0);
        for (int64_t i = 0; i < AS_MAX(K * ldb_n, N * ldb_t); i++) B[i] = (float)(2.0 * as_rng_uniform(&r) - 1.0);
        for (int64_t i = 0; i < M * ldc; i++) C0[i] = i % ldc < N ? (float)(2.0 * as_rng_uniform(&r) - 1.0) : NAN; // NaN: padding, never read or written
        double *S = as_malloc(sizeof(double) * (size_t)(M * N)), *SA = as_malloc(sizeof(double) * (size_t)(M * N));
        for (int t = 0; t < 4; t++) {
            const bool ta = t & 1, tb = t & 2;
            const int64_t lda = ta ? lda_t : lda_n, ldb = tb ? ldb_t : ldb_n;
            gemm_sums(ta, tb, M, N, K, A, lda, B, ldb, S, SA);
            for (size_t ai = 0; ai < AS_ARRAY_LEN(ab); ai++) {
                const float alpha = ab[ai][0], beta = ab[ai][1];
                for (int nth = 1; nth <= 2; nth++) {
                    memcpy(C, C0, sizeof(float) * (size_t)(M * ldc));
                    kernel_gemm_bf16_emu(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, nth);
                    const double e = gemm_error(M, N, K, alpha, S, SA, beta, C0, C, ldc);
                    if (!(e <= 1.0))
                        fail_msg("AMX-BF16 GEMM (emulated) %lldx%lldx%lld ta %d tb %d alpha %g beta %g, %d threads: error %.3g bounds", (long long)M,
                                 (long long)N, (long long)K, ta, tb, (double)alpha, (double)beta, nth, e);
                    for (int64_t i = 0; i < M; i++)
                        for (int64_t j = N; j < ldc; j++) assert_true(isnan(C[i * ldc + j]));
                    worst_emu = fmax(worst_emu, e);
                    // The library's own path (the fallback here; AMX where the CPU has it), same bound.
                    memcpy(C2, C0, sizeof(float) * (size_t)(M * ldc));
                    kernel_gemm_bf16(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C2, ldc, nth);
                    worst_real = fmax(worst_real, gemm_error(M, N, K, alpha, S, SA, beta, C0, C2, ldc));
                    if (kernel_gemm_bf16_amx()) // real tiles: the emulator's every product and sum in some order -- compare only within the bound
                        assert_true(gemm_error(M, N, K, alpha, S, SA, beta, C0, C2, ldc) <= 1.0);
                    // A packed B (pack_b, and pack_init + pack_rows by chunks of 16 rows of W = op(B)^T): the same bits.
                    kernel_bf16_packed P;
                    kernel_bf16_pack_b_emu(&P, tb, K, N, B, ldb, nth);
                    memcpy(C2, C0, sizeof(float) * (size_t)(M * ldc));
                    kernel_gemm_bf16_packed_emu(ta, M, alpha, A, lda, &P, beta, C2, ldc, nth);
                    kernel_bf16_packed_free_emu(&P);
                    assert_memory_equal(C, C2, sizeof(float) * (size_t)(M * ldc));
                    if (tb) {
                        kernel_bf16_pack_init_emu(&P, K, N);
                        for (int64_t n0 = 0; n0 < N; n0 += 48) kernel_bf16_pack_rows_emu(&P, n0, AS_MIN((int64_t)48, N - n0), B + n0 * ldb, ldb, nth);
                        memcpy(C2, C0, sizeof(float) * (size_t)(M * ldc));
                        kernel_gemm_bf16_packed_emu(ta, M, alpha, A, lda, &P, beta, C2, ldc, nth);
                        kernel_bf16_packed_free_emu(&P);
                        assert_memory_equal(C, C2, sizeof(float) * (size_t)(M * ldc));
                    }
                    // Batch invariance (gemm.h): row i alone gives row i's bits.
                    if (!ta) {
                        const int64_t i = M / 2;
                        memcpy(C2, C0 + i * ldc, sizeof(float) * (size_t)ldc);
                        kernel_gemm_bf16_emu(false, tb, 1, N, K, alpha, A + i * lda, lda, B, ldb, beta, C2, ldc, nth);
                        assert_memory_equal(C + i * ldc, C2, sizeof(float) * (size_t)N);
                    }
                    n_cases++;
                }
            }
        }
        free(A), free(B), free(C0), free(C), free(C2), free(S), free(SA);
    }
    const uint64_t products = amx_emu_get_counts().dpbf16ps - before;
    fprintf(stderr, "  %d products, %llu TDPBF16PS; worst error / bound: emulated AMX %.3g, %s %.3g\n", n_cases, (unsigned long long)products,
            worst_emu, kernel_gemm_bf16_amx() ? "real AMX" : "the fallback", worst_real);
    assert_true(products > 0);
}

// A wrong TDPBF16PS (B's pairs swapped) breaks the bound.
static void test_gemm_bf16_fault_detected(void **state) {
    (void)state;
    as_rng r;
    as_rng_seed(&r, 22);
    const int64_t M = 20, N = 40, K = 64;
    float *A = as_malloc(sizeof(float) * M * K), *B = as_malloc(sizeof(float) * K * N), *C0 = as_calloc((size_t)(M * N), sizeof(float)),
          *C = as_calloc((size_t)(M * N), sizeof(float));
    for (int64_t i = 0; i < M * K; i++) A[i] = (float)(2.0 * as_rng_uniform(&r) - 1.0);
    for (int64_t i = 0; i < K * N; i++) B[i] = (float)(2.0 * as_rng_uniform(&r) - 1.0);
    double *S = as_malloc(sizeof(double) * M * N), *SA = as_malloc(sizeof(double) * M * N);
    gemm_sums(false, false, M, N, K, A, K, B, N, S, SA);
    amx_emu_set_fault(AMX_EMU_FAULT_DPBF16PS_SWAP);
    kernel_gemm_bf16_emu(false, false, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N, 1);
    amx_emu_set_fault(AMX_EMU_FAULT_NONE);
    const double e = gemm_error(M, N, K, 1.0f, S, SA, 0.0f, C0, C, N);
    fprintf(stderr, "  planted fault: error %.3g bounds\n", e);
    assert_true(e > 10.0);
    kernel_gemm_bf16_emu(false, false, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N, 1);
    assert_true(gemm_error(M, N, K, 1.0f, S, SA, 0.0f, C0, C, N) <= 1.0);
    free(A), free(B), free(C0), free(C), free(S), free(SA);
}

// ---- AMX-BF16: attention_amx.c on the cache's bf16 tiles ----
//
// test_attention_amx_emu runs test_attention's reference checks on the
// emulated AMX attention with fp32 / fp16 caches (converted to tiles per
// call).  Here the cache's own bf16 tiles (kernel_attention_store_bf16_tiles,
// tiled): the same values give bitwise the same outputs as the fp32 cache,
// with finite junk in the tiles' unused positions (attention.h: ignored).
static void test_attention_tiled_cache(void **state) {
    (void)state;
    as_rng r;
    as_rng_seed(&r, 31);
    static const int ds[] = {32, 64, 128}, Gs[] = {1, 3}, ns[] = {1, 17, 32, 33, 100};
    const int Hkv = 2, g = 1; // the second of two KV heads: real strides and offsets
    const uint64_t before = amx_emu_get_counts().dpbf16ps;
    int n_cases = 0;
    for (size_t di = 0; di < AS_ARRAY_LEN(ds); di++)
        for (size_t gi = 0; gi < AS_ARRAY_LEN(Gs); gi++)
            for (size_t ni = 0; ni < AS_ARRAY_LEN(ns); ni++) {
                const int d = ds[di], G = Gs[gi], n = ns[ni], rows = AS_MIN(n, 5), kvd = Hkv * d;
                const int64_t n_tiles = (n + KERNEL_KV_TILE - 1) / KERNEL_KV_TILE, ctx_pad = (n + KERNEL_KV_CHUNK - 1) / KERNEL_KV_CHUNK * KERNEL_KV_CHUNK;
                float *K32 = as_calloc((size_t)(n_tiles * KERNEL_KV_TILE * kvd), sizeof(float)), *V32 = as_calloc((size_t)n * kvd, sizeof(float));
                const size_t tile_elems = (size_t)(Hkv * ctx_pad * d);
                as_bf16 *Kt = as_aligned_alloc(sizeof(as_bf16) * tile_elems), *Vt = as_aligned_alloc(sizeof(as_bf16) * tile_elems);
                for (size_t i = 0; i < tile_elems; i++) Kt[i] = as_f32_to_bf16((float)as_rng_uniform(&r)), Vt[i] = as_f32_to_bf16((float)as_rng_uniform(&r));
                float *ki = as_malloc(sizeof(float) * (size_t)kvd), *vi = as_malloc(sizeof(float) * (size_t)kvd);
                for (int p = 0; p < n; p++) {
                    for (int e = 0; e < kvd; e++) ki[e] = (float)(2.0 * as_rng_uniform(&r) - 1.0), vi[e] = (float)(2.0 * as_rng_uniform(&r) - 1.0);
                    for (int e = 0; e < kvd; e++) K32[(p / KERNEL_KV_TILE) * KERNEL_KV_TILE * kvd + e * KERNEL_KV_TILE + p % KERNEL_KV_TILE] = ki[e];
                    memcpy(V32 + (int64_t)p * kvd, vi, sizeof(float) * (size_t)kvd);
                    kernel_attention_store_bf16_tiles_emu(Kt, Vt, ctx_pad, Hkv, d, p, ki, vi);
                }
                const int64_t q_stride = (int64_t)G * d + 3;
                float *q = as_malloc(sizeof(float) * (size_t)(rows * q_stride)), *o32 = as_calloc((size_t)(rows * q_stride), sizeof(float)),
                      *ot = as_calloc((size_t)(rows * q_stride), sizeof(float));
                float *scores = as_aligned_alloc(sizeof(float) * (size_t)(KERNEL_ATTN_SCORE_ROWS * n_tiles * KERNEL_KV_TILE));
                for (int64_t i = 0; i < rows * q_stride; i++) q[i] = (float)(2.0 * as_rng_uniform(&r) - 1.0);
                int32_t n_keys[5];
                for (int i = 0; i < rows; i++) n_keys[i] = n - (rows - 1 - i);
                kernel_attn_args a = {.q = q, .q_stride = q_stride, .n_heads = G, .d = d, .n_rows = rows, .n_keys = n_keys,
                                      .k = K32 + (int64_t)g * d * KERNEL_KV_TILE, .k_tile_stride = KERNEL_KV_TILE * (int64_t)kvd,
                                      .v = V32 + (int64_t)g * d, .v_stride = kvd, .bf16 = true, .scale = 1.0f / sqrtf((float)d),
                                      .out = o32, .out_stride = q_stride, .scores = scores, .scores_stride = n_tiles * KERNEL_KV_TILE};
                kernel_attention_rows_amx_emu(&a);
                a.tiled = true, a.k = Kt + (int64_t)g * ctx_pad * d, a.v = Vt + (int64_t)g * ctx_pad * d, a.v_panel = ctx_pad / 2 * 16, a.out = ot;
                kernel_attention_rows_amx_emu(&a);
                for (int i = 0; i < rows; i++)
                    if (memcmp(o32 + i * q_stride, ot + i * q_stride, sizeof(float) * (size_t)(G * d)))
                        fail_msg("AMX attention (emulated) d %d, G %d, %d keys: row %d differs between the fp32 cache and the bf16 tiles", d, G, n, i);
                free(K32), free(V32), free(Kt), free(Vt), free(ki), free(vi), free(q), free(o32), free(ot), free(scores);
                n_cases++;
            }
    const uint64_t products = amx_emu_get_counts().dpbf16ps - before;
    fprintf(stderr, "  %d cases, %llu TDPBF16PS\n", n_cases, (unsigned long long)products);
    assert_true(products > 0);
}

static int setup(void **state) {
    (void)state;
    return kernel_force_isa(KERNEL_ISA_AVX512) == AS_OK ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    kernel_force_isa(KERNEL_ISA_AUTO);
    return 0;
}

int main(void) {
    if (!kernel_isa_available(KERNEL_ISA_AVX512)) {
        fprintf(stderr, "SKIP: no AVX-512 VNNI on this CPU (the AMX kernel's float part is AVX-512 code)\n");
        return AS_TEST_SKIP;
    }
    const char *pairs = getenv("ALPHASPIN_AMX_PAIRS");
    const bool no_pairs = pairs && !strcmp(pairs, "0");
    fprintf(stderr, "token tiles %s\n", no_pairs ? "one per call (ALPHASPIN_AMX_PAIRS=0): the INT8 tests only" : "in pairs");
    const struct CMUnitTest int8[] = {
        cmocka_unit_test(test_emulator_tdpbsud),
        cmocka_unit_test(test_permission),
        cmocka_unit_test(test_faults_are_detected),
        cmocka_unit_test(test_small_shapes_all_counts),
        cmocka_unit_test(test_model_shapes),
    };
    const struct CMUnitTest bf16[] = {
        cmocka_unit_test(test_gemm_bf16),
        cmocka_unit_test(test_gemm_bf16_fault_detected),
        cmocka_unit_test(test_attention_tiled_cache),
    };
    const int failed = cmocka_run_group_tests(int8, setup, teardown);
    return no_pairs ? failed : failed + cmocka_run_group_tests(bf16, setup, teardown);
}
