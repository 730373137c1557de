// Hugging Face tokenizer files <-> GGUF tokenizer metadata (see tokenizer_hf.h).
#define _GNU_SOURCE // qsort_r
#include "tokenizer/tokenizer_hf.h"

#include <cjson/cJSON.h>
#include <string.h>
#include <unistd.h>

#include "tokenizer/tokenizer_impl.h"
#include "util/common.h"
#include "util/json.h"

// Largest vocabulary accepted from a file (the biggest real ones are ~260k).
// Fuzzing builds (libFuzzer's FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION) take
// 64k: a 4M-token vocabulary of padding made from one large id is linear work,
// but under ASan and coverage it took ~11 s, past the fuzzer's hang timeout.
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
#define HF_MAX_VOCAB (1 << 16)
#else
#define HF_MAX_VOCAB (1 << 20)
#endif

// The pre-tokenizers with an exact Hugging Face definition.  The Llama-3
// regex as tokenizer.json writes it (llama.cpp's k_re_llama3 is the same
// expression with the (?i:...) group spelled out).
static const char k_llama3_regex[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
typedef enum hf_pre { HF_PRE_NONE = 0, HF_PRE_SMOLLM, HF_PRE_GPT2, HF_PRE_LLAMA3 } hf_pre;
// tokenizer.ggml.pre names, by the pre-tokenizer they stand for (the groups of bpe.c's table).
static const char *const k_pre_names[][8] = {
    [HF_PRE_SMOLLM] = {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b", NULL},
    [HF_PRE_GPT2] = {"gpt2", "gpt-2", "phi-2", "mpt", "olmo", "jais", NULL},
    [HF_PRE_LLAMA3] = {"llama-bpe", "llama3", "llama-v3", "falcon3", NULL},
};

static const char *json_str(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItem(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static bool json_is(const cJSON *o, const char *key, const char *value) {
    const char *s = json_str(o, key);
    return s && !strcmp(s, value);
}

static bool json_true(const cJSON *o, const char *key) { return cJSON_IsTrue(cJSON_GetObjectItem(o, key)); }

// A ByteLevel pre-tokenizer with its regex on or off and no prefix space.
static bool is_byte_level(const cJSON *p, bool use_regex) {
    if (!json_is(p, "type", "ByteLevel") || json_true(p, "add_prefix_space")) return false;
    const cJSON *u = cJSON_GetObjectItem(p, "use_regex");
    return use_regex ? !u || cJSON_IsTrue(u) : cJSON_IsFalse(u);
}

static hf_pre classify_pre(const cJSON *p) {
    if (is_byte_level(p, true)) return HF_PRE_GPT2;
    if (!json_is(p, "type", "Sequence")) return HF_PRE_NONE;
    const cJSON *list = cJSON_GetObjectItem(p, "pretokenizers");
    if (!cJSON_IsArray(list) || cJSON_GetArraySize(list) != 2) return HF_PRE_NONE;
    const cJSON *a = cJSON_GetArrayItem(list, 0), *b = cJSON_GetArrayItem(list, 1);
    if (json_is(a, "type", "Digits") && json_true(a, "individual_digits") && is_byte_level(b, true)) return HF_PRE_SMOLLM;
    const cJSON *pat = cJSON_GetObjectItem(a, "pattern");
    if (json_is(a, "type", "Split") && json_is(pat, "Regex", k_llama3_regex) && json_is(a, "behavior", "Isolated") && !json_true(a, "invert") &&
        is_byte_level(b, false))
        return HF_PRE_LLAMA3;
    return HF_PRE_NONE;
}

// SentencePiece-style: "▁" for spaces, by a Replace normalizer (with or
// without Prepend) or a Metaspace pre-tokenizer.  *prefix: a space is put in
// front of the text.
static bool is_spm_style(const cJSON *norm, const cJSON *pre, bool *prefix) {
    *prefix = false;
    bool replace = false;
    const cJSON *items = norm;
    if (json_is(norm, "type", "Sequence")) items = cJSON_GetObjectItem(norm, "normalizers");
    const cJSON *n;
    if (cJSON_IsArray(items)) {
        cJSON_ArrayForEach(n, items) {
            if (json_is(n, "type", "Prepend") && json_is(n, "prepend", "\xe2\x96\x81")) *prefix = true;
            else if (json_is(n, "type", "Replace") && json_is(cJSON_GetObjectItem(n, "pattern"), "String", " ") &&
                     json_is(n, "content", "\xe2\x96\x81"))
                replace = true;
            else return false;
        }
    } else if (norm && !cJSON_IsNull(norm)) {
        if (json_is(norm, "type", "Replace") && json_is(cJSON_GetObjectItem(norm, "pattern"), "String", " ") && json_is(norm, "content", "\xe2\x96\x81"))
            replace = true;
        else return false;
    }
    if (json_is(pre, "type", "Metaspace") && json_is(pre, "replacement", "\xe2\x96\x81") && !json_true(pre, "split")) {
        const char *scheme = json_str(pre, "prepend_scheme");
        *prefix = !scheme || strcmp(scheme, "never");
        return !replace;
    }
    // A Split on " " after the normalizer replaced every space (Gemma's files) splits nothing.
    const bool noop_split = json_is(pre, "type", "Split") && json_is(cJSON_GetObjectItem(pre, "pattern"), "String", " ");
    return replace && (!pre || cJSON_IsNull(pre) || noop_split);
}

// A special-token entry of tokenizer_config.json: a string or {"content": str}.
static const char *config_token(const cJSON *cfg, const char *key) {
    const cJSON *v = cJSON_GetObjectItem(cfg, key);
    if (cJSON_IsString(v)) return v->valuestring;
    return cJSON_IsObject(v) ? json_str(v, "content") : NULL;
}

// The vocabulary as one buffer + offsets, with a lookup map.
typedef struct vocab {
    int32_t n;
    char **text;   // (n) owned, NULL for holes until padded
    uint8_t *type; // TOKEN_TYPE_*
    char *buf;
    uint64_t *off;
    strmap map;
} vocab;

static void vocab_free(vocab *v) {
    for (int32_t i = 0; v->text && i < v->n; i++) free(v->text[i]);
    free(v->text), free(v->type), free(v->buf), free(v->off);
    if (v->map.slots) strmap_free(&v->map);
}

static void vocab_index(vocab *v) {
    size_t total = 0;
    for (int32_t i = 0; i < v->n; i++) total += strlen(v->text[i]);
    v->buf = as_malloc(total + 1);
    v->off = as_malloc(sizeof(uint64_t) * ((size_t)v->n + 1));
    size_t pos = 0;
    for (int32_t i = 0; i < v->n; i++) {
        const size_t k = strlen(v->text[i]);
        v->off[i] = pos;
        memcpy(v->buf + pos, v->text[i], k);
        pos += k;
    }
    v->off[v->n] = pos;
    strmap_init(&v->map, v->buf, v->off, (size_t)v->n);
    for (int32_t i = 0; i < v->n; i++) strmap_put(&v->map, i);
}

static int32_t vocab_find(const vocab *v, const char *s) { return strmap_get(&v->map, s, strlen(s)); }

static int token_id(const vocab *v, const cJSON *cfg, const char *key, int32_t *id, const char *where) {
    const char *s = config_token(cfg, key);
    *id = -1;
    if (!s) return AS_OK;
    *id = vocab_find(v, s);
    if (*id < 0) return as_error("%s: %s '%.64s' is not a token of the vocabulary", where, key, s);
    return AS_OK;
}

static int json_id(const cJSON *v, int32_t *out) {
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble >= HF_MAX_VOCAB || v->valuedouble != (double)(int32_t)v->valuedouble)
        return AS_FAIL;
    *out = (int32_t)v->valuedouble;
    return AS_OK;
}

// add_bos / add_eos from a TemplateProcessing post-processor (alone or in a Sequence).
static void template_specials(const cJSON *pp, const char *bos, const char *eos, int *add_bos, int *add_eos) {
    if (json_is(pp, "type", "Sequence")) {
        const cJSON *p;
        cJSON_ArrayForEach(p, cJSON_GetObjectItem(pp, "processors")) template_specials(p, bos, eos, add_bos, add_eos);
        return;
    }
    if (!json_is(pp, "type", "TemplateProcessing")) return;
    const cJSON *single = cJSON_GetObjectItem(pp, "single");
    const int n = cJSON_GetArraySize(single);
    const cJSON *first = cJSON_GetObjectItem(cJSON_GetArrayItem(single, 0), "SpecialToken");
    const cJSON *last = cJSON_GetObjectItem(cJSON_GetArrayItem(single, n - 1), "SpecialToken");
    *add_bos = first && bos && json_is(first, "id", bos);
    *add_eos = n > 1 && last && eos && json_is(last, "id", eos);
}

int tokenizer_hf_parse(gguf_writer *w, const char *tok_json, size_t tok_len, const char *cfg_json, size_t cfg_len, const char *jinja,
                       int32_t n_vocab, const char *name) {
    char where[600], cwhere[600];
    snprintf(where, sizeof where, "%s/tokenizer.json", name);
    snprintf(cwhere, sizeof cwhere, "%s/tokenizer_config.json", name);
    cJSON *root = cJSON_ParseWithLength(tok_json, tok_len), *cfg = NULL;
    vocab v = {0};
    char **merges = NULL;
    float *scores = NULL;
    int32_t n_merges = 0;
    int rc = AS_FAIL;
    if (!cJSON_IsObject(root)) {
        as_error("%s: not a JSON object", where);
        goto done;
    }
    if (cfg_json) {
        cfg = cJSON_ParseWithLength(cfg_json, cfg_len);
        if (!cJSON_IsObject(cfg)) {
            as_error("%s: not a JSON object", cwhere);
            goto done;
        }
    }
    const cJSON *model = cJSON_GetObjectItem(root, "model");
    if (!cJSON_IsObject(model) || (cJSON_GetObjectItem(model, "type") && !json_is(model, "type", "BPE"))) {
        const char *t = cJSON_IsObject(model) ? json_str(model, "type") : NULL;
        as_error("%s: model.type '%s' is not supported (BPE)", where, t ? t : "?");
        goto done;
    }
    const char *affix[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int k = 0; k < 2; k++) {
        const char *a = json_str(model, affix[k]);
        if (a && *a) {
            as_error("%s: model.%s '%.32s' is not supported", where, affix[k], a);
            goto done;
        }
    }
    if (cJSON_IsNumber(cJSON_GetObjectItem(model, "dropout"))) {
        as_error("%s: model.dropout is not supported (BPE dropout is random)", where);
        goto done;
    }
    const cJSON *jv = cJSON_GetObjectItem(model, "vocab"), *added = cJSON_GetObjectItem(root, "added_tokens"), *e;
    if (!cJSON_IsObject(jv)) {
        as_error("%s: model.vocab: expected an object {token: id}", where);
        goto done;
    }
    if (added && !cJSON_IsNull(added) && !cJSON_IsArray(added)) {
        as_error("%s: added_tokens: expected a list", where);
        goto done;
    }
    // Vocabulary size: the largest id + 1 (or the model's, if larger).
    int32_t max_id = -1, id;
    cJSON_ArrayForEach(e, jv) {
        if (json_id(e, &id)) {
            as_error("%s: model.vocab['%.64s']: expected an id in [0, %d)", where, e->string, HF_MAX_VOCAB);
            goto done;
        }
        max_id = AS_MAX(max_id, id);
    }
    int i = 0;
    cJSON_ArrayForEach(e, added) {
        if (json_id(cJSON_GetObjectItem(e, "id"), &id) || !json_str(e, "content")) {
            as_error("%s: added_tokens[%d]: expected an id in [0, %d) and a string content", where, i, HF_MAX_VOCAB);
            goto done;
        }
        max_id = AS_MAX(max_id, id);
        i++;
    }
    if (max_id < 0) {
        as_error("%s: model.vocab is empty", where);
        goto done;
    }
    v.n = AS_MAX(max_id + 1, n_vocab);
    v.text = as_calloc((size_t)v.n, sizeof(char *));
    v.type = as_malloc((size_t)v.n);
    memset(v.type, TOKEN_TYPE_NORMAL, (size_t)v.n);
    cJSON_ArrayForEach(e, jv) {
        json_id(e, &id);
        if (v.text[id]) {
            as_error("%s: model.vocab: id %d is given to '%.64s' and '%.64s'", where, id, v.text[id], e->string);
            goto done;
        }
        v.text[id] = as_strdup(e->string);
    }
    cJSON_ArrayForEach(e, added) {
        json_id(cJSON_GetObjectItem(e, "id"), &id);
        const char *content = json_str(e, "content");
        if (v.text[id] && strcmp(v.text[id], content)) {
            as_error("%s: added token %d '%.64s' differs from the vocabulary's '%.64s'", where, id, content, v.text[id]);
            goto done;
        }
        if (!v.text[id]) v.text[id] = as_strdup(content);
        v.type[id] = json_true(e, "special") ? TOKEN_TYPE_CONTROL : TOKEN_TYPE_USER_DEFINED;
    }
    for (int32_t k = 0; k < v.n; k++) {
        if (v.text[k] && *v.text[k]) continue;
        free(v.text[k]);
        char pad[32];
        snprintf(pad, sizeof pad, "[PAD%d]", (int)k);
        v.text[k] = as_strdup(pad);
        v.type[k] = TOKEN_TYPE_UNUSED;
    }
    vocab_index(&v);
    for (int32_t k = 0; k < v.n; k++) {
        const int32_t first = vocab_find(&v, v.text[k]);
        if (first != k) {
            as_error("%s: token '%.64s' has ids %d and %d", where, v.text[k], first, k);
            goto done;
        }
    }
    // Tokenizer kind.
    const cJSON *norm = cJSON_GetObjectItem(root, "normalizer"), *pre = cJSON_GetObjectItem(root, "pre_tokenizer");
    bool spm_prefix = false;
    const bool spm = json_true(model, "byte_fallback") || is_spm_style(norm, pre, &spm_prefix);
    hf_pre kind = HF_PRE_NONE;
    if (spm) {
        if (!is_spm_style(norm, pre, &spm_prefix)) {
            as_error("%s: byte_fallback BPE without the SentencePiece normalizer (Replace ' ' -> U+2581) is not supported", where);
            goto done;
        }
    } else {
        if (norm && !cJSON_IsNull(norm)) {
            const char *t = json_str(norm, "type");
            as_error("%s: normalizer '%s' is not supported for byte-level BPE", where, t ? t : "?");
            goto done;
        }
        kind = classify_pre(pre);
        if (kind == HF_PRE_NONE) {
            char *s = pre ? cJSON_PrintUnformatted(pre) : NULL;
            as_error("%s: pre_tokenizer %.200s is not supported (Digits+ByteLevel as SmolLM, ByteLevel as GPT-2, or Llama 3's Split+ByteLevel)",
                     where, s ? s : "null");
            free(s);
            goto done;
        }
    }
    // Merges: "left right" strings or [left, right] pairs.
    const cJSON *jm = cJSON_GetObjectItem(model, "merges");
    if (jm && !cJSON_IsArray(jm)) {
        as_error("%s: model.merges: expected a list", where);
        goto done;
    }
    n_merges = cJSON_GetArraySize(jm);
    merges = as_calloc((size_t)AS_MAX(n_merges, 1), sizeof(char *));
    i = 0;
    cJSON_ArrayForEach(e, jm) {
        if (cJSON_IsString(e) && strchr(e->valuestring, ' ')) {
            merges[i] = as_strdup(e->valuestring);
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(cJSON_GetArrayItem(e, 0)) && cJSON_IsString(cJSON_GetArrayItem(e, 1))) {
            const char *a = cJSON_GetArrayItem(e, 0)->valuestring, *b = cJSON_GetArrayItem(e, 1)->valuestring;
            merges[i] = as_malloc(strlen(a) + strlen(b) + 2);
            sprintf(merges[i], "%s %s", a, b);
        } else {
            as_error("%s: model.merges[%d]: expected \"left right\" or [left, right]", where, i);
            goto done;
        }
        i++;
    }
    if (spm) {
        // Score of a token: minus the rank of the first merge that builds it, so
        // that SentencePiece's "highest score first" is BPE's "lowest rank first".
        scores = as_malloc(sizeof(float) * (size_t)v.n);
        for (int32_t k = 0; k < v.n; k++) scores[k] = -1e9f;
        for (int32_t r = 0; r < n_merges; r++) {
            char *sp = strchr(merges[r], ' ');
            const size_t la = (size_t)(sp - merges[r]), lb = strlen(sp + 1);
            char *joined = as_malloc(la + lb + 1);
            memcpy(joined, merges[r], la), memcpy(joined + la, sp + 1, lb + 1);
            const int32_t t = vocab_find(&v, joined);
            free(joined);
            if (t >= 0 && scores[t] == -1e9f) scores[t] = -(float)r;
        }
        for (int32_t k = 0; k < v.n; k++) {
            const char *s = v.text[k];
            if (v.type[k] == TOKEN_TYPE_NORMAL && strlen(s) == 6 && !strncmp(s, "<0x", 3) && s[5] == '>') v.type[k] = TOKEN_TYPE_BYTE;
        }
    }
    // Special tokens, flags, chat template.
    int32_t bos = -1, eos = -1, unk = -1, pad = -1;
    if (cfg && (token_id(&v, cfg, "bos_token", &bos, cwhere) || token_id(&v, cfg, "eos_token", &eos, cwhere) ||
                token_id(&v, cfg, "unk_token", &unk, cwhere) || token_id(&v, cfg, "pad_token", &pad, cwhere)))
        goto done;
    const char *munk = json_str(model, "unk_token");
    if (unk < 0 && munk) unk = vocab_find(&v, munk);
    if (unk >= 0 && v.type[unk] == TOKEN_TYPE_NORMAL) v.type[unk] = TOKEN_TYPE_UNKNOWN;
    int add_bos = -1, add_eos = -1;
    template_specials(cJSON_GetObjectItem(root, "post_processor"), bos >= 0 ? v.text[bos] : NULL, eos >= 0 ? v.text[eos] : NULL, &add_bos, &add_eos);
    const cJSON *ab = cfg ? cJSON_GetObjectItem(cfg, "add_bos_token") : NULL, *ae = cfg ? cJSON_GetObjectItem(cfg, "add_eos_token") : NULL;
    if (cJSON_IsBool(ab)) add_bos = cJSON_IsTrue(ab);
    if (cJSON_IsBool(ae)) add_eos = cJSON_IsTrue(ae);
    if (add_bos == 1 && bos < 0) {
        as_error("%s: add_bos_token is set but there is no bos_token", cfg ? cwhere : where);
        goto done;
    }
    if (add_eos == 1 && eos < 0) {
        as_error("%s: add_eos_token is set but there is no eos_token", cfg ? cwhere : where);
        goto done;
    }
    const char *tmpl = jinja;
    if (!tmpl && cfg) {
        const cJSON *ct = cJSON_GetObjectItem(cfg, "chat_template");
        if (cJSON_IsString(ct)) tmpl = ct->valuestring;
        else if (cJSON_IsArray(ct)) { // [{name, template}, ...]: the default one
            cJSON_ArrayForEach(e, ct) if (json_is(e, "name", "default") && json_str(e, "template")) tmpl = json_str(e, "template");
        }
    }
    gguf_write_str(w, "tokenizer.ggml.model", spm ? "llama" : "gpt2");
    if (!spm) gguf_write_str(w, "tokenizer.ggml.pre", k_pre_names[kind][0]);
    gguf_write_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)v.text, (uint64_t)v.n);
    int32_t *types = as_malloc(sizeof(int32_t) * (size_t)v.n);
    for (int32_t k = 0; k < v.n; k++) types[k] = v.type[k];
    gguf_write_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types, (uint64_t)v.n);
    free(types);
    if (spm) gguf_write_arr(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, scores, (uint64_t)v.n);
    else gguf_write_arr_str(w, "tokenizer.ggml.merges", (const char *const *)merges, (uint64_t)n_merges);
    if (bos >= 0) gguf_write_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)bos);
    if (eos >= 0) gguf_write_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)eos);
    if (unk >= 0) gguf_write_u32(w, "tokenizer.ggml.unknown_token_id", (uint32_t)unk);
    if (pad >= 0) gguf_write_u32(w, "tokenizer.ggml.padding_token_id", (uint32_t)pad);
    if (add_bos >= 0) gguf_write_bool(w, "tokenizer.ggml.add_bos_token", add_bos == 1);
    if (add_eos >= 0) gguf_write_bool(w, "tokenizer.ggml.add_eos_token", add_eos == 1);
    gguf_write_bool(w, "tokenizer.ggml.add_space_prefix", spm && spm_prefix);
    if (tmpl) gguf_write_str(w, "tokenizer.chat_template", tmpl);
    rc = AS_OK;
