// AMX tile instructions in C, for testing the AMX kernels on CPUs without
// AMX (test_amx_emulate).  Test-only: nothing in the library uses it.
//
// tests/tensor/CMakeLists.txt compiles src/tensor/kernels_amx.c, gemm.c
// (AMX-BF16 GEMM) and attention_amx.c a second time with -DKERNEL_AMX_EMULATE
// into a test library; each of those translation units includes this header
// after its own includes (its one guarded hook), and then:
//   - _tile_loadconfig, _tile_release, _tile_zero, _tile_loadd,
//     _tile_stored, _tile_dpbsud, _tile_dpbf16ps are calls of the emulator
//     below (amx_emulate.c) instead of the instructions;
//   - cpu_get_features reports AMX-TILE/INT8/BF16 and syscall(SYS_arch_prctl)
//     grants the tile state, so kernel_amx_permitted's own code says yes;
//     kernel_current_isa() is KERNEL_ISA_AMX (gemm.c's kernel_gemm_bf16_amx);
//   - the files' public functions get an _emu suffix, so the test links them
//     beside the real ones of as_tensor (the shared helpers -- scratch,
//     activation quantisation -- stay the library's).
// Everything else in the files -- packing, unpacking, the vector parts -- is
// the production code, compiled with the same flags.
//
// The emulator follows the Intel SDM / intrinsics guide pseudo-code (Intel
// 64 and IA-32 SDM vol. 2, "TDPBSSD/TDPBSUD/TDPBUSD/TDPBUUD", "TDPBF16PS",
// "LDTILECFG", "TILELOADD", "TILESTORED", "TILEZERO", "TILERELEASE"):
//   - one tile register file per thread (8 tiles x 16 rows x 64 bytes) and
//     palette-1 configuration (LDTILECFG's 64-byte operand: byte 0
//     palette_id, byte 1 start_row, bytes 2-15 reserved (0), bytes 16-47
//     colsb[16] as uint16 (tiles 8-15 reserved, 0), bytes 48-63 rows[16]
//     (8-15 reserved, 0); colsb <= 64, rows <= 16, both 0 or both non-zero;
//     anything else is #GP, here an abort);
//   - TILELOADD / TILESTORED move colsb bytes of each of the tile's rows
//     from / to base + row * stride; a load zeroes the rest of the tile;
//   - TDPBSUD C += A . B: for row m < C.rows, k < A.colsb / 4, n < C.colsb / 4:
//     C[m].dword[n] += sum over j < 4 of SignExtend(A[m].byte[4k+j]) *
//     ZeroExtend(B[k].byte[4n+j]), 32-bit wrapping; the shape checks of the
//     instruction (#UD: tiles not distinct or not configured, C.rows !=
//     A.rows, A.colsb / 4 != B.rows, B.colsb != C.colsb, colsb not a
//     multiple of 4, N or K > 16) abort;
//   - TDPBF16PS: per row m, two fp32 sums per output n (even and odd bf16
//     pairs) from 0, each a chain of fused multiply-adds over k (round to
//     nearest even; denormal inputs read as 0, denormal results flushed to 0),
//     then C[m][n] += (even + odd).  The hardware's order inside one
//     instruction is not specified, so bf16 results are compared with a
//     tolerance, int8 ones bit for bit (integer sums are exact).
// Any use of the tiles before LDTILECFG, after TILERELEASE, or of a tile the
// configuration leaves empty aborts, as the instruction would fault.
#ifndef AS_AMX_EMULATE_H
#define AS_AMX_EMULATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(KERNEL_AMX_EMULATE) && defined(__x86_64__)
#include <immintrin.h> // first, so that its _tile_* definitions come before the macros below
#endif

#include "tensor/attention.h"
#include "tensor/gemm.h"
#include "tensor/kernels.h"
#include "tensor/kernels_impl.h"

void amx_emu_loadconfig(const void *cfg);
void amx_emu_release(void);
void amx_emu_zero(int tile);
void amx_emu_loadd(int tile, const void *base, int64_t stride);
void amx_emu_stored(int tile, void *base, int64_t stride);
void amx_emu_dpbsud(int dst, int a, int b);
void amx_emu_dpbf16ps(int dst, int a, int b);

// The emulated CPU (the real one's features plus AMX-TILE / INT8 / BF16) and OS.
const cpu_features *amx_emu_cpu_features(void);
long amx_emu_syscall(long nr, ...);
// The kernels' ISA as an AMX machine's: KERNEL_ISA_AMX.
kernel_isa amx_emu_current_isa(void);

// Instructions emulated so far, all threads (LDTILECFG, TDPBSUD, TDPBF16PS).
typedef struct amx_emu_counts {
    uint64_t loadconfig, dpbsud, dpbf16ps;
} amx_emu_counts;
amx_emu_counts amx_emu_get_counts(void);

