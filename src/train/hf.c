// Hugging Face model folders (config.json + model.safetensors, or shards
// listed in model.safetensors.index.json) read into a training model.
//
// The weights are brought into the layout the rest of alphaspin uses (the
// GGUF one, as llama.cpp's convert_hf_to_gguf.py writes it): llama q/k rows
// permuted so the rotary pairs are adjacent, Gemma norms stored as 1 + w.
#include <cjson/cJSON.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "train/train.h"
#include "train/layout.h"
#include "model/safetensors.h"
#include "util/common.h"

#define HF_MAX_SHARDS 256

typedef struct hf_files {
    st_file *shard[HF_MAX_SHARDS];
    int n;
} hf_files;

static const st_tensor *hf_find(const hf_files *h, const char *name) {
    for (int i = 0; i < h->n; i++) {
        const st_tensor *t = st_find(h->shard[i], name);
        if (t) return t;
    }
    return NULL;
}

static int json_int(const cJSON *c, const char *key, bool required, int32_t def, int32_t *out, const char *path) {
    const cJSON *v = cJSON_GetObjectItem(c, key);
    if (!v || cJSON_IsNull(v)) {
        if (required) return as_error("%s: %s is missing", path, key);
        *out = def;
        return AS_OK;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble < 1 || v->valuedouble > (1 << 24) || v->valuedouble != (double)(int32_t)v->valuedouble)
        return as_error("%s: %s: expected an integer in [1, %d]", path, key, 1 << 24);
    *out = (int32_t)v->valuedouble;
    return AS_OK;
}

static int read_config(const char *path, model_config *c) {
    char *text;
    if (as_read_file(path, &text, NULL)) return AS_FAIL;
    cJSON *j = cJSON_Parse(text);
    free(text);
    int rc = AS_FAIL;
    if (!j || !cJSON_IsObject(j)) {
        as_error("%s: not a JSON object", path);
        goto done;
    }
    const cJSON *mt = cJSON_GetObjectItem(j, "model_type");
    memset(c, 0, sizeof *c);
    if (cJSON_IsString(mt) && !strcmp(mt->valuestring, "llama")) c->arch = MODEL_ARCH_LLAMA;
    else if (cJSON_IsString(mt) && !strcmp(mt->valuestring, "gemma")) c->arch = MODEL_ARCH_GEMMA;
    else {
        as_error("%s: model_type '%s' is not supported (llama, gemma)", path, cJSON_IsString(mt) ? mt->valuestring : "?");
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
    if (c->n_embd % c->n_head && !cJSON_GetObjectItem(j, "head_dim")) {
        as_error("%s: hidden_size %d is not a multiple of num_attention_heads %d and head_dim is absent", path, c->n_embd, c->n_head);
        goto done;
    }
    if (json_int(j, "head_dim", false, c->n_embd / c->n_head, &c->head_dim, path)) goto done;
    c->n_rot = c->head_dim;
    const cJSON *eps = cJSON_GetObjectItem(j, "rms_norm_eps");
    c->rms_eps = cJSON_IsNumber(eps) ? (float)eps->valuedouble : 1e-6f;
    const cJSON *rp = cJSON_GetObjectItem(j, "rope_parameters"), *th = cJSON_GetObjectItem(j, "rope_theta");
    if (cJSON_IsObject(rp) && cJSON_IsNumber(cJSON_GetObjectItem(rp, "rope_theta"))) th = cJSON_GetObjectItem(rp, "rope_theta");
    c->rope_theta = cJSON_IsNumber(th) ? (float)th->valuedouble : 10000.0f;
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
        as_error("%s: activation '%s' is not supported for %s", path, a, c->arch_name);
        goto done;
    }
    const cJSON *tie = cJSON_GetObjectItem(j, "tie_word_embeddings");
    c->tied_output = tie ? cJSON_IsTrue(tie) : gemma; // transformers' defaults: llama untied, gemma tied
    c->rope_neox = gemma;                              // llama rows are permuted into GGUF order below
    c->gelu = gemma;
    c->emb_scale = gemma ? sqrtf((float)c->n_embd) : 1.0f;
    rc = AS_OK;
done:
    cJSON_Delete(j);
    return rc;
}