done:
    for (int32_t k = 0; merges && k < n_merges; k++) free(merges[k]);
    free(merges), free(scores);
    vocab_free(&v);
    cJSON_Delete(root), cJSON_Delete(cfg);
    return rc;
}

// Reads dir/name into *out (NULL when the file is absent and optional).
static int read_opt(const char *dir, const char *name, bool required, char **out, size_t *len) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    *out = NULL, *len = 0;
    if (!required && access(path, F_OK)) return AS_OK;
    return as_read_file(path, out, len);
}

int tokenizer_hf_read(gguf_writer *w, const char *dir, int32_t n_vocab) {
    char *tok = NULL, *cfg = NULL, *jinja = NULL;
    size_t tl, cl, jl;
    int rc = AS_FAIL;
    if (read_opt(dir, "tokenizer.json", true, &tok, &tl) || read_opt(dir, "tokenizer_config.json", false, &cfg, &cl) ||
        read_opt(dir, "chat_template.jinja", false, &jinja, &jl))
        goto done;
    rc = tokenizer_hf_parse(w, tok, tl, cfg, cl, jinja, n_vocab, dir);
done:
    free(tok), free(cfg), free(jinja);
    return rc;
}

int tokenizer_load_hf(tokenizer **out, const char *dir) {
    *out = NULL;
    gguf_writer *w = gguf_writer_init();
    uint8_t *buf = NULL;
    size_t len = 0;
    gguf_file *f = NULL;
    char name[4200];
    snprintf(name, sizeof name, "%s/tokenizer.json", dir);
    int rc = tokenizer_hf_read(w, dir, 0);
    if (!rc) rc = gguf_writer_to_buffer(w, &buf, &len);
    gguf_writer_free(w);
    if (!rc) rc = gguf_open_buffer(&f, buf, len, name);
    if (!rc) rc = tokenizer_load(out, f); // copies everything it keeps
    gguf_close(f);
    free(buf);
    return rc;
}

