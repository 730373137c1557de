// The CPU backend's weight groups (weights.h): a group's GGUF matrices and
// the layouts its precisions made, multiplied with kernel_matmul.
#include "tensor/weights.h"

#include <stdlib.h>
#include <string.h>

#include "tensor/gemm.h"
#include "util/common.h"

struct as_weights {
    int n;
    as_matrix part[KERNEL_WEIGHTS_MAX_PARTS]; // the GGUF matrices; .packed / .bf16 point at this group's copies once made
    // Q8, many tokens: the parts' kernel_pack copies, 64-byte aligned, back
    // to back; q8_stack the parts as one matrix over them (rows 0: none).
    bool q8_tried;
    void *q8_store;
    size_t q8_bytes;
    as_matrix q8_stack;
    // BF16: one packed copy per part, or one for the stack (bf16_stack.bf16 set).
    kernel_bf16_packed *bf16;
    int n_bf16;
    size_t bf16_bytes;
    as_matrix bf16_stack;
};

as_weights *kernel_weights_new(const as_matrix *const *parts, int n_parts) {
    if (n_parts < 1 || n_parts > KERNEL_WEIGHTS_MAX_PARTS) {
        as_error("kernel_weights_new: %d parts: expected 1 to %d", n_parts, KERNEL_WEIGHTS_MAX_PARTS);
        return NULL;
    }
    for (int i = 1; i < n_parts; i++)
        if (parts[i]->cols != parts[0]->cols) {
            as_error("kernel_weights_new: part %d has %lld columns, part 0 %lld", i, (long long)parts[i]->cols, (long long)parts[0]->cols);
            return NULL;
        }
    as_weights *w = as_calloc(1, sizeof *w);
    w->n = n_parts;
    for (int i = 0; i < n_parts; i++) {
        w->part[i] = *parts[i];
        w->part[i].packed = NULL, w->part[i].bf16 = NULL;
    }
    return w;
}

void kernel_weights_free(as_weights *w) {
    if (!w) return;
    free(w->q8_store);
    for (int i = 0; i < w->n_bf16; i++) kernel_bf16_packed_free(&w->bf16[i]);
    free(w->bf16);
    free(w);
}

size_t kernel_weights_bytes(const as_weights *w) { return w->q8_bytes + w->bf16_bytes; }

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

// The Q8 layout: every part packed (those whose type has a packed layout on
// this ISA), and the stack when the packed copies are adjacent and
// kernel_pack_size of the stack is the sum of theirs.
static void pack_q8(as_weights *w) {
    w->q8_tried = true;
    const char *env = getenv("ALPHASPIN_PACK");
    if (env && !strcmp(env, "0")) return;
    size_t total = 0;
    for (int i = 0; i < w->n; i++) total += align64(kernel_pack_size(&w->part[i]));
    if (total == 0) return;
    uint8_t *store = as_aligned_alloc(total);
    size_t off = 0;
    for (int i = 0; i < w->n; i++) {
        const size_t sz = kernel_pack_size(&w->part[i]);
        if (!sz) continue;
        kernel_pack(&w->part[i], store + off);
        off += align64(sz);
    }
    w->q8_store = store, w->q8_bytes = total;
    if (w->n == 1) return;
    as_matrix f = w->part[0];
    size_t sum = kernel_pack_size(&w->part[0]);
    for (int i = 1; i < w->n; i++) {
        const as_matrix *p = &w->part[i];
        const size_t sz = kernel_pack_size(p);
        if (!p->packed || !w->part[0].packed || p->type != f.type || !sz || (const uint8_t *)p->packed != (const uint8_t *)w->part[0].packed + sum)
            return;
        f.rows += p->rows;
        sum += sz;
    }
    if (kernel_pack_size(&f) == sum) w->q8_stack = f;
}

// The BF16 layout: the stack in one packed copy when every part but the last
// has whole 16-row tiles, else each part in its own.
static void pack_bf16(as_weights *w) {
    bool stackable = w->n > 1;
    int64_t rows = 0;
    for (int i = 0; i < w->n; i++) stackable &= i == w->n - 1 || w->part[i].rows % 16 == 0, rows += w->part[i].rows;
    w->n_bf16 = stackable ? 1 : w->n;
    w->bf16 = as_calloc((size_t)w->n_bf16, sizeof *w->bf16);
    if (stackable) {
        const as_matrix *parts[KERNEL_WEIGHTS_MAX_PARTS];
        for (int i = 0; i < w->n; i++) parts[i] = &w->part[i];
        kernel_bf16_pack_matrices(w->bf16, parts, w->n);
        w->bf16_stack = w->part[0];
        w->bf16_stack.rows = rows, w->bf16_stack.packed = NULL, w->bf16_stack.bf16 = w->bf16;
    } else {
        for (int i = 0; i < w->n; i++) kernel_bf16_pack_matrix(&w->bf16[i], &w->part[i]), w->part[i].bf16 = &w->bf16[i];
    }
    for (int i = 0; i < w->n_bf16; i++) {
        const kernel_bf16_packed *p = &w->bf16[i];
        w->bf16_bytes += (size_t)p->Kp * (size_t)p->Np * (p->data ? 2 : 4);
    }
}

void kernel_weights_matmul(as_weights *w, float *out, int64_t ldo, const float *x, int64_t n_tokens, kernel_precision p) {
    if (p == KERNEL_PRECISION_Q8 && n_tokens >= KERNEL_PACK_MIN_TOKENS && !w->q8_tried) pack_q8(w);
    if (p == KERNEL_PRECISION_BF16 && !w->bf16) pack_bf16(w);
    const as_matrix *stack = NULL;
    if (p == KERNEL_PRECISION_BF16 && w->bf16_stack.bf16) stack = &w->bf16_stack;
    if (p == KERNEL_PRECISION_Q8 && n_tokens >= KERNEL_PACK_MIN_TOKENS && w->q8_stack.rows > 0) stack = &w->q8_stack;
    if (stack) {
        kernel_matmul(out, ldo, x, n_tokens, stack, p);
        return;
    }
    int64_t r0 = 0;
    for (int i = 0; i < w->n; i++) {
        kernel_matmul(out + r0, ldo, x, n_tokens, &w->part[i], p);
        r0 += w->part[i].rows;
    }
}
