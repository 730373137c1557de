// The registry of backends (backend.h) and the CPU backend's entry: the
// kernels of src/tensor, one variant per ISA this CPU has.
#include "tensor/backend.h"

#include <string.h>

#include "tensor/gemm.h"
#include "tensor/kernels_impl.h"
#include "tensor/ops.h"
#include "tensor/rope.h"
#include "tensor/train_ops.h"
#include "util/common.h"

// ---- the CPU backend ----

static const kernel_isa cpu_isas[] = {KERNEL_ISA_SCALAR, KERNEL_ISA_AVX2, KERNEL_ISA_AVX512, KERNEL_ISA_AMX};

static int cpu_n_variants(void) { return (int)AS_ARRAY_LEN(cpu_isas); }

static const char *cpu_variant_name(int i) { return i >= 0 && i < cpu_n_variants() ? kernel_isa_name(cpu_isas[i]) : "default"; }

static int cpu_use_variant(int i) {
    if (i < 0) return kernel_force_isa(KERNEL_ISA_AUTO);
    if (i >= cpu_n_variants() || !kernel_isa_available(cpu_isas[i])) return AS_FAIL;
    return kernel_force_isa(cpu_isas[i]);
}

const as_backend as_backend_cpu = {
    .name = "cpu",
    .n_variants = cpu_n_variants,
    .variant_name = cpu_variant_name,
    .use_variant = cpu_use_variant,
    .matmul = kernel_matmul,
    .get_row = kernel_get_row,
    .rmsnorm = kernel_rmsnorm,
    .glu = kernel_glu,
    .rope = kernel_rope,
    .attention_rows = kernel_attention_rows,
    .exp = kernel_exp,
    .argmax = kernel_argmax,
    .logprob = kernel_logprob,
    .add = kernel_add,
    .scale = kernel_scale,
    .weights_new = kernel_weights_new,
    .weights_free = kernel_weights_free,
    .weights_matmul = kernel_weights_matmul,
    .weights_bytes = kernel_weights_bytes,
    .kv_init = kernel_kv_init,
    .kv_release = kernel_kv_release,
    .kv_begin = kernel_kv_begin,
    .kv_store = kernel_kv_store,
    .kv_attention = kernel_kv_attention,
    .kv_copy_prefix = kernel_kv_copy_prefix,
    .sgemm = kernel_sgemm,
    .exp_shift_sum = train_exp_shift_sum,
    .max = train_max,
    .neg_scaled_exp = train_neg_scaled_exp,
    .silu_glu_forward = train_silu_glu_forward,
    .silu_glu_backward = train_silu_glu_backward,
};

// ---- the registry ----

static const as_backend *const backends[] = {&as_backend_cpu};

int as_backend_count(void) { return (int)AS_ARRAY_LEN(backends); }

const as_backend *as_backend_at(int i) { return i >= 0 && i < as_backend_count() ? backends[i] : NULL; }

const as_backend *as_backend_find(const char *name) {
    for (int i = 0; i < as_backend_count(); i++)
        if (!strcmp(backends[i]->name, name)) return backends[i];
    return NULL;
}