// ---------------------------------------------------------------------------
// Writing

static cJSON *byte_level(bool add_prefix_space, bool trim_offsets, bool use_regex) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "ByteLevel");
    cJSON_AddBoolToObject(o, "add_prefix_space", add_prefix_space);
    cJSON_AddBoolToObject(o, "trim_offsets", trim_offsets);
    cJSON_AddBoolToObject(o, "use_regex", use_regex);
    return o;
}

static cJSON *typed(const char *type) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", type);
    return o;
}

static cJSON *replace(const char *from, const char *to) {
    cJSON *o = typed("Replace"), *p = cJSON_AddObjectToObject(o, "pattern");
    cJSON_AddStringToObject(p, "String", from);
    cJSON_AddStringToObject(o, "content", to);
    return o;
}

static cJSON *special_piece(const char *text, int type_id) {
    cJSON *o = cJSON_CreateObject(), *s = cJSON_AddObjectToObject(o, "SpecialToken");
    cJSON_AddStringToObject(s, "id", text);
    cJSON_AddNumberToObject(s, "type_id", type_id);
    return o;
}

static cJSON *sequence_piece(const char *id, int type_id) {
    cJSON *o = cJSON_CreateObject(), *s = cJSON_AddObjectToObject(o, "Sequence");
    cJSON_AddStringToObject(s, "id", id);
    cJSON_AddNumberToObject(s, "type_id", type_id);
    return o;
}

