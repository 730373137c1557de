// Rotary position embedding of one token's heads, shared by the inference
// forward pass (model/forward.c) and training (train/ops.c).
#ifndef AS_ROPE_H
#define AS_ROPE_H

#include <stdbool.h>

// Rotates the first n_rot dims of each of the n_heads heads (d apart) of v by
// the angles whose cosines / sines are cs[i], sign * sn[i] (i < n_rot / 2;
// sign -1 rotates back: the backward pass).  Pairs are (v[2i], v[2i+1]) for
// GGUF llama (whose Q/K rows the converter permuted) or (v[i], v[i + n_rot/2])
// for NEOX-style models (Gemma).  Each output is x0 c - x1 s or x0 s + x1 c in
// that order of operations, without fused multiply-adds, on every ISA: the
// AVX-512 lanes give the scalar loop's bits.
void kernel_rope(float *v, int n_heads, int d, int n_rot, bool neox, const float *cs, const float *sn, float sign);

#endif
