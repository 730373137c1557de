// PEFT LoRA adapter folders (see checkpoint.h).
#include "train/checkpoint.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <string.h>

#include "train/layout.h"
#include "train/safetensors.h"
#include "util/common.h"
#include "util/json.h"

static const char *const HF_MODULE[TRAIN_LORA_N_TARGETS] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                                            "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};
static const char *const HF_SHORT[TRAIN_LORA_N_TARGETS] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};

static void hex_digest(const unsigned char *md, unsigned n, char *out);

static void tensor_name(char *buf, size_t n, int l, int t, char ab) {
    snprintf(buf, n, "base_model.model.model.layers.%d.%s.lora_%c.weight", l, HF_MODULE[t], ab);
}


static bool permuted_cfg(const model_config *c, int t) { return c->arch == MODEL_ARCH_LLAMA && (t == TRAIN_LORA_Q || t == TRAIN_LORA_K); }
static bool permuted(const train_model *m, int t) { return permuted_cfg(&m->cfg, t); }

int train_lora_save_peft(const train_model *m, const char *dir, const char *base_model) {
    const train_lora *lo = m->lora;
    if (!lo) return as_error("%s: the model has no LoRA adapters to save", dir);
    if (as_mkdir_p(dir)) return AS_FAIL;
    const int64_t L = m->cfg.n_layer, r = lo->cfg.rank, d = m->cfg.head_dim;
    // B of q/k in HF row order (a copy; the others are written from the model).
    float *unperm[TRAIN_LORA_N_TARGETS] = {0};
    st_writer *w = st_writer_init();
    st_writer_set_metadata(w, "format", "pt");
    // The SHA-256 of the tensor data (written in order, back to back) goes in
    // the metadata, which PEFT ignores: a damaged file is refused on load.
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) as_die("EVP_sha256 unavailable");
    char name[160];
    for (int64_t l = 0; l < L; l++)
        for (int t = 0; t < TRAIN_LORA_N_TARGETS; t++) {
            if (!lo->a[t]) continue;
            const int64_t in = lo->in[t], out = lo->out[t];
            const float *B = lo->b[t] + l * out * r;
            if (permuted(m, t)) {
                if (!unperm[t]) unperm[t] = as_malloc(sizeof(float) * (size_t)(L * out * r));
                float *dst = unperm[t] + l * out * r;
                for (int64_t row = 0; row < out; row++) memcpy(dst + train_hf_row(row, d) * r, B + row * r, sizeof(float) * (size_t)r);
                B = dst;
            }
            tensor_name(name, sizeof name, (int)l, t, 'A');
            st_writer_add_f32(w, name, 2, (int64_t[]){r, in}, lo->a[t] + l * r * in);
            EVP_DigestUpdate(ctx, lo->a[t] + l * r * in, sizeof(float) * (size_t)(r * in));
            tensor_name(name, sizeof name, (int)l, t, 'B');
            st_writer_add_f32(w, name, 2, (int64_t[]){out, r}, B);
            EVP_DigestUpdate(ctx, B, sizeof(float) * (size_t)(out * r));
        }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    EVP_DigestFinal_ex(ctx, md, &mdlen);
    EVP_MD_CTX_free(ctx);
    char hex[2 * EVP_MAX_MD_SIZE + 1];
    hex_digest(md, mdlen, hex);
    st_writer_set_metadata(w, "sha256", hex);
    char path[4096];
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    int rc = st_writer_save(w, path);
    st_writer_free(w);
    for (int t = 0; t < TRAIN_LORA_N_TARGETS; t++) free(unperm[t]);
    if (rc) return AS_FAIL;

    // adapter_config.json: the keys PEFT's LoraConfig reads, with its defaults where we have nothing to say.
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "peft_type", "LORA");
    cJSON_AddStringToObject(c, "task_type", "CAUSAL_LM");
    if (base_model) cJSON_AddStringToObject(c, "base_model_name_or_path", base_model);
    else cJSON_AddNullToObject(c, "base_model_name_or_path");
    cJSON_AddNumberToObject(c, "r", (double)r);
    cJSON_AddNumberToObject(c, "lora_alpha", (double)lo->cfg.alpha);
    cJSON_AddNumberToObject(c, "lora_dropout", (double)lo->cfg.dropout);
    cJSON *tm = cJSON_AddArrayToObject(c, "target_modules");
    for (int t = 0; t < TRAIN_LORA_N_TARGETS; t++)
        if (lo->a[t]) cJSON_AddItemToArray(tm, cJSON_CreateString(HF_SHORT[t]));
    cJSON_AddStringToObject(c, "bias", "none");
    cJSON_AddBoolToObject(c, "fan_in_fan_out", false);
    cJSON_AddBoolToObject(c, "inference_mode", true);
    cJSON_AddBoolToObject(c, "init_lora_weights", true);
    cJSON_AddBoolToObject(c, "use_rslora", false);
    cJSON_AddBoolToObject(c, "use_dora", false);
    cJSON_AddNullToObject(c, "modules_to_save");
    cJSON_AddNullToObject(c, "layers_to_transform");
    cJSON_AddItemToObject(c, "rank_pattern", cJSON_CreateObject());
    cJSON_AddItemToObject(c, "alpha_pattern", cJSON_CreateObject());
    char *json = as_json_print(c, true); // the base model's path may hold any bytes
    cJSON_Delete(c);
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    rc = as_write_file_atomic(path, json, strlen(json));
    free(json);
    return rc;
}