// TemplateProcessing that adds BOS and/or EOS around each sequence.
static cJSON *template_processing(const char *bos, int32_t bos_id, const char *eos, int32_t eos_id) {
    cJSON *o = typed("TemplateProcessing");
    cJSON *single = cJSON_AddArrayToObject(o, "single"), *pair = cJSON_AddArrayToObject(o, "pair");
    for (int s = 0; s < 2; s++) {
        cJSON *arr = s ? pair : single;
        for (int k = 0; k <= s; k++) {
            if (bos) cJSON_AddItemToArray(arr, special_piece(bos, k));
            cJSON_AddItemToArray(arr, sequence_piece(k ? "B" : "A", k));
            if (eos) cJSON_AddItemToArray(arr, special_piece(eos, k));
        }
    }
    cJSON *sp = cJSON_AddObjectToObject(o, "special_tokens");
    for (int k = 0; k < 2; k++) {
        const char *t = k ? eos : bos;
        const int32_t tid = k ? eos_id : bos_id;
        if (!t || cJSON_GetObjectItem(sp, t)) continue;
        cJSON *e = cJSON_AddObjectToObject(sp, t);
        cJSON_AddStringToObject(e, "id", t);
        cJSON_AddItemToObject(e, "ids", cJSON_CreateIntArray((const int[]){tid}, 1));
        cJSON_AddItemToObject(e, "tokens", cJSON_CreateStringArray((const char *const[]){t}, 1));
    }
    return o;
}