// Deliberate faults, for checking that a test notices a wrong tile unit.
typedef enum amx_emu_fault {
    AMX_EMU_FAULT_NONE = 0,
    AMX_EMU_FAULT_DPBSUD_PLUS1,    // TDPBSUD adds 1 to C[5].dword[7] (one token, one weight row)
    AMX_EMU_FAULT_DPBSUD_UNSIGNED, // TDPBSUD zero-extends A's bytes (TDPBUUD)
    AMX_EMU_FAULT_DPBF16PS_SWAP,   // TDPBF16PS reads B's pairs swapped (even with odd)
} amx_emu_fault;
void amx_emu_set_fault(amx_emu_fault f); // also from the start with ALPHASPIN_AMX_EMU_FAULT=<number>

// kernels_amx.c compiled with KERNEL_AMX_EMULATE.
bool kernel_amx_permitted_emu(void);
bool kernel_matmul_q8_amx_emu(float *out, int64_t ldo, const float *x, int64_t n_tokens, const as_matrix *w, int nth);
bool kernel_matmul_q8_vnni_emu(float *out, int64_t ldo, const float *x, int64_t n_tokens, const as_matrix *w, int nth);
bool kernel_matmul_q8_tiles_emu(float *out, int64_t ldo, const float *x, int64_t n_tokens, const as_matrix *w, int nth);
size_t kernel_amx_pack_size_emu(const as_matrix *w);
void kernel_amx_pack_emu(const as_matrix *w, void *dst, int nth);
// gemm.c compiled with KERNEL_AMX_EMULATE.
bool kernel_gemm_bf16_amx_emu(void);
bool kernel_gemm_bf16_dpbf_emu(void);
void kernel_amx_bf16_begin_emu(void);
void kernel_amx_bf16_end_emu(void);
void kernel_gemm_bf16_emu(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda, const float *B,
                          int64_t ldb, float beta, float *C, int64_t ldc, int nth);
void kernel_bf16_pack_b_emu(kernel_bf16_packed *p, bool tb, int64_t K, int64_t N, const float *B, int64_t ldb, int nth);
void kernel_bf16_pack_init_emu(kernel_bf16_packed *p, int64_t K, int64_t N);
void kernel_bf16_pack_rows_emu(kernel_bf16_packed *p, int64_t n0, int64_t nn, const float *W, int64_t ldw, int nth);
void kernel_bf16_packed_free_emu(kernel_bf16_packed *p);
void kernel_gemm_bf16_packed_emu(bool ta, int64_t M, float alpha, const float *A, int64_t lda, const kernel_bf16_packed *P, float beta,
                                 float *C, int64_t ldc, int nth);
// attention_amx.c compiled with KERNEL_AMX_EMULATE.
void kernel_attention_rows_amx_emu(const kernel_attn_args *a);
void kernel_attention_store_bf16_tiles_emu(void *k, void *v, int64_t ctx_pad, int n_head_kv, int d, int64_t p, const float *ki,
                                           const float *vi);

#if defined(KERNEL_AMX_EMULATE) // inside the emulated translation unit, after <immintrin.h>
#undef _tile_loadconfig
#undef _tile_release
#undef _tile_zero
#undef _tile_loadd
#undef _tile_stored
#undef _tile_dpbsud
#undef _tile_dpbf16ps
// (GCC defines _tile_loadconfig and _tile_release as inline functions: the
// function-like macros below take precedence at every call.)
#define _tile_loadconfig(cfg) amx_emu_loadconfig(cfg)
#define _tile_release() amx_emu_release()
#define _tile_zero(t) amx_emu_zero(t)
#define _tile_loadd(t, base, stride) amx_emu_loadd((t), (base), (stride))
#define _tile_stored(t, base, stride) amx_emu_stored((t), (base), (stride))
#define _tile_dpbsud(c, a, b) amx_emu_dpbsud((c), (a), (b))
#define _tile_dpbf16ps(c, a, b) amx_emu_dpbf16ps((c), (a), (b))
#define cpu_get_features amx_emu_cpu_features
#define syscall amx_emu_syscall
#define kernel_amx_permitted kernel_amx_permitted_emu
#define kernel_matmul_q8_amx kernel_matmul_q8_amx_emu
#define kernel_matmul_q8_vnni kernel_matmul_q8_vnni_emu
#define kernel_matmul_q8_tiles kernel_matmul_q8_tiles_emu
#define kernel_amx_pack_size kernel_amx_pack_size_emu
#define kernel_amx_pack kernel_amx_pack_emu
#define kernel_current_isa() amx_emu_current_isa()
#define kernel_gemm_bf16_amx kernel_gemm_bf16_amx_emu
#define kernel_gemm_bf16_dpbf kernel_gemm_bf16_dpbf_emu
#define kernel_amx_bf16_begin kernel_amx_bf16_begin_emu
#define kernel_amx_bf16_end kernel_amx_bf16_end_emu
#define kernel_gemm_bf16 kernel_gemm_bf16_emu
#define kernel_bf16_pack_b kernel_bf16_pack_b_emu
#define kernel_bf16_pack_init kernel_bf16_pack_init_emu
#define kernel_bf16_pack_rows kernel_bf16_pack_rows_emu
#define kernel_bf16_packed_free kernel_bf16_packed_free_emu
#define kernel_gemm_bf16_packed kernel_gemm_bf16_packed_emu
#define kernel_attention_rows_amx kernel_attention_rows_amx_emu
#define kernel_attention_store_bf16_tiles kernel_attention_store_bf16_tiles_emu
#endif

#endif
