// The registry of backends (backend.h), the CPU backend's entry (the kernels
// of src/tensor, one variant per ISA this CPU has), and the loader of the CUDA
// plugin (src/tensor/cuda), which is dlopened so that nothing links CUDA.
#include "tensor/backend.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tensor/gemm.h"
#include "tensor/kernels_impl.h"
#include "tensor/ops.h"
#include "tensor/rope.h"
#include "tensor/rows.h"
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
    .get_rows = kernel_get_rows,
    .rmsnorm = kernel_rmsnorm_rows,
    .glu = kernel_glu_rows,
    .rope = kernel_rope_rows,
    .attention_rows = kernel_attention_rows,
    .exp = kernel_exp,
    .argmax = kernel_argmax,
    .logprob = kernel_logprob,
    .logsumexp = kernel_logsumexp,
    .add = kernel_add_rows,
    .scale = kernel_scale,
    .buf_alloc = kernel_buf_alloc,
    .buf_free = kernel_buf_free,
    .sync = kernel_sync,
    .weights_new = kernel_weights_new,
    .weights_free = kernel_weights_free,
    .weights_matmul = kernel_weights_matmul,
    .weights_bytes = kernel_weights_bytes,
    .kv_init = kernel_kv_init,
    .kv_release = kernel_kv_release,
    .kv_begin = kernel_kv_begin,
    .kv_store = kernel_kv_store_rows,
    .kv_attention = kernel_kv_attention_rows,
    .kv_copy_prefix = kernel_kv_copy_prefix,
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
    .zero = train_zero,
    .gather_rows = train_gather_rows,
    .scale_rows = train_scale_rows,
    .dropout_forward = train_dropout_forward,
    .dropout_backward = train_dropout_backward,
    .lora_forward = train_lora_forward,
    .lora_backward = train_lora_backward,
    .gemm_bf16 = kernel_gemm_bf16,
    .bf16_pack_b = train_bf16_pack_b,
    .bf16_packed_free = train_bf16_packed_free,
    .gemm_bf16_packed = train_gemm_bf16_packed,
    .sum_squares = train_sum_squares,
    .grad_scale = train_scale,
    .adamw_update = train_adamw_update,
    .rmsprop_update = train_rmsprop_update,
    .sgd_update = train_sgd_update,
};

// ---- the CUDA plugin (src/tensor/cuda; docs/ARCHITECTURE.md "Adding a backend") ----

// Its entry point: the backend on CUDA device `device` (-1: the default), or
// NULL with one line in err.
typedef const as_backend *(*cuda_entry_fn)(int device, char *err, size_t n);

static pthread_once_t cuda_once = PTHREAD_ONCE_INIT;
static cuda_entry_fn cuda_entry;       // NULL when the plugin did not load
static char cuda_reason[512];          // why not, when not
static const as_backend *cuda_default; // the registry's CUDA backend, if usable

#define CUDA_PLUGIN_NAME "libalphaspin_cuda.so"

static void one_line(char *s) {
    for (; *s; s++)
        if (*s == '\n' || *s == '\r') *s = ' ';
}

// Loads the plugin at path; 1 when loaded, 0 (cuda_reason set) when not.
static int cuda_try(const char *path) {
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        e = e ? e : "unknown dlopen error";
        if (strstr(e, "libcudart")) snprintf(cuda_reason, sizeof cuda_reason, "libcudart not found: %s", e);
        else if (strstr(e, "libnccl"))
            snprintf(cuda_reason, sizeof cuda_reason,
                     "NCCL not found (libnccl.so.2, which this plugin links; set LD_LIBRARY_PATH, or build with -DALPHASPIN_NCCL=OFF): %s", e);
        else if (strstr(e, "libcublas"))
            snprintf(cuda_reason, sizeof cuda_reason, "cuBLAS not found (libcublas / libcublasLt; set LD_LIBRARY_PATH): %s", e);
        else snprintf(cuda_reason, sizeof cuda_reason, "cannot load the CUDA plugin: %s", e);
        return 0;
    }
    cuda_entry = (cuda_entry_fn)(uintptr_t)dlsym(h, "alphaspin_cuda_backend");
    if (!cuda_entry) {
        snprintf(cuda_reason, sizeof cuda_reason, "%s has no alphaspin_cuda_backend entry point", path);
        return 0;
    }
    return 1;
}