// ---- loading ----

static bool json_true(const cJSON *c, const char *key) { return cJSON_IsTrue(cJSON_GetObjectItem(c, key)); }

static bool json_nonempty(const cJSON *c, const char *key) {
    const cJSON *v = cJSON_GetObjectItem(c, key);
    return v && !cJSON_IsNull(v) && !((cJSON_IsObject(v) || cJSON_IsArray(v)) && cJSON_GetArraySize(v) == 0);
}

static int read_config(const char *path, train_lora_config *lc) {
    char *text;
    if (as_read_file(path, &text, NULL)) return AS_FAIL;
    cJSON *c = cJSON_Parse(text);
    free(text);
    int rc = AS_FAIL;
    if (!c || !cJSON_IsObject(c)) {
        as_error("%s: not a JSON object", path);
        goto done;
    }
    const cJSON *pt = cJSON_GetObjectItem(c, "peft_type"), *r = cJSON_GetObjectItem(c, "r"), *al = cJSON_GetObjectItem(c, "lora_alpha");
    const cJSON *dr = cJSON_GetObjectItem(c, "lora_dropout"), *tm = cJSON_GetObjectItem(c, "target_modules"), *bias = cJSON_GetObjectItem(c, "bias");
    if (!cJSON_IsString(pt) || strcmp(pt->valuestring, "LORA")) {
        as_error("%s: peft_type: expected \"LORA\"", path);
        goto done;
    }
    if (!cJSON_IsNumber(r) || r->valuedouble < 1 || r->valuedouble > 65536 || r->valuedouble != (double)(int)r->valuedouble) {
        as_error("%s: r: expected an integer >= 1", path);
        goto done;
    }
    if (!cJSON_IsNumber(al) || !(al->valuedouble > 0)) {
        as_error("%s: lora_alpha: expected a number > 0", path);
        goto done;
    }
    if (dr && !cJSON_IsNull(dr) && (!cJSON_IsNumber(dr) || dr->valuedouble < 0 || dr->valuedouble >= 1)) {
        as_error("%s: lora_dropout: expected a number in [0, 1)", path);
        goto done;
    }
    const char *unsupported[] = {"use_rslora", "use_dora", "fan_in_fan_out", "lora_bias", "use_qalora"};
    for (size_t i = 0; i < AS_ARRAY_LEN(unsupported); i++)
        if (json_true(c, unsupported[i])) {
            as_error("%s: %s is true (not supported)", path, unsupported[i]);
            goto done;
        }
    const char *patterns[] = {"layers_to_transform", "rank_pattern", "alpha_pattern", "modules_to_save", "layer_replication",
                              "trainable_token_indices", "target_parameters", "exclude_modules"};
    for (size_t i = 0; i < AS_ARRAY_LEN(patterns); i++)
        if (json_nonempty(c, patterns[i])) {
            as_error("%s: %s is set (not supported)", path, patterns[i]);
            goto done;
        }
    if (bias && !cJSON_IsNull(bias) && (!cJSON_IsString(bias) || strcmp(bias->valuestring, "none"))) {
        as_error("%s: bias: expected \"none\"", path);
        goto done;
    }
    memset(lc, 0, sizeof *lc);
    lc->rank = (int32_t)r->valuedouble;
    lc->alpha = (float)al->valuedouble;
    lc->dropout = dr && cJSON_IsNumber(dr) ? (float)dr->valuedouble : 0.0f;
    if (!cJSON_IsArray(tm) || cJSON_GetArraySize(tm) == 0) {
        as_error("%s: target_modules: expected a non-empty list of module names", path);
        goto done;
    }
    const cJSON *e;
    cJSON_ArrayForEach(e, tm) {
        int found = -1;
        for (int t = 0; t < TRAIN_LORA_N_TARGETS && cJSON_IsString(e); t++)
            if (!strcmp(e->valuestring, HF_SHORT[t])) found = t;
        if (found < 0) {
            as_error("%s: target_modules: '%s' is not one of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj", path,
                     cJSON_IsString(e) ? e->valuestring : "(not a string)");
            goto done;
        }
        lc->targets |= 1u << found;
    }
    rc = AS_OK;
done:
    cJSON_Delete(c);
    return rc;
}

