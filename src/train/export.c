// GGUF export and LoRA merging (see export.h).
#include "train/export.h"

#include <cjson/cJSON.h>
#include <string.h>

#include "model/model_hf.h"
#include "tensor/quant.h"
#include "tokenizer/tokenizer_hf.h"
#include "train/layout.h"
#include "model/safetensors.h"
#include "util/common.h"

// llama.cpp's llama_ftype values for general.file_type.
static int file_type_of(ggml_type t) {
    switch (t) {
    case GGML_TYPE_F32: return 0;   // LLAMA_FTYPE_ALL_F32
    case GGML_TYPE_F16: return 1;   // LLAMA_FTYPE_MOSTLY_F16
    case GGML_TYPE_Q8_0: return 7;  // LLAMA_FTYPE_MOSTLY_Q8_0
    case GGML_TYPE_BF16: return 32; // LLAMA_FTYPE_MOSTLY_BF16
    default: return -1;
    }
}

// Copies one metadata pair of src (strings and arrays included) into w.
static void copy_kv(gguf_writer *w, const gguf_file *src, int64_t i) {
    const gguf_kv *kv = &src->kv[i];
    char *key = gguf_str_dup(kv->key);
    if (kv->type == GGUF_TYPE_STRING) {
        char *v = gguf_str_dup(kv->str);
        gguf_write_str(w, key, v);
        free(v);
    } else if (kv->type == GGUF_TYPE_ARRAY && kv->arr_type == GGUF_TYPE_STRING) {
        char **strs = as_malloc(sizeof(char *) * (size_t)AS_MAX(kv->n, (uint64_t)1));
        for (uint64_t j = 0; j < kv->n; j++) strs[j] = gguf_str_dup(gguf_arr_str(src, i, j));
        gguf_write_arr_str(w, key, (const char *const *)strs, kv->n);
        for (uint64_t j = 0; j < kv->n; j++) free(strs[j]);
        free(strs);
    } else if (kv->type == GGUF_TYPE_ARRAY) {
        gguf_write_arr(w, key, kv->arr_type, kv->data, kv->n);
    } else {
        gguf_write_val(w, key, kv->type, kv->data);
    }
    free(key);
}

static void write_config(gguf_writer *w, const model_config *c, ggml_type type) {
    gguf_write_str(w, "general.architecture", c->arch_name);
    gguf_write_u32(w, "general.file_type", (uint32_t)file_type_of(type));
    model_config_write_gguf(w, c);
}

static void write_matrix(gguf_writer *w, const char *name, const float *x, int64_t rows, int64_t cols, ggml_type type) {
    if (type == GGML_TYPE_Q8_0 && cols % QK8_0) type = GGML_TYPE_F16;
    const size_t row_bytes = quant_row_size(type, cols);
    uint8_t *buf = as_malloc(row_bytes * (size_t)rows);
    for (int64_t r = 0; r < rows; r++) quant_quantize_row(type, x + r * cols, buf + (size_t)r * row_bytes, cols);
    gguf_write_tensor(w, name, type, 2, (int64_t[]){cols, rows}, buf, row_bytes * (size_t)rows);
    free(buf);
}

static void write_vector(gguf_writer *w, const char *name, const float *x, int64_t n) {
    gguf_write_tensor(w, name, GGML_TYPE_F32, 1, &n, x, sizeof(float) * (size_t)n);
}