// model.safetensors, or the shards named by model.safetensors.index.json.
static int open_shards(const char *dir, hf_files *h) {
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    if (access(path, R_OK)) {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        if (st_open(&h->shard[0], path)) return AS_FAIL;
        h->n = 1;
        return AS_OK;
    }
    char *text;
    if (as_read_file(path, &text, NULL)) return AS_FAIL;
    cJSON *j = cJSON_Parse(text);
    free(text);
    const cJSON *wm = j ? cJSON_GetObjectItem(j, "weight_map") : NULL;
    if (!cJSON_IsObject(wm)) {
        cJSON_Delete(j);
        return as_error("%s: expected an object weight_map", path);
    }
    const cJSON *e;
    int rc = AS_OK;
    char names[HF_MAX_SHARDS][256];
    cJSON_ArrayForEach(e, wm) {
        if (!cJSON_IsString(e) || strchr(e->valuestring, '/') || strlen(e->valuestring) >= 256) {
            rc = as_error("%s: weight_map entry %s: expected a file name in the folder", path, e->string);
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
        char sp[4096];
        snprintf(sp, sizeof sp, "%s/%s", dir, e->valuestring);
        if (st_open(&h->shard[h->n], sp)) {
            rc = AS_FAIL;
            break;
        }
        h->n++;
    }
    cJSON_Delete(j);
    return rc;
}

// Copies tensor `name` of shape (rows, cols) into dst; rows permuted from HF
// to GGUF order when d > 0 (llama q/k), `add` added to every element.
static int take(const hf_files *h, const char *dir, const char *name, int64_t rows, int64_t cols, int64_t d, float add, float *dst) {
    const st_tensor *t = hf_find(h, name);
    if (!t) return as_error("%s: tensor %s is missing", dir, name);
    const bool vec = rows == 1;
    if (vec && !(t->n_dims == 1 && t->shape[0] == cols)) return as_error("%s: tensor %s: expected shape [%lld]", dir, name, (long long)cols);
    if (!vec && !(t->n_dims == 2 && t->shape[0] == rows && t->shape[1] == cols))
        return as_error("%s: tensor %s: expected shape [%lld, %lld]", dir, name, (long long)rows, (long long)cols);
    for (int64_t r = 0; r < rows; r++) {
        const int64_t src = d > 0 ? train_hf_row(r, d) : r;
        for (int64_t c = 0; c < cols; c++) {
            const float v = st_get(t, src * cols + c) + add;
            if (!isfinite(v)) return as_error("%s: tensor %s: element %lld is not finite", dir, name, (long long)(src * cols + c));
            dst[r * cols + c] = v;
        }
    }
    return AS_OK;
}

int train_model_load_hf(train_model **out, const char *dir) {
    *out = NULL;
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    model_config c;
    if (read_config(path, &c)) return AS_FAIL;
    hf_files h = {0};
    train_model *m = NULL;
    int rc = AS_FAIL;
    if (open_shards(dir, &h) || train_model_init(&m, &c)) goto done;
    const train_params *p = &m->params;
    const int64_t C = c.n_embd, F = c.n_ff, d = c.head_dim, qd = (int64_t)c.n_head * d, kvd = (int64_t)c.n_head_kv * d;
    const bool llama = c.arch == MODEL_ARCH_LLAMA;
    const float one = c.arch == MODEL_ARCH_GEMMA ? 1.0f : 0.0f; // Gemma's HF norms hold w of (1 + w)
    if (take(&h, dir, "model.embed_tokens.weight", c.n_vocab, C, 0, 0, p->tok_embd) ||
        (!c.tied_output && take(&h, dir, "lm_head.weight", c.n_vocab, C, 0, 0, p->output)) ||
        take(&h, dir, "model.norm.weight", 1, C, 0, one, p->output_norm))
        goto done;
    char name[160];
    for (int l = 0; l < c.n_layer; l++) {
#define T(s) (snprintf(name, sizeof name, "model.layers.%d." s ".weight", l), name)
        if (take(&h, dir, T("input_layernorm"), 1, C, 0, one, p->attn_norm + l * C) ||
            take(&h, dir, T("post_attention_layernorm"), 1, C, 0, one, p->ffn_norm + l * C) ||
            take(&h, dir, T("self_attn.q_proj"), qd, C, llama ? d : 0, 0, p->wq + l * qd * C) ||
            take(&h, dir, T("self_attn.k_proj"), kvd, C, llama ? d : 0, 0, p->wk + l * kvd * C) ||
            take(&h, dir, T("self_attn.v_proj"), kvd, C, 0, 0, p->wv + l * kvd * C) ||
            take(&h, dir, T("self_attn.o_proj"), C, qd, 0, 0, p->wo + l * C * qd) ||
            take(&h, dir, T("mlp.gate_proj"), F, C, 0, 0, p->w_gate + l * F * C) ||
            take(&h, dir, T("mlp.up_proj"), F, C, 0, 0, p->w_up + l * F * C) ||
            take(&h, dir, T("mlp.down_proj"), C, F, 0, 0, p->w_down + l * C * F))
            goto done;
#undef T
    }
    *out = m;
    m = NULL;
    rc = AS_OK;
done:
    train_model_free(m);
    for (int i = 0; i < h.n; i++) st_close(h.shard[i]);
    return rc;
}
