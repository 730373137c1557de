// Weight matrices as the CPU backend lays them out (ggml's "extra buffer
// types"): the layer above hands over GGUF matrices once, grouped by the
// activations they multiply (Q|K|V, gate|up, or one matrix), and multiplies
// by the group; the packed, fused and bf16 copies each precision wants are
// the backend's, made by the first product that wants them.
//
//   kernel_weights_matmul(w, out, ldo, x, n, p):
//     out[t * ldo + r] = sum_c W[r][c] x[t * cols + c]   for the parts' rows
//     stacked in order (part 0's rows first), at precision p (kernels.h).
//
// Layouts (each made once, by the first product that wants it; results are
// bitwise the same with or without them, kernels.h):
//  - Q8 with >= KERNEL_PACK_MIN_TOKENS tokens: every part in kernel_pack's
//    layout, back to back in one allocation, and the parts as one product
//    where kernel_pack_size of the stack equals the sum of theirs (same type,
//    whole row tiles).  ALPHASPIN_PACK=0 turns packing off.
//  - BF16: the parts rounded to bf16 (kernel_bf16_pack_matrix), as one stack
//    when every part but the last has a multiple of 16 rows, else one each.
//  - F32 reads the GGUF blocks as they are.
// The group's memory never changes after a layout is made except by the next
// layout's first product; calls on one group must not overlap (the model
// serialises its forward passes).  The GGUF data must outlive the group.
#ifndef AS_TENSOR_WEIGHTS_H
#define AS_TENSOR_WEIGHTS_H

#include <stddef.h>
#include <stdint.h>

#include "tensor/kernels.h"

#define KERNEL_WEIGHTS_MAX_PARTS 3
typedef struct as_weights as_weights;

// NULL + as_error for n_parts outside [1, 3] or parts whose cols differ.
as_weights *kernel_weights_new(const as_matrix *const *parts, int n_parts);
void kernel_weights_free(as_weights *w);
void kernel_weights_matmul(as_weights *w, float *out, int64_t ldo, const float *x, int64_t n_tokens, kernel_precision p);
// Bytes of the layouts made so far (0 before the first that makes one).
size_t kernel_weights_bytes(const as_weights *w);

#endif