int train_export_gguf(const train_model *m, const char *meta_src, const char *path, ggml_type type) {
    if (file_type_of(type) < 0) return as_error("%s: export type %s is not supported (F32, F16, BF16, Q8_0)", path, ggml_type_name(type));
    gguf_file *src = NULL;
    if (meta_src && model_open_meta(&src, meta_src)) return AS_FAIL;
    gguf_writer *w = gguf_writer_init();
    for (uint64_t i = 0; src && i < src->n_kv; i++) {
        if (gguf_str_eq(src->kv[i].key, "general.alignment")) continue; // the writer's own
        copy_kv(w, src, (int64_t)i);
    }
    gguf_close(src);
    const model_config *c = &m->cfg;
    write_config(w, c, type);
    const train_params *p = &m->params;
    const int64_t C = c->n_embd, qd = (int64_t)c->n_head * c->head_dim, kvd = (int64_t)c->n_head_kv * c->head_dim, F = c->n_ff;
    write_matrix(w, "token_embd.weight", p->tok_embd, c->n_vocab, C, type);
    if (!c->tied_output) write_matrix(w, "output.weight", p->output, c->n_vocab, C, type);
    write_vector(w, "output_norm.weight", p->output_norm, C);
    if (m->rope_freqs) write_vector(w, "rope_freqs.weight", m->rope_freqs, c->n_rot / 2);
    char name[96];
    for (int l = 0; l < c->n_layer; l++) {
#define BLK(s) (snprintf(name, sizeof name, "blk.%d." s ".weight", l), name)
        write_vector(w, BLK("attn_norm"), p->attn_norm + l * C, C);
        write_matrix(w, BLK("attn_q"), p->wq + l * qd * C, qd, C, type);
        write_matrix(w, BLK("attn_k"), p->wk + l * kvd * C, kvd, C, type);
        write_matrix(w, BLK("attn_v"), p->wv + l * kvd * C, kvd, C, type);
        write_matrix(w, BLK("attn_output"), p->wo + l * C * qd, C, qd, type);
        write_vector(w, BLK("ffn_norm"), p->ffn_norm + l * C, C);
        write_matrix(w, BLK("ffn_gate"), p->w_gate + l * F * C, F, C, type);
        write_matrix(w, BLK("ffn_up"), p->w_up + l * F * C, F, C, type);
        write_matrix(w, BLK("ffn_down"), p->w_down + l * C * F, C, F, type);
#undef BLK
    }
    const int rc = gguf_writer_save(w, path);
    gguf_writer_free(w);
    return rc;
}

// ---- Hugging Face folder ----

// A matrix in HF row order (llama q/k un-permuted): a copy owned by `keep`.
static const float *hf_matrix(const float *x, int64_t rows, int64_t cols, int64_t d, bool unpermute, float **keep) {
    if (!unpermute) return x;
    float *y = *keep = as_malloc(sizeof(float) * (size_t)(rows * cols));
    for (int64_t r = 0; r < rows; r++) memcpy(y + train_hf_row(r, d) * cols, x + r * cols, sizeof(float) * (size_t)cols);
    return y;
}

// A float32 config value as the decimal a person would write (1e-05, not 9.99999974737875e-06).
static double short_decimal(float v) {
    char buf[32];
    snprintf(buf, sizeof buf, "%.7g", (double)v);
    return strtod(buf, NULL);
}

