// Hugging Face model folders as in-memory GGUF images (see model_hf.h).
#include "model/model_hf.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model/safetensors.h"
#include "tokenizer/tokenizer_hf.h"
#include "util/common.h"

#define HF_MAX_SHARDS 256
#define HF_MAX_DIM (1 << 24)

bool model_path_is_dir(const char *path) {
    struct stat st;
    return path && stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

// ---- config.json ----

static int json_int(const cJSON *c, const char *key, bool required, int32_t def, int32_t *out, const char *path) {
    const cJSON *v = cJSON_GetObjectItem(c, key);
    if (!v || cJSON_IsNull(v)) {
        if (required) return as_error("%s: %s is missing", path, key);
        *out = def;
        return AS_OK;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble < 1 || v->valuedouble > HF_MAX_DIM || v->valuedouble != (double)(int32_t)v->valuedouble)
        return as_error("%s: %s: expected an integer in [1, %d]", path, key, HF_MAX_DIM);
    *out = (int32_t)v->valuedouble;
    return AS_OK;
}

int model_hf_parse_config(model_config *c, const char *json, size_t len, const char *path) {
    cJSON *j = cJSON_ParseWithLength(json, len);
    int rc = AS_FAIL;
    memset(c, 0, sizeof *c);
    if (!cJSON_IsObject(j)) {
        as_error("%s: not a JSON object", path);
        goto done;
    }
    const cJSON *mt = cJSON_GetObjectItem(j, "model_type");
    if (cJSON_IsString(mt) && !strcmp(mt->valuestring, "llama")) c->arch = MODEL_ARCH_LLAMA;
    else if (cJSON_IsString(mt) && !strcmp(mt->valuestring, "gemma")) c->arch = MODEL_ARCH_GEMMA;
    else {
        as_error("%s: model_type '%.64s' is not supported (llama, gemma)", path, cJSON_IsString(mt) ? mt->valuestring : "?");
        goto done;
    }
    const bool gemma = c->arch == MODEL_ARCH_GEMMA;
    snprintf(c->arch_name, sizeof c->arch_name, "%s", gemma ? "gemma" : "llama");
    if (json_int(j, "vocab_size", true, 0, &c->n_vocab, path) || json_int(j, "hidden_size", true, 0, &c->n_embd, path) ||
        json_int(j, "intermediate_size", true, 0, &c->n_ff, path) || json_int(j, "num_hidden_layers", true, 0, &c->n_layer, path) ||
        json_int(j, "num_attention_heads", true, 0, &c->n_head, path) ||
        json_int(j, "num_key_value_heads", false, c->n_head, &c->n_head_kv, path) ||
        json_int(j, "max_position_embeddings", false, 2048, &c->n_ctx_train, path))
        goto done;
    if (c->n_head % c->n_head_kv) {
        as_error("%s: num_attention_heads %d is not a multiple of num_key_value_heads %d", path, c->n_head, c->n_head_kv);
        goto done;
    }
    const cJSON *hd = cJSON_GetObjectItem(j, "head_dim");
    if (c->n_embd % c->n_head && (!hd || cJSON_IsNull(hd))) {
        as_error("%s: hidden_size %d is not a multiple of num_attention_heads %d and head_dim is absent", path, c->n_embd, c->n_head);
        goto done;
    }
    if (json_int(j, "head_dim", false, c->n_embd / c->n_head, &c->head_dim, path)) goto done;
    if (c->head_dim % 2) {
        as_error("%s: head_dim %d: expected an even number (rotary pairs)", path, c->head_dim);
        goto done;
    }
    c->n_rot = c->head_dim;
    const cJSON *eps = cJSON_GetObjectItem(j, "rms_norm_eps");
    c->rms_eps = cJSON_IsNumber(eps) ? (float)eps->valuedouble : 1e-6f;
    if (!(c->rms_eps > 0.0f && c->rms_eps < 1.0f)) {
        as_error("%s: rms_norm_eps: expected a value in (0, 1)", path);
        goto done;
    }
    // transformers 5 writes rope_parameters.rope_theta, 4.x rope_theta.
    const cJSON *rp = cJSON_GetObjectItem(j, "rope_parameters"), *th = cJSON_GetObjectItem(j, "rope_theta");
    if (cJSON_IsObject(rp) && cJSON_IsNumber(cJSON_GetObjectItem(rp, "rope_theta"))) th = cJSON_GetObjectItem(rp, "rope_theta");
    c->rope_theta = cJSON_IsNumber(th) ? (float)th->valuedouble : 10000.0f;
    if (!(c->rope_theta > 1.0f) || !isfinite(c->rope_theta)) {
        as_error("%s: rope_theta: expected a finite value > 1", path);
        goto done;
    }
    // Scaled RoPE (linear, dynamic, YaRN, llama3) changes the frequencies: refuse rather than be subtly wrong.
    const cJSON *rs = cJSON_GetObjectItem(j, "rope_scaling"), *rt = cJSON_IsObject(rp) ? cJSON_GetObjectItem(rp, "rope_type") : NULL;
    if ((rs && !cJSON_IsNull(rs)) || (cJSON_IsString(rt) && strcmp(rt->valuestring, "default"))) {
        as_error("%s: scaled RoPE (rope_scaling / rope_type) is not supported", path);
        goto done;
    }
    const cJSON *act = cJSON_GetObjectItem(j, gemma ? "hidden_activation" : "hidden_act");
    if (gemma && !cJSON_IsString(act)) act = cJSON_GetObjectItem(j, "hidden_act");
    const char *a = cJSON_IsString(act) ? act->valuestring : (gemma ? "gelu_pytorch_tanh" : "silu");
    if (gemma ? strcmp(a, "gelu_pytorch_tanh") && strcmp(a, "gelu") : strcmp(a, "silu")) {
        as_error("%s: activation '%.64s' is not supported for %s", path, a, c->arch_name);
        goto done;
    }
    const cJSON *bias = cJSON_GetObjectItem(j, "attention_bias"), *mb = cJSON_GetObjectItem(j, "mlp_bias");
    if (cJSON_IsTrue(bias) || cJSON_IsTrue(mb)) {
        as_error("%s: attention_bias / mlp_bias are not supported", path);
        goto done;
    }
    const cJSON *tie = cJSON_GetObjectItem(j, "tie_word_embeddings");
    c->tied_output = tie ? cJSON_IsTrue(tie) : gemma; // transformers' defaults: llama untied, gemma tied
    c->rope_neox = gemma;                              // llama rows are permuted into GGUF order
    c->gelu = gemma;
    c->emb_scale = gemma ? sqrtf((float)c->n_embd) : 1.0f;
    rc = AS_OK;
done:
    cJSON_Delete(j);
    return rc;
}

static int read_config(const char *dir, model_config *c) {
    char path[4096], *text;
    size_t len;
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (as_read_file(path, &text, &len)) return AS_FAIL;
    const int rc = model_hf_parse_config(c, text, len, path);
    free(text);
    return rc;
}

// The <arch>.* keys of llama.cpp for c (model.h).
void model_config_write_gguf(gguf_writer *w, const model_config *c) {
    char key[128];
#define K(suffix) (snprintf(key, sizeof key, "%s." suffix, c->arch_name), key)
    gguf_write_u32(w, K("context_length"), (uint32_t)c->n_ctx_train);
    gguf_write_u32(w, K("embedding_length"), (uint32_t)c->n_embd);
    gguf_write_u32(w, K("block_count"), (uint32_t)c->n_layer);
    gguf_write_u32(w, K("feed_forward_length"), (uint32_t)c->n_ff);
    gguf_write_u32(w, K("attention.head_count"), (uint32_t)c->n_head);
    gguf_write_u32(w, K("attention.head_count_kv"), (uint32_t)c->n_head_kv);
    gguf_write_u32(w, K("attention.key_length"), (uint32_t)c->head_dim);
    gguf_write_u32(w, K("attention.value_length"), (uint32_t)c->head_dim);
    gguf_write_f32(w, K("attention.layer_norm_rms_epsilon"), c->rms_eps);
    gguf_write_f32(w, K("rope.freq_base"), c->rope_theta);
    gguf_write_u32(w, K("rope.dimension_count"), (uint32_t)c->n_rot);
#undef K
}

static void write_arch(gguf_writer *w, const model_config *c) {
    char key[128];
    gguf_write_str(w, "general.architecture", c->arch_name);
    model_config_write_gguf(w, c);
    snprintf(key, sizeof key, "%s.vocab_size", c->arch_name);
    gguf_write_u32(w, key, (uint32_t)c->n_vocab);
}

int model_hf_write_meta(gguf_writer *w, const char *dir, model_config *cfg) {
    if (read_config(dir, cfg)) return AS_FAIL;
    write_arch(w, cfg);
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    if (access(path, F_OK)) return AS_OK; // weights only; tokenizer_load will say what is missing
    return tokenizer_hf_read(w, dir, cfg->n_vocab);
}

// ---- weights ----

typedef struct hf_shards {
    st_file *f[HF_MAX_SHARDS];
    int n;
} hf_shards;

static void shards_close(hf_shards *h) {
    for (int i = 0; i < h->n; i++) st_close(h->f[i]);
    h->n = 0;
}

static const st_tensor *shards_find(const hf_shards *h, const char *name) {
    for (int i = 0; i < h->n; i++) {
        const st_tensor *t = st_find(h->f[i], name);
        if (t) return t;
    }
    return NULL;
}

// model.safetensors, or the shards named by model.safetensors.index.json.
static int shards_open(const char *dir, hf_shards *h) {
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    if (access(path, F_OK)) {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        if (st_open(&h->f[0], path)) return AS_FAIL;
        h->n = 1;
        return AS_OK;
    }
    char *text;
    size_t len;
    if (as_read_file(path, &text, &len)) return AS_FAIL;
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *wm = cJSON_IsObject(j) ? cJSON_GetObjectItem(j, "weight_map") : NULL;
    if (!cJSON_IsObject(wm)) {
        cJSON_Delete(j);
        return as_error("%s: expected an object weight_map", path);
    }
    const cJSON *e;
    int rc = AS_OK;
    char names[HF_MAX_SHARDS][256];
    cJSON_ArrayForEach(e, wm) {
        if (!cJSON_IsString(e) || strchr(e->valuestring, '/') || !strcmp(e->valuestring, "..") || strlen(e->valuestring) >= 256) {
            rc = as_error("%s: weight_map entry %.64s: expected a file name in the folder", path, e->string);
            break;
        }
        bool seen = false;
        for (int i = 0; i < h->n && !seen; i++) seen = !strcmp(names[i], e->valuestring);
        if (seen) continue;
        if (h->n == HF_MAX_SHARDS) {
            rc = as_error("%s: more than %d shards", path, HF_MAX_SHARDS);
            break;
        }
        snprintf(names[h->n], sizeof names[h->n], "%s", e->valuestring);
        char sp[4400];
        snprintf(sp, sizeof sp, "%s/%s", dir, e->valuestring);
        if (st_open(&h->f[h->n], sp)) {
            rc = AS_FAIL;
            break;
        }
        h->n++;
    }
    cJSON_Delete(j);
    return rc;
}

static ggml_type ggml_of(st_dtype t) { return t == ST_F32 ? GGML_TYPE_F32 : t == ST_F16 ? GGML_TYPE_F16 : GGML_TYPE_BF16; }
static size_t elem_size(st_dtype t) { return t == ST_F32 ? 4 : 2; }

// HF row of GGUF row r for llama's q/k (train/layout.h; convert_hf_to_gguf's permute).
static int64_t hf_row(int64_t r, int64_t d) {
    const int64_t h = r / d, w = r % d, i = w / 2, j = w % 2;
    return h * d + j * (d / 2) + i;
}

// Matrix `hf` (rows x cols) in its stored type as GGUF tensor `name`, rows
// permuted into GGUF order when d > 0.
static int put_matrix(gguf_writer *w, const hf_shards *h, const char *dir, const char *hf, const char *name, int64_t rows, int64_t cols,
                      int64_t d) {
    const st_tensor *t = shards_find(h, hf);
    if (!t) return as_error("%s: tensor %s is missing", dir, hf);
    if (!(t->n_dims == 2 && t->shape[0] == rows && t->shape[1] == cols))
        return as_error("%s: tensor %s: expected shape [%lld, %lld]", dir, hf, (long long)rows, (long long)cols);
    if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16) return as_error("%s: tensor %s: expected F32, F16 or BF16 weights", dir, hf);
    const size_t es = elem_size(t->dtype), row = es * (size_t)cols;
    const int64_t ne[2] = {cols, rows};
    if (d <= 0) {
        gguf_write_tensor(w, name, ggml_of(t->dtype), 2, ne, t->data, row * (size_t)rows);
        return AS_OK;
    }
    uint8_t *p = as_malloc(row * (size_t)rows);
    for (int64_t r = 0; r < rows; r++) memcpy(p + (size_t)r * row, (const uint8_t *)t->data + (size_t)hf_row(r, d) * row, row);
    gguf_write_tensor(w, name, ggml_of(t->dtype), 2, ne, p, row * (size_t)rows);
    free(p);
    return AS_OK;
}

