// The registry of backends (backend.h) and the CPU backend's entry: the
// kernels of src/tensor, one variant per ISA this CPU has.
#include "tensor/backend.h"

#include <string.h>

#include "tensor/gemm.h"
#include "tensor/kernels_impl.h"
#include "tensor/ops.h"
#include "tensor/rope.h"
#include "tensor/train_graph.h"
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
    .sgemm = kernel_sgemm,
    .exp_shift_sum = train_exp_shift_sum,
    .max = train_max,
    .neg_scaled_exp = train_neg_scaled_exp,
    .silu_glu_forward = train_silu_glu_forward,
    .silu_glu_backward = train_silu_glu_backward,
    // ---- training graph (forward/backward pairs, LoRA, dropout, optimizer) ----
    .embedding_forward = train_embedding_forward,
    .embedding_backward = train_embedding_backward,
    .linear_forward = train_linear_forward,
    .linear_backward = train_linear_backward,
    .rmsnorm_forward = train_rmsnorm_forward,
    .rmsnorm_backward = train_rmsnorm_backward,
    .rope_forward = train_rope_forward,
    .rope_backward = train_rope_backward,
    .attention_forward = train_attention_forward,
    .attention_backward = train_attention_backward,
    .glu_forward = train_glu_forward,
    .glu_backward = train_glu_backward,
    .logsoftmax_forward = train_logsoftmax_forward,
    .logsoftmax_backward = train_logsoftmax_backward,
    .residual_forward = train_residual_forward,
    .dropout_forward = train_dropout_forward,
    .dropout_backward = train_dropout_backward,
    .lora_forward = train_lora_forward,
    .lora_backward = train_lora_backward,
    .gemm_bf16 = kernel_gemm_bf16,
    .bf16_pack_b = train_bf16_pack_b,
    .bf16_packed_free = train_bf16_packed_free,
    .gemm_bf16_packed = train_gemm_bf16_packed,
    .sum_squares = train_sum_squares,
    .scale = train_scale,
    .adamw_update = train_adamw_update,
    .rmsprop_update = train_rmsprop_update,
    .sgd_update = train_sgd_update,
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