int train_lora_read_peft(const model_config *cfg, const char *dir, train_lora **out) {
    *out = NULL;
    char path[4096], name[160];
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    train_lora_config lc;
    if (read_config(path, &lc)) return AS_FAIL;
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    st_file *f;
    if (st_open(&f, path)) return AS_FAIL;
    // Files written here carry the SHA-256 of their data (PEFT's own do not).
    const char *sum = st_metadata(f, "sha256");
    if (sum) {
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned mdlen = 0;
        char hex[2 * EVP_MAX_MD_SIZE + 1];
        EVP_Digest(f->data, f->data_size, md, &mdlen, EVP_sha256(), NULL);
        hex_digest(md, mdlen, hex);
        if (strcmp(sum, hex)) {
            st_close(f);
            return as_error("%s: checksum mismatch (the file is damaged or was modified)", path);
        }
    }
    train_lora *lo = train_lora_new(cfg, &lc);
    if (!lo) {
        st_close(f);
        return AS_FAIL;
    }
    const int64_t L = cfg->n_layer, r = lc.rank, d = cfg->head_dim;
    int64_t used = 0;
    for (int64_t l = 0; l < L; l++)
        for (int t = 0; t < TRAIN_LORA_N_TARGETS; t++) {
            if (!lo->a[t]) continue;
            for (int k = 0; k < 2; k++) {
                const char ab = k ? 'B' : 'A';
                tensor_name(name, sizeof name, (int)l, t, ab);
                const st_tensor *st = st_find(f, name);
                const int64_t rows = k ? lo->out[t] : r, cols = k ? r : lo->in[t];
                if (!st) {
                    as_error("%s: tensor %s is missing", path, name);
                    goto fail;
                }
                if (st->n_dims != 2 || st->shape[0] != rows || st->shape[1] != cols) {
                    as_error("%s: tensor %s: expected shape [%lld, %lld]", path, name, (long long)rows, (long long)cols);
                    goto fail;
                }
                float *dst = k ? lo->b[t] + l * rows * cols : lo->a[t] + l * rows * cols;
                for (int64_t row = 0; row < rows; row++) {
                    const int64_t src_row = k && permuted_cfg(cfg, t) ? train_hf_row(row, d) : row;
                    for (int64_t c = 0; c < cols; c++) dst[row * cols + c] = st_get(st, src_row * cols + c);
                }
                used++;
            }
        }
    if (used != f->n_tensors) {
        for (int64_t i = 0; i < f->n_tensors; i++) {
            bool known = false;
            for (int64_t l = 0; l < L && !known; l++)
                for (int t = 0; t < TRAIN_LORA_N_TARGETS && !known; t++)
                    for (int k = 0; k < 2 && !known && lo->a[t]; k++) {
                        tensor_name(name, sizeof name, (int)l, t, k ? 'B' : 'A');
                        known = !strcmp(name, f->tensors[i].name);
                    }
            if (!known) {
                as_error("%s: unexpected tensor %s (not an adapter of this %d-layer model's targets)", path, f->tensors[i].name, cfg->n_layer);
                goto fail;
            }
        }
    }
    st_close(f);
    *out = lo;
    return AS_OK;
fail:
    st_close(f);
    train_lora_free(lo);
    return AS_FAIL;
}