int train_export_hf(const train_model *m, const char *meta_src, const char *dir) {
    const model_config *c = &m->cfg;
    const bool gemma = c->arch == MODEL_ARCH_GEMMA, llama = c->arch == MODEL_ARCH_LLAMA;
    if (m->rope_freqs)
        return as_error("%s: Llama-3 RoPE factors (rope_freqs) cannot be turned back into transformers' rope_scaling; not exported", dir);
    if (c->n_rot != c->head_dim) return as_error("%s: partial rotary embedding (%d of %d dims) has no transformers equivalent", dir, c->n_rot, c->head_dim);
    uint32_t bos = 0, eos = 0;
    bool have_bos = false, have_eos = false;
    gguf_file *src = NULL;
    if (meta_src) {
        if (model_open_meta(&src, meta_src)) return AS_FAIL;
        have_bos = gguf_find_key(src, "tokenizer.ggml.bos_token_id") >= 0 && !gguf_get_u32(src, "tokenizer.ggml.bos_token_id", &bos);
        have_eos = gguf_find_key(src, "tokenizer.ggml.eos_token_id") >= 0 && !gguf_get_u32(src, "tokenizer.ggml.eos_token_id", &eos);
    }
    // The tokenizer files first: a tokenizer without a Hugging Face form stops the export before any weights are written.
    const bool tok = src && gguf_find_key(src, "tokenizer.ggml.model") >= 0;
    if (as_mkdir_p(dir) || (tok && tokenizer_hf_write(src, dir))) {
        gguf_close(src);
        return AS_FAIL;
    }
    gguf_close(src);
    const train_params *p = &m->params;
    const int64_t L = c->n_layer, C = c->n_embd, V = c->n_vocab, F = c->n_ff, d = c->head_dim;
    const int64_t qd = (int64_t)c->n_head * d, kvd = (int64_t)c->n_head_kv * d;
    // Norm vectors: GGUF (and our parameters) hold the multiplier; Gemma's HF weight is multiplier - 1.
    const int64_t n_norm = (2 * L + 1) * C;
    float *norms = as_malloc(sizeof(float) * (size_t)n_norm);
    const float shift = gemma ? 1.0f : 0.0f;
    for (int64_t i = 0; i < L * C; i++) norms[i] = p->attn_norm[i] - shift, norms[L * C + i] = p->ffn_norm[i] - shift;
    for (int64_t i = 0; i < C; i++) norms[2 * L * C + i] = p->output_norm[i] - shift;
    float **keep = as_calloc((size_t)(2 * L), sizeof(float *));
    st_writer *w = st_writer_init();
    st_writer_set_metadata(w, "format", "pt");
    st_writer_add_f32(w, "model.embed_tokens.weight", 2, (int64_t[]){V, C}, p->tok_embd);
    if (!c->tied_output) st_writer_add_f32(w, "lm_head.weight", 2, (int64_t[]){V, C}, p->output);
    st_writer_add_f32(w, "model.norm.weight", 1, (int64_t[]){C}, norms + 2 * L * C);
    char name[128];
    for (int64_t l = 0; l < L; l++) {
#define T(s) (snprintf(name, sizeof name, "model.layers.%d." s ".weight", (int)l), name)
        st_writer_add_f32(w, T("input_layernorm"), 1, (int64_t[]){C}, norms + l * C);
        st_writer_add_f32(w, T("post_attention_layernorm"), 1, (int64_t[]){C}, norms + L * C + l * C);
        st_writer_add_f32(w, T("self_attn.q_proj"), 2, (int64_t[]){qd, C}, hf_matrix(p->wq + l * qd * C, qd, C, d, llama, &keep[2 * l]));
        st_writer_add_f32(w, T("self_attn.k_proj"), 2, (int64_t[]){kvd, C}, hf_matrix(p->wk + l * kvd * C, kvd, C, d, llama, &keep[2 * l + 1]));
        st_writer_add_f32(w, T("self_attn.v_proj"), 2, (int64_t[]){kvd, C}, p->wv + l * kvd * C);
        st_writer_add_f32(w, T("self_attn.o_proj"), 2, (int64_t[]){C, qd}, p->wo + l * C * qd);
        st_writer_add_f32(w, T("mlp.gate_proj"), 2, (int64_t[]){F, C}, p->w_gate + l * F * C);
        st_writer_add_f32(w, T("mlp.up_proj"), 2, (int64_t[]){F, C}, p->w_up + l * F * C);
        st_writer_add_f32(w, T("mlp.down_proj"), 2, (int64_t[]){C, F}, p->w_down + l * C * F);
#undef T
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    int rc = st_writer_save(w, path);
    st_writer_free(w);
    for (int64_t i = 0; i < 2 * L; i++) free(keep[i]);
    free(keep), free(norms);
    if (rc) return AS_FAIL;

    cJSON *j = cJSON_CreateObject();
    cJSON *arch = cJSON_AddArrayToObject(j, "architectures");
    cJSON_AddItemToArray(arch, cJSON_CreateString(gemma ? "GemmaForCausalLM" : "LlamaForCausalLM"));
    cJSON_AddStringToObject(j, "model_type", gemma ? "gemma" : "llama");
    cJSON_AddNumberToObject(j, "vocab_size", (double)V);
    cJSON_AddNumberToObject(j, "hidden_size", (double)C);
    cJSON_AddNumberToObject(j, "intermediate_size", (double)F);
    cJSON_AddNumberToObject(j, "num_hidden_layers", (double)L);
    cJSON_AddNumberToObject(j, "num_attention_heads", (double)c->n_head);
    cJSON_AddNumberToObject(j, "num_key_value_heads", (double)c->n_head_kv);
    cJSON_AddNumberToObject(j, "head_dim", (double)d);
    cJSON_AddNumberToObject(j, "max_position_embeddings", (double)c->n_ctx_train);
    cJSON_AddNumberToObject(j, "rms_norm_eps", short_decimal(c->rms_eps));
    // transformers 5 reads rope_parameters, 4.x rope_theta: both.
    cJSON_AddNumberToObject(j, "rope_theta", short_decimal(c->rope_theta));
    cJSON *rp = cJSON_AddObjectToObject(j, "rope_parameters");
    cJSON_AddNumberToObject(rp, "rope_theta", short_decimal(c->rope_theta));
    cJSON_AddStringToObject(rp, "rope_type", "default");
    cJSON_AddBoolToObject(j, "tie_word_embeddings", c->tied_output);
    cJSON_AddStringToObject(j, "hidden_act", gemma ? "gelu_pytorch_tanh" : "silu");
    if (gemma) cJSON_AddStringToObject(j, "hidden_activation", "gelu_pytorch_tanh");
    cJSON_AddBoolToObject(j, "attention_bias", false);
    if (!gemma) cJSON_AddBoolToObject(j, "mlp_bias", false);
    if (have_bos) cJSON_AddNumberToObject(j, "bos_token_id", (double)bos);
    if (have_eos) cJSON_AddNumberToObject(j, "eos_token_id", (double)eos);
    cJSON_AddStringToObject(j, "dtype", "float32");
    cJSON_AddStringToObject(j, "torch_dtype", "float32");
    char *json = cJSON_Print(j);
    cJSON_Delete(j);
    snprintf(path, sizeof path, "%s/config.json", dir);
    rc = as_write_file_atomic(path, json, strlen(json));
    free(json);
    if (rc || !(have_bos || have_eos)) return rc;
    // generation_config.json: the ids generation starts from and stops at.
    j = cJSON_CreateObject();
    if (have_bos) cJSON_AddNumberToObject(j, "bos_token_id", (double)bos);
    if (have_eos) cJSON_AddNumberToObject(j, "eos_token_id", (double)eos);
    json = cJSON_Print(j);
    cJSON_Delete(j);
    snprintf(path, sizeof path, "%s/generation_config.json", dir);
    rc = as_write_file_atomic(path, json, strlen(json));
    free(json);
    return rc;
}

int train_lora_merge(train_model *m) {
    train_lora *lo = m->lora;
    if (!lo) return as_error("train_lora_merge: the model has no adapters");
    const model_config *c = &m->cfg;
    const int64_t L = c->n_layer, r = lo->cfg.rank;
    float *base[TRAIN_LORA_N_TARGETS] = {m->params.wq, m->params.wk, m->params.wv, m->params.wo, m->params.w_gate, m->params.w_up, m->params.w_down};
    for (int t = 0; t < TRAIN_LORA_N_TARGETS; t++) {
        if (!lo->a[t]) continue;
        const int64_t in = lo->in[t], out = lo->out[t];
        for (int64_t l = 0; l < L; l++)
            // W (out x in) += s B (out x r) A (r x in)
            m->be->sgemm(false, false, out, in, r, lo->scale, lo->b[t] + l * out * r, r, lo->a[t] + l * r * in, in, 1.0f,
                         base[t] + l * out * in, in, m->n_threads);
    }
    train_lora_detach(m);
    return AS_OK;
}