typedef struct spm_merge {
    int32_t left, right;
    float score;
} spm_merge;

static int cmp_merge(const void *a, const void *b) {
    const spm_merge *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    if (x->left != y->left) return x->left < y->left ? -1 : 1;
    return (x->right > y->right) - (x->right < y->right);
}

// Merges of a SentencePiece vocabulary, as transformers' converter derives
// them: every split of a token into two tokens, ordered by the token's score.
static void spm_merges(const vocab *v, const float *score, cJSON *out) {
    spm_merge *m = NULL;
    size_t n = 0, cap = 0;
    char tmp[1024];
    for (int32_t id = 0; id < v->n; id++) {
        if (v->type[id] != TOKEN_TYPE_NORMAL) continue;
        const char *s = v->text[id];
        const size_t len = strlen(s);
        if (len >= sizeof tmp) continue;
        for (size_t cut = 1; cut < len; cut++) {
            if (((uint8_t)s[cut] & 0xc0) == 0x80) continue; // inside a UTF-8 character
            memcpy(tmp, s, cut), tmp[cut] = 0;
            const int32_t a = vocab_find(v, tmp), b = vocab_find(v, s + cut);
            if (a < 0 || b < 0 || v->type[a] == TOKEN_TYPE_CONTROL || v->type[b] == TOKEN_TYPE_CONTROL) continue;
            if (n == cap) cap = cap ? 2 * cap : 1024, m = as_realloc(m, sizeof *m * cap);
            m[n++] = (spm_merge){a, b, score[id]};
        }
    }
    qsort(m, n, sizeof *m, cmp_merge);
    for (size_t i = 0; i < n; i++)
        cJSON_AddItemToArray(out, cJSON_CreateStringArray((const char *const[]){v->text[m[i].left], v->text[m[i].right]}, 2));
    free(m);
}