int train_lora_load_peft(train_model *m, const char *dir) {
    if (m->lora) return as_error("%s: the model has LoRA adapters already", dir);
    train_lora *lo;
    if (train_lora_read_peft(&m->cfg, dir, &lo)) return AS_FAIL;
    train_lora_set(m, lo);
    return AS_OK;
}

// ---- training state ----

static void hex_digest(const unsigned char *md, unsigned n, char *out) {
    for (unsigned i = 0; i < n; i++) snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static void rng_format(const as_rng *r, char *out, size_t n) {
    snprintf(out, n, "%016" PRIx64 "%016" PRIx64 "%016" PRIx64 "%016" PRIx64, r->s[0], r->s[1], r->s[2], r->s[3]);
}

static int rng_parse(const char *s, as_rng *r) {
    if (!s || strlen(s) != 64) return AS_FAIL;
    for (int i = 0; i < 4; i++) {
        char part[17];
        memcpy(part, s + 16 * i, 16);
        part[16] = 0;
        char *end;
        r->s[i] = strtoull(part, &end, 16);
        if (*end) return AS_FAIL;
    }
    return AS_OK;
}

// The LoRA shape as text ("none" for full fine-tuning), so a state is only
// loaded into a model that trains the same tensors.
static void lora_desc(const train_model *m, char *out, size_t n) {
    if (!m->lora) snprintf(out, n, "none");
    else snprintf(out, n, "r=%d alpha=%g dropout=%g targets=0x%x", m->lora->cfg.rank, (double)m->lora->cfg.alpha, (double)m->lora->cfg.dropout,
                  m->lora->cfg.targets);
}

static void digest_update(void *ctx, const void *data, size_t bytes) { EVP_DigestUpdate(ctx, data, bytes); }

int train_state_save(const train_model *m, const optim *o, const as_rng *data_rng, const train_state_extra *x, const char *path) {
    float *params, *grads;
    const optim_segment *segs;
    int ns;
    const size_t n = train_trainable((train_model *)m, &params, &grads, &segs, &ns);
    if (n != o->n) return as_error("%s: optimizer holds %zu parameters, the model trains %zu", path, o->n, n);
    const float *arrays[3] = {params, o->m, o->v};
    const char *names[3] = {"params", "optim_m", "optim_v"};
    st_writer *w = st_writer_init();
    for (int i = 0; i < 3; i++)
        if (arrays[i]) st_writer_add_f32(w, names[i], 1, (int64_t[]){(int64_t)n}, arrays[i]);
    if (x) x->write(x->user, w);
    // The digest of the data section as written: what the load checks.
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) as_die("EVP_sha256 unavailable");
    st_writer_data(w, digest_update, ctx);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    EVP_DigestFinal_ex(ctx, md, &mdlen);
    EVP_MD_CTX_free(ctx);
    char buf[160];
    hex_digest(md, mdlen, buf);
    st_writer_set_metadata(w, "sha256", buf);
    st_writer_set_metadata(w, "format", "alphaspin-train-state-1");
    snprintf(buf, sizeof buf, "%d", (int)o->cfg.kind);
    st_writer_set_metadata(w, "optimizer", buf);
    snprintf(buf, sizeof buf, "%" PRId64, o->step);
    st_writer_set_metadata(w, "step", buf);
    lora_desc(m, buf, sizeof buf);
    st_writer_set_metadata(w, "lora", buf);
    rng_format(&m->rng, buf, sizeof buf);
    st_writer_set_metadata(w, "dropout_rng", buf);
    if (data_rng) {
        rng_format(data_rng, buf, sizeof buf);
        st_writer_set_metadata(w, "data_rng", buf);
    }
    const int rc = st_writer_save(w, path);
    st_writer_free(w);
    return rc;
}