static void cuda_load(void) {
    const char *env = getenv("ALPHASPIN_CUDA_PLUGIN");
    char path[4096 + sizeof CUDA_PLUGIN_NAME + 1];
    int found = 0;
    if (env && *env) { // only this one when set
        if (access(env, R_OK) == 0) found = 1, cuda_try(env);
        else snprintf(cuda_reason, sizeof cuda_reason, "plugin not found: ALPHASPIN_CUDA_PLUGIN=%s: %s", env, strerror(errno));
    } else {
        char exe[4096];
        const ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
        if (n > 0) {
            exe[n] = 0;
            char *slash = strrchr(exe, '/');
            if (slash) {
                *slash = 0;
                snprintf(path, sizeof path, "%s/%s", exe, CUDA_PLUGIN_NAME);
                if (access(path, R_OK) == 0) found = 1, cuda_try(path);
            }
        }
#ifdef ALPHASPIN_CUDA_PLUGIN_BUILD
        if (!found && access(ALPHASPIN_CUDA_PLUGIN_BUILD, R_OK) == 0) found = 1, cuda_try(ALPHASPIN_CUDA_PLUGIN_BUILD);
#endif
        if (!found)
            snprintf(cuda_reason, sizeof cuda_reason,
                     "plugin not built: no " CUDA_PLUGIN_NAME " next to the executable or in the build (configure with nvcc found and "
                     "ALPHASPIN_CUDA=ON, or set ALPHASPIN_CUDA_PLUGIN)");
    }
    one_line(cuda_reason);
}

// The plugin's backend on device `dev` (-1: the one in use, else 0), or NULL
// with why in err.
static const as_backend *cuda_open(int dev, char *err, size_t n) {
    pthread_once(&cuda_once, cuda_load);
    if (!cuda_entry) return snprintf(err, n, "%s", cuda_reason), NULL;
    const as_backend *b = cuda_entry(dev, err, n);
    if (!b && !*err) snprintf(err, n, "the CUDA plugin gave no reason");
    one_line(err);
    return b;
}

// The registry's CUDA entry, asked for once (the device in use, else 0).
static pthread_once_t cuda_registry_once = PTHREAD_ONCE_INIT;
static char cuda_registry_reason[512];
static void cuda_registry(void) { cuda_default = cuda_open(-1, cuda_registry_reason, sizeof cuda_registry_reason); }
static void cuda_init(void) { pthread_once(&cuda_registry_once, cuda_registry); }

const char *as_backend_cuda_status(void) {
    cuda_init();
    return cuda_default ? NULL : cuda_registry_reason;
}

// ---- the registry ----

int as_backend_count(void) {
    cuda_init();
    return cuda_default ? 2 : 1;
}

const as_backend *as_backend_at(int i) {
    if (i < 0 || i >= as_backend_count()) return NULL;
    return i == 0 ? &as_backend_cpu : cuda_default;
}

const as_backend *as_backend_find(const char *name) {
    for (int i = 0; i < as_backend_count(); i++)
        if (!strcmp(as_backend_at(i)->name, name)) return as_backend_at(i);
    return NULL;
}