static bool name_in(const char *name, const char *const *list) {
    for (; *list; list++)
        if (!strcmp(name, *list)) return true;
    return false;
}

static int opt_id(const gguf_file *f, const char *key, int32_t n, int32_t *out) {
    uint32_t v = UINT32_MAX;
    *out = -1;
    if (gguf_find_key(f, key) < 0) return AS_OK;
    if (gguf_get_u32(f, key, &v)) return AS_FAIL;
    if (v < (uint32_t)n) *out = (int32_t)v;
    return AS_OK;
}

int tokenizer_hf_write(const gguf_file *f, const char *dir) {
    const char *path = f->path ? f->path : "(gguf)";
    gguf_str ms;
    if (gguf_get_str(f, "tokenizer.ggml.model", &ms)) return AS_FAIL;
    const bool spm = gguf_str_eq(ms, "llama");
    if (!spm && !gguf_str_eq(ms, "gpt2"))
        return as_error("%s: tokenizer.ggml.model '%.*s' has no Hugging Face export here (gpt2, llama)", path, (int)AS_MIN(ms.len, 32), ms.ptr);
    hf_pre kind = HF_PRE_NONE;
    if (!spm) {
        char *pre = NULL;
        gguf_str ps;
        if (gguf_find_key(f, "tokenizer.ggml.pre") >= 0) {
            if (gguf_get_str(f, "tokenizer.ggml.pre", &ps)) return AS_FAIL;
            pre = gguf_str_dup(ps);
        }
        for (int k = HF_PRE_SMOLLM; k <= HF_PRE_LLAMA3 && pre; k++)
            if (name_in(pre, k_pre_names[k])) kind = (hf_pre)k;
        if (kind == HF_PRE_NONE) {
            as_error("%s: tokenizer.ggml.pre '%s' has no Hugging Face export here (smollm, gpt2, llama-bpe and their aliases)", path,
                     pre ? pre : "(absent)");
            free(pre);
            return AS_FAIL;
        }
        free(pre);
    }
    gguf_type at;
    uint64_t n;
    int64_t kt, kty = -1, ksc = -1, kme = -1;
    if (gguf_get_arr(f, "tokenizer.ggml.tokens", &at, &n, &kt)) return AS_FAIL;
    if (at != GGUF_TYPE_STRING || n == 0 || n > HF_MAX_VOCAB) return as_error("%s: tokenizer.ggml.tokens: expected 1 .. %d strings", path, HF_MAX_VOCAB);
    uint64_t m;
    if (gguf_find_key(f, "tokenizer.ggml.token_type") >= 0 && (gguf_get_arr(f, "tokenizer.ggml.token_type", &at, &m, &kty) || m < n))
        return as_error("%s: tokenizer.ggml.token_type: expected %llu entries", path, (unsigned long long)n);
    if (spm && (gguf_get_arr(f, "tokenizer.ggml.scores", &at, &m, &ksc) || m < n))
        return as_error("%s: tokenizer.ggml.scores: expected %llu entries", path, (unsigned long long)n);
    uint64_t n_merges = 0;
    if (!spm && gguf_get_arr(f, "tokenizer.ggml.merges", &at, &n_merges, &kme)) return AS_FAIL;
    vocab v = {.n = (int32_t)n};
    v.text = as_calloc(n, sizeof(char *));
    v.type = as_malloc(n);
    for (uint64_t i = 0; i < n; i++) {
        v.text[i] = gguf_str_dup(gguf_arr_str(f, kt, i));
        const double t = kty >= 0 ? gguf_arr_num(f, kty, i) : TOKEN_TYPE_NORMAL;
        v.type[i] = t >= TOKEN_TYPE_NORMAL && t <= TOKEN_TYPE_BYTE ? (uint8_t)t : TOKEN_TYPE_UNDEFINED;
    }
    vocab_index(&v);
    int32_t bos, eos, unk, pad;
    bool add_bos = spm, add_eos = false, add_prefix = spm;
    int rc = AS_FAIL;
    char *tok_text = NULL, *cfg_text = NULL;
    cJSON *root = NULL, *cfg = NULL;
    float *score = NULL;
    if (opt_id(f, "tokenizer.ggml.bos_token_id", v.n, &bos) || opt_id(f, "tokenizer.ggml.eos_token_id", v.n, &eos) ||
        opt_id(f, "tokenizer.ggml.unknown_token_id", v.n, &unk) || opt_id(f, "tokenizer.ggml.padding_token_id", v.n, &pad) ||
        gguf_opt_bool(f, "tokenizer.ggml.add_bos_token", &add_bos) || gguf_opt_bool(f, "tokenizer.ggml.add_eos_token", &add_eos) ||
        gguf_opt_bool(f, "tokenizer.ggml.add_space_prefix", &add_prefix))
        goto done;
    if (spm && unk < 0 && gguf_find_key(f, "tokenizer.ggml.unknown_token_id") < 0 && v.n > 0) unk = 0; // llama.cpp's SPM default
    if (add_bos && bos < 0) add_bos = false;
    if (add_eos && eos < 0) add_eos = false;

    root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "version", "1.0");
    cJSON_AddNullToObject(root, "truncation");
    cJSON_AddNullToObject(root, "padding");
    cJSON *added = cJSON_AddArrayToObject(root, "added_tokens");
    for (int32_t i = 0; i < v.n; i++) {
        const uint8_t t = v.type[i];
        if (t != TOKEN_TYPE_CONTROL && t != TOKEN_TYPE_USER_DEFINED && t != TOKEN_TYPE_UNKNOWN) continue;
        cJSON *a = cJSON_CreateObject();
        cJSON_AddNumberToObject(a, "id", i);
        cJSON_AddStringToObject(a, "content", v.text[i]);
        cJSON_AddBoolToObject(a, "single_word", false);
        cJSON_AddBoolToObject(a, "lstrip", false);
        cJSON_AddBoolToObject(a, "rstrip", false);
        cJSON_AddBoolToObject(a, "normalized", false);
        cJSON_AddBoolToObject(a, "special", t != TOKEN_TYPE_USER_DEFINED);
        cJSON_AddItemToArray(added, a);
    }
    if (spm) {
        cJSON *norm = add_prefix ? typed("Sequence") : replace(" ", "\xe2\x96\x81");
        if (add_prefix) {
            cJSON *list = cJSON_AddArrayToObject(norm, "normalizers"), *p = typed("Prepend");
            cJSON_AddStringToObject(p, "prepend", "\xe2\x96\x81");
            cJSON_AddItemToArray(list, p);
            cJSON_AddItemToArray(list, replace(" ", "\xe2\x96\x81"));
        }
        cJSON_AddItemToObject(root, "normalizer", norm);
        cJSON_AddNullToObject(root, "pre_tokenizer");
    } else {
        cJSON_AddNullToObject(root, "normalizer");
        cJSON *pre;
        if (kind == HF_PRE_GPT2) pre = byte_level(false, true, true);
        else {
            pre = typed("Sequence");
            cJSON *list = cJSON_AddArrayToObject(pre, "pretokenizers");
            if (kind == HF_PRE_SMOLLM) {
                cJSON *d = typed("Digits");
                cJSON_AddBoolToObject(d, "individual_digits", true);
                cJSON_AddItemToArray(list, d);
                cJSON_AddItemToArray(list, byte_level(false, true, true));
            } else {
                cJSON *s = typed("Split"), *p = cJSON_AddObjectToObject(s, "pattern");
                cJSON_AddStringToObject(p, "Regex", k_llama3_regex);
                cJSON_AddStringToObject(s, "behavior", "Isolated");
                cJSON_AddBoolToObject(s, "invert", false);
                cJSON_AddItemToArray(list, s);
                cJSON_AddItemToArray(list, byte_level(false, true, false));
            }
        }
        cJSON_AddItemToObject(root, "pre_tokenizer", pre);
    }
    if (add_bos || add_eos)
        cJSON_AddItemToObject(root, "post_processor",
                              template_processing(add_bos ? v.text[bos] : NULL, bos, add_eos ? v.text[eos] : NULL, eos));
    else if (!spm) cJSON_AddItemToObject(root, "post_processor", byte_level(true, false, true));
    else cJSON_AddNullToObject(root, "post_processor");
    if (spm) {
        cJSON *dec = typed("Sequence"), *list = cJSON_AddArrayToObject(dec, "decoders");
        cJSON_AddItemToArray(list, replace("\xe2\x96\x81", " "));
        cJSON_AddItemToArray(list, typed("ByteFallback"));
        cJSON_AddItemToArray(list, typed("Fuse"));
        if (add_prefix) {
            cJSON *s = typed("Strip");
            cJSON_AddStringToObject(s, "content", " ");
            cJSON_AddNumberToObject(s, "start", 1);
            cJSON_AddNumberToObject(s, "stop", 0);
            cJSON_AddItemToArray(list, s);
        }
        cJSON_AddItemToObject(root, "decoder", dec);
    } else {
        cJSON_AddItemToObject(root, "decoder", byte_level(true, true, true));
    }
    cJSON *model = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddNullToObject(model, "dropout");
    if (spm && unk >= 0) cJSON_AddStringToObject(model, "unk_token", v.text[unk]);
    else cJSON_AddNullToObject(model, "unk_token");
    cJSON_AddNullToObject(model, "continuing_subword_prefix");
    cJSON_AddNullToObject(model, "end_of_word_suffix");
    cJSON_AddBoolToObject(model, "fuse_unk", spm);
    cJSON_AddBoolToObject(model, "byte_fallback", spm);
    cJSON_AddBoolToObject(model, "ignore_merges", kind == HF_PRE_LLAMA3);
    cJSON *jv = cJSON_AddObjectToObject(model, "vocab");
    for (int32_t i = 0; i < v.n; i++) cJSON_AddItemToObject(jv, v.text[i], cJSON_CreateNumber(i));
    cJSON *jm = cJSON_AddArrayToObject(model, "merges");
    if (spm) {
        score = as_malloc(sizeof(float) * (size_t)v.n);
        for (int32_t i = 0; i < v.n; i++) score[i] = (float)gguf_arr_num(f, ksc, (uint64_t)i);
        spm_merges(&v, score, jm);
    } else {
        for (uint64_t i = 0; i < n_merges; i++) {
            char *s = gguf_str_dup(gguf_arr_str(f, kme, i)), *sp = strchr(s, ' ');
            if (!sp) {
                as_error("%s: tokenizer.ggml.merges[%llu]: expected \"left right\"", path, (unsigned long long)i);
                free(s);
                goto done;
            }
            *sp = 0;
            cJSON_AddItemToArray(jm, cJSON_CreateStringArray((const char *const[]){s, sp + 1}, 2));
            free(s);
        }
    }
    // tokenizer_config.json: special tokens, flags, chat template.
    cfg = cJSON_CreateObject();
    cJSON_AddBoolToObject(cfg, "add_bos_token", add_bos);
    cJSON_AddBoolToObject(cfg, "add_eos_token", add_eos);
    if (bos >= 0) cJSON_AddStringToObject(cfg, "bos_token", v.text[bos]);
    if (eos >= 0) cJSON_AddStringToObject(cfg, "eos_token", v.text[eos]);
    if (unk >= 0) cJSON_AddStringToObject(cfg, "unk_token", v.text[unk]);
    if (pad >= 0) cJSON_AddStringToObject(cfg, "pad_token", v.text[pad]);
    cJSON_AddBoolToObject(cfg, "clean_up_tokenization_spaces", false);
    cJSON_AddStringToObject(cfg, "tokenizer_class", "PreTrainedTokenizerFast");
    if (gguf_find_key(f, "tokenizer.chat_template") >= 0) {
        gguf_str ct;
        if (gguf_get_str(f, "tokenizer.chat_template", &ct)) goto done;
        char *s = gguf_str_dup(ct);
        cJSON_AddStringToObject(cfg, "chat_template", s);
        free(s);
    }
    tok_text = as_json_print(root, false);
    cfg_text = as_json_print(cfg, true);
    char p[4096];
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    if (as_write_file_atomic(p, tok_text, strlen(tok_text))) goto done;
    snprintf(p, sizeof p, "%s/tokenizer_config.json", dir);
    if (as_write_file_atomic(p, cfg_text, strlen(cfg_text))) goto done;
    rc = AS_OK;
done:
    free(tok_text), free(cfg_text), free(score);
    cJSON_Delete(root), cJSON_Delete(cfg);
    vocab_free(&v);
    return rc;
}