int train_state_load(train_model *m, optim *o, as_rng *data_rng, const train_state_extra *x, const char *path) {
    st_file *f;
    if (st_open(&f, path)) return AS_FAIL;
    int rc = AS_FAIL;
    float *params, *grads;
    const optim_segment *segs;
    int ns;
    const size_t n = train_trainable(m, &params, &grads, &segs, &ns);
    const char *fmt = st_metadata(f, "format"), *sum = st_metadata(f, "sha256"), *kind = st_metadata(f, "optimizer");
    const char *step = st_metadata(f, "step"), *lora = st_metadata(f, "lora");
    char buf[160];
    if (!fmt || strcmp(fmt, "alphaspin-train-state-1")) {
        as_error("%s: not an alphaspin training state (metadata format missing or unknown)", path);
        goto done;
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    EVP_Digest(f->data, f->data_size, md, &mdlen, EVP_sha256(), NULL);
    hex_digest(md, mdlen, buf);
    if (!sum || strcmp(sum, buf)) {
        as_error("%s: checksum mismatch (the file is damaged or was modified)", path);
        goto done;
    }
    if (x && x->read(x->user, f)) goto done;
    snprintf(buf, sizeof buf, "%d", (int)o->cfg.kind);
    if (!kind || strcmp(kind, buf)) {
        as_error("%s: saved with optimizer kind %s, resuming with %s", path, kind ? kind : "?", buf);
        goto done;
    }
    lora_desc(m, buf, sizeof buf);
    if (!lora || strcmp(lora, buf)) {
        as_error("%s: saved for adapters '%s', the model has '%s'", path, lora ? lora : "?", buf);
        goto done;
    }
    const float *dst_arrays[3] = {params, o->m, o->v};
    const char *names[3] = {"params", "optim_m", "optim_v"};
    const int64_t want = (params != NULL) + (o->m != NULL) + (o->v != NULL) + (x ? x->n_tensors : 0);
    if (f->n_tensors != want) {
        as_error("%s: %lld tensors, expected %lld (the state of another trainer?)", path, (long long)f->n_tensors, (long long)want);
        goto done;
    }
    for (int i = 0; i < 3; i++) {
        const st_tensor *t = st_find(f, names[i]);
        if (!dst_arrays[i] != !t) {
            as_error("%s: tensor %s is %s", path, names[i], t ? "unexpected for this optimizer" : "missing");
            goto done;
        }
        if (t && (t->dtype != ST_F32 || t->n_dims != 1 || t->shape[0] != (int64_t)n)) {
            as_error("%s: tensor %s: expected %zu float32 values", path, names[i], n);
            goto done;
        }
    }
    char *end = NULL;
    const long long st = step ? strtoll(step, &end, 10) : -1;
    as_rng r_drop, r_data;
    if (!step || *end || st < 0) {
        as_error("%s: metadata step is missing or invalid", path);
        goto done;
    }
    if (rng_parse(st_metadata(f, "dropout_rng"), &r_drop) || (data_rng && rng_parse(st_metadata(f, "data_rng"), &r_data))) {
        as_error("%s: metadata dropout_rng/data_rng missing or invalid", path);
        goto done;
    }
    for (int i = 0; i < 3; i++)
        if (dst_arrays[i]) memcpy((float *)dst_arrays[i], st_find(f, names[i])->data, sizeof(float) * n);
    o->step = st;
    m->rng = r_drop;
    if (data_rng) *data_rng = r_data;
    rc = AS_OK;
done:
    st_close(f);
    return rc;
}