const as_backend *as_backend_open(const char *spec) {
    if (!spec || !*spec) return as_error("device: empty (expected cpu, cuda or cuda:N)"), NULL;
    if (!strcmp(spec, "cpu")) return &as_backend_cpu;
    int dev = -1;
    if (!strncmp(spec, "cuda:", 5)) {
        const char *p = spec + 5;
        long v = 0;
        if (!*p || strlen(p) > 4) return as_error("device %s: expected cuda:N with N a device index", spec), NULL;
        for (; *p; p++) {
            if (*p < '0' || *p > '9') return as_error("device %s: expected cuda:N with N a device index", spec), NULL;
            v = v * 10 + (*p - '0');
        }
        dev = (int)v;
    } else if (strcmp(spec, "cuda")) return as_error("device %s: unknown (expected cpu, cuda or cuda:N)", spec), NULL;
    char err[512] = "";
    const as_backend *b = cuda_open(dev, err, sizeof err);
    if (!b) return as_error("device %s: %s", spec, err), NULL;
    return b;
}

const as_backend *as_backend_mem(const as_backend *be) { return be && be->buf_alloc && be->buf_free ? be : &as_backend_cpu; }

bool as_backend_same_mem(const as_backend *a, const as_backend *b) {
    a = as_backend_mem(a), b = as_backend_mem(b);
    return a->buf_alloc == b->buf_alloc && a->buf_free == b->buf_free;
}

void *as_buf_move(const as_backend *from, const as_backend *to, void *p, size_t bytes) {
    if (!p || as_backend_same_mem(from, to)) return p;
    from = as_backend_mem(from), to = as_backend_mem(to);
    if (from->sync) from->sync();
    void *q = to->buf_alloc(bytes);
    memcpy(q, p, bytes);
    from->buf_free(p);
    return q;
}

int as_backend_error(const as_backend *be, const char *fmt, ...) {
    if (!be->last_error) return AS_FAIL;
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    const char *why = be->last_error();
    return as_error("%s: %s", what, why && *why ? why : "(no reason given)");
}

// ---- completeness ----

const char *as_backend_missing(const as_backend *be, unsigned groups) {
#define OP(f) {#f, (const void *)be->f}
    const struct { const char *name; const void *fn; } inference[] = {
        OP(n_variants), OP(variant_name), OP(use_variant), OP(matmul), OP(get_rows), OP(rmsnorm), OP(glu), OP(rope),
        OP(attention_rows), OP(exp), OP(argmax), OP(logprob), OP(logsumexp), OP(add), OP(scale), OP(buf_alloc), OP(buf_free), OP(sync), OP(weights_new), OP(weights_free),
        OP(weights_matmul), OP(weights_bytes), OP(kv_init), OP(kv_release), OP(kv_begin), OP(kv_store), OP(kv_attention),
        OP(kv_copy_prefix),
    }, training[] = {
        OP(sgemm), OP(exp_shift_sum), OP(max), OP(neg_scaled_exp), OP(silu_glu_forward), OP(silu_glu_backward),
        OP(embedding_forward), OP(embedding_backward), OP(linear_forward), OP(linear_backward), OP(rmsnorm_forward),
        OP(rmsnorm_backward), OP(rope_forward), OP(rope_backward), OP(attention_forward), OP(attention_backward), OP(glu_forward),
        OP(glu_backward), OP(logsoftmax_forward), OP(logsoftmax_backward), OP(residual_forward), OP(zero), OP(gather_rows), OP(scale_rows), OP(dropout_forward),
        OP(dropout_backward), OP(lora_forward), OP(lora_backward), OP(gemm_bf16), OP(bf16_pack_b), OP(bf16_packed_free),
        OP(gemm_bf16_packed), OP(sum_squares), OP(grad_scale), OP(adamw_update), OP(rmsprop_update), OP(sgd_update),
    };
#undef OP
    if (groups & AS_BACKEND_INFERENCE)
        for (size_t i = 0; i < AS_ARRAY_LEN(inference); i++)
            if (!inference[i].fn) return inference[i].name;
    if (groups & AS_BACKEND_TRAINING)
        for (size_t i = 0; i < AS_ARRAY_LEN(training); i++)
            if (!training[i].fn) return training[i].name;
    return NULL;
}
