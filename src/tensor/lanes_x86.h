// The mask of a vector's first `left` of 16 lanes (masked loads and stores of
// a row's tail): all 16 when left >= 16, none when left <= 0.  x86-64 only;
// plain integer code, usable from any target.
#ifndef AS_TENSOR_LANES_X86_H
#define AS_TENSOR_LANES_X86_H

#if defined(__x86_64__)
#include <immintrin.h>
#include <stdint.h>

static inline __mmask16 as_lanes16(int64_t left) {
    return left >= 16 ? (__mmask16)0xffff : left > 0 ? (__mmask16)((1u << left) - 1) : (__mmask16)0;
}
#endif

#endif
