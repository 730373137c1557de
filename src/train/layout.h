// Row order of llama's q/k projections in GGUF versus Hugging Face.
// convert_hf_to_gguf.py permutes the rows of Wq and Wk per head so that the
// rotary pairs, (i, i + d/2) in HF's rotate_half, become adjacent: GGUF row
// h*d + 2i + j holds HF row h*d + j*d/2 + i.  Gemma files are not permuted.
#ifndef AS_TRAIN_LAYOUT_H
#define AS_TRAIN_LAYOUT_H

#include <stdint.h>

// The HF row of GGUF row r of a projection with heads of d rows.
static inline int64_t train_hf_row(int64_t r, int64_t d) {
    const int64_t h = r / d, w = r % d, i = w / 2, j = w % 2;
    return h * d + j * (d / 2) + i;
}

#endif