// Norm vector as F32, plus `add` (Gemma's 1 + w).
static int put_norm(gguf_writer *w, const hf_shards *h, const char *dir, const char *hf, const char *name, int64_t n, float add) {
    const st_tensor *t = shards_find(h, hf);
    if (!t) return as_error("%s: tensor %s is missing", dir, hf);
    if (!(t->n_dims == 1 && t->shape[0] == n)) return as_error("%s: tensor %s: expected shape [%lld]", dir, hf, (long long)n);
    float *v = as_malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) v[i] = st_get(t, i) + add;
    gguf_write_tensor(w, name, GGML_TYPE_F32, 1, &n, v, sizeof(float) * (size_t)n);
    free(v);
    return AS_OK;
}

static int put_weights(gguf_writer *w, const char *dir, const model_config *c) {
    hf_shards h = {0};
    if (shards_open(dir, &h)) {
        shards_close(&h);
        return AS_FAIL;
    }
    const int64_t C = c->n_embd, F = c->n_ff, d = c->head_dim, qd = (int64_t)c->n_head * d, kvd = (int64_t)c->n_head_kv * d;
    const int64_t pd = c->arch == MODEL_ARCH_LLAMA ? d : 0;
    const float one = c->arch == MODEL_ARCH_GEMMA ? 1.0f : 0.0f; // Gemma's HF norms hold w of (1 + w)
    int rc = AS_FAIL;
    if (put_matrix(w, &h, dir, "model.embed_tokens.weight", "token_embd.weight", c->n_vocab, C, 0) ||
        (!c->tied_output && put_matrix(w, &h, dir, "lm_head.weight", "output.weight", c->n_vocab, C, 0)) ||
        put_norm(w, &h, dir, "model.norm.weight", "output_norm.weight", C, one))
        goto done;
    char hf[160], name[96];
    for (int l = 0; l < c->n_layer; l++) {
#define T(s, g) (snprintf(hf, sizeof hf, "model.layers.%d." s ".weight", l), snprintf(name, sizeof name, "blk.%d." g ".weight", l), hf), name
        if (put_norm(w, &h, dir, T("input_layernorm", "attn_norm"), C, one) ||
            put_norm(w, &h, dir, T("post_attention_layernorm", "ffn_norm"), C, one) ||
            put_matrix(w, &h, dir, T("self_attn.q_proj", "attn_q"), qd, C, pd) ||
            put_matrix(w, &h, dir, T("self_attn.k_proj", "attn_k"), kvd, C, pd) ||
            put_matrix(w, &h, dir, T("self_attn.v_proj", "attn_v"), kvd, C, 0) ||
            put_matrix(w, &h, dir, T("self_attn.o_proj", "attn_output"), C, qd, 0) ||
            put_matrix(w, &h, dir, T("mlp.gate_proj", "ffn_gate"), F, C, 0) || put_matrix(w, &h, dir, T("mlp.up_proj", "ffn_up"), F, C, 0) ||
            put_matrix(w, &h, dir, T("mlp.down_proj", "ffn_down"), C, F, 0))
            goto done;
#undef T
    }
    rc = AS_OK;
done:
    shards_close(&h);
    return rc;
}

int model_hf_open(gguf_file **out, const char *dir, bool with_tensors) {
    *out = NULL;
    model_config c;
    gguf_writer *w = gguf_writer_init();
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = model_hf_write_meta(w, dir, &c);
    if (!rc && with_tensors) rc = put_weights(w, dir, &c);
    if (!rc) rc = gguf_writer_to_buffer(w, &buf, &len);
    gguf_writer_free(w);
    if (rc) return AS_FAIL;
    return gguf_open_owned(out, buf, len, dir);
}

int model_load_hf(model **out, const char *dir) {
    *out = NULL;
    gguf_file *f;
    if (model_hf_open(&f, dir, true)) return AS_FAIL;
    return model_from_gguf(out, f);
}

int model_open_meta(gguf_file **out, const char *path) {
    return model_path_is_dir(path) ? model_hf_open(out, path, false) : gguf_open(out, path);
}
