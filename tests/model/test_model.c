// The model against tools/ref_model.py (NumPy, float64, written from the HF
// math): tiny random llama (tied, untied) and gemma models whose weights and
// expected logits are in tests/vectors/model_<variant>.json.  This test writes
// each model to a GGUF with gguf_writer (as the F32 file, and as a low-precision
// file with F16 matrices and BF16 norms), loads it with model_load and checks
// the logits of every way of feeding the same tokens: whole-sequence prefill,
// token-by-token decode, all sequences in one batch (interleaved and grouped),
// and prefill-3-then-decode with logits asked for only some rows, and a prefix
// copied from another sequence (kv_cache_copy_prefix) then continued.  The
// untied llama also carries per-frequency RoPE factors (rope_freqs.weight).  Plus the
// errors: missing tensor, wrong shape, unknown architecture, missing key, bad
// batches.
#include "test_common.h"
#include "test_vectors.h"

#include <cjson/cJSON.h>
#include <math.h>

#include "model/model.h"
#include "tensor/quant.h"
#include "util/common.h"

#define TOL 1e-4

// ---- the reference vectors ----

typedef struct ref_tensor {
    char *name;
    uint32_t n_dims;
    int64_t ne[2];
    float *data;
} ref_tensor;

typedef struct ref_model {
    char variant[32];
    cJSON *doc;
    const cJSON *metadata;
    ref_tensor *tensors;
    int n_tensors;
    int n_seq;
    int32_t *seq_len, **seqs;
    int32_t n_vocab, total;
    float *logits, *logits_lowp; // (total, n_vocab): sequences one after another
} ref_model;

static void ref_load(ref_model *r, const char *variant) {
    memset(r, 0, sizeof *r);
    snprintf(r->variant, sizeof r->variant, "%s", variant);
    char path[512];
    snprintf(path, sizeof path, "%s/model_%s.json", AS_TEST_VECTORS, variant);
    char *text;
    assert_int_equal(as_read_file(path, &text, NULL), AS_OK);
    r->doc = cJSON_Parse(text);
    free(text);
    assert_non_null(r->doc);
    r->metadata = cJSON_GetObjectItem(r->doc, "metadata");
    r->n_vocab = cJSON_GetObjectItem(cJSON_GetObjectItem(r->doc, "config"), "n_vocab")->valueint;
    const cJSON *ts = cJSON_GetObjectItem(r->doc, "tensors");
    r->n_tensors = cJSON_GetArraySize(ts);
    r->tensors = as_calloc((size_t)r->n_tensors, sizeof *r->tensors);
    for (int i = 0; i < r->n_tensors; i++) {
        const cJSON *t = cJSON_GetArrayItem(ts, i);
        ref_tensor *rt = &r->tensors[i];
        rt->name = cJSON_GetObjectItem(t, "name")->valuestring;
        const cJSON *ne = cJSON_GetObjectItem(t, "ne");
        rt->n_dims = (uint32_t)cJSON_GetArraySize(ne);
        rt->ne[1] = 1;
        for (uint32_t d = 0; d < rt->n_dims; d++) rt->ne[d] = (int64_t)cJSON_GetArrayItem(ne, (int)d)->valuedouble;
        size_t n;
        rt->data = as_test_b64_floats(cJSON_GetObjectItem(t, "data")->valuestring, &n);
        assert_int_equal(n, (size_t)(rt->ne[0] * rt->ne[1]));
    }
    const cJSON *seqs = cJSON_GetObjectItem(r->doc, "sequences");
    r->n_seq = cJSON_GetArraySize(seqs);
    r->seq_len = as_calloc((size_t)r->n_seq, sizeof(int32_t));
    r->seqs = as_calloc((size_t)r->n_seq, sizeof(int32_t *));
    for (int s = 0; s < r->n_seq; s++) {
        const cJSON *a = cJSON_GetArrayItem(seqs, s);
        r->seq_len[s] = cJSON_GetArraySize(a);
        r->seqs[s] = as_malloc(sizeof(int32_t) * (size_t)r->seq_len[s]);
        for (int i = 0; i < r->seq_len[s]; i++) r->seqs[s][i] = cJSON_GetArrayItem(a, i)->valueint;
        r->total += r->seq_len[s];
    }
    size_t n;
    r->logits = as_test_b64_floats(cJSON_GetObjectItem(r->doc, "logits")->valuestring, &n);
    assert_int_equal(n, (size_t)r->total * (size_t)r->n_vocab);
    r->logits_lowp = as_test_b64_floats(cJSON_GetObjectItem(r->doc, "logits_lowp")->valuestring, &n);
    assert_int_equal(n, (size_t)r->total * (size_t)r->n_vocab);
}

static void ref_free(ref_model *r) {
    for (int i = 0; i < r->n_tensors; i++) free(r->tensors[i].data);
    for (int s = 0; s < r->n_seq; s++) free(r->seqs[s]);
    free(r->tensors), free(r->seqs), free(r->seq_len), free(r->logits), free(r->logits_lowp);
    cJSON_Delete(r->doc);
}

// Reference logits row of token i of sequence s.
static const float *ref_row(const ref_model *r, const float *all, int s, int i) {
    int64_t off = 0;
    for (int k = 0; k < s; k++) off += r->seq_len[k];
    return all + (off + i) * r->n_vocab;
}

// ---- writing the GGUF ----

typedef struct gguf_edit {
    const char *drop_tensor;   // leave this tensor out
    const char *shrink_tensor; // write this tensor with its last dimension one shorter
    const char *arch;          // replace general.architecture
    const char *drop_key;      // leave this key out
    const char *set_key;       // give this (u32 or f32) key the value set_value
    double set_value;
} gguf_edit;

static void write_model(const ref_model *r, const char *path, bool lowp, const gguf_edit *e) {
    gguf_writer *w = gguf_writer_init();
    const cJSON *md;
    cJSON_ArrayForEach(md, r->metadata) {
        const char *key = cJSON_GetObjectItem(md, "key")->valuestring, *type = cJSON_GetObjectItem(md, "type")->valuestring;
        const cJSON *v = cJSON_GetObjectItem(md, "value");
        if (e && e->drop_key && !strcmp(key, e->drop_key)) continue;
        const double num = (e && e->set_key && !strcmp(key, e->set_key)) ? e->set_value : v->valuedouble;
        if (!strcmp(type, "str")) gguf_write_str(w, key, (e && e->arch && !strcmp(key, "general.architecture")) ? e->arch : v->valuestring);
        else if (!strcmp(type, "u32")) gguf_write_u32(w, key, (uint32_t)num);
        else if (!strcmp(type, "f32")) gguf_write_f32(w, key, (float)num);
        else fail_msg("unknown metadata type %s", type);
    }
    for (int i = 0; i < r->n_tensors; i++) {
        const ref_tensor *t = &r->tensors[i];
        if (e && e->drop_tensor && !strcmp(t->name, e->drop_tensor)) continue;
        int64_t ne[2] = {t->ne[0], t->ne[1]};
        if (e && e->shrink_tensor && !strcmp(t->name, e->shrink_tensor)) ne[t->n_dims - 1]--;
        const int64_t n = ne[0] * ne[1];
        if (!lowp) {
            gguf_write_tensor(w, t->name, GGML_TYPE_F32, t->n_dims, ne, t->data, sizeof(float) * (size_t)n);
        } else {
            // Matrices as F16, norm vectors as BF16 (the reference rounds identically).
            ggml_type ty = t->n_dims == 2 ? GGML_TYPE_F16 : GGML_TYPE_BF16;
            uint16_t *h = as_malloc(sizeof(uint16_t) * (size_t)n);
            for (int64_t j = 0; j < n; j++) h[j] = ty == GGML_TYPE_F16 ? as_f32_to_fp16(t->data[j]) : as_f32_to_bf16(t->data[j]);
            gguf_write_tensor(w, t->name, ty, t->n_dims, ne, h, sizeof(uint16_t) * (size_t)n);
            free(h);
        }
    }
    assert_int_equal(gguf_writer_save(w, path), AS_OK);
    gguf_writer_free(w);
}

// ---- comparing logits ----

// max |a - b| / max |b| over one row of logits.
static double rel_err(const float *a, const float *b, int n) {
    double num = 0, den = 0;
    for (int i = 0; i < n; i++) {
        num = fmax(num, fabs((double)a[i] - b[i]));
        den = fmax(den, fabs((double)b[i]));
    }
    return num / fmax(den, 1e-30);
}

static double worst;
static double tol = TOL; // TOL, or BF16_TOL while the BF16 precision runs
static kernel_precision prec = KERNEL_PRECISION_F32; // of the KV caches the ways of feeding below make
// bf16 operands (two roundings of 2^-8 relative per product) on these tiny
// random models: logits within ~0.5% of the reference's scale.
#define BF16_TOL 2e-2

static void check_row(const ref_model *r, const float *ref_all, const float *got, int s, int i, const char *how) {
    double e = rel_err(got, ref_row(r, ref_all, s, i), r->n_vocab);
    worst = fmax(worst, e);
    if (!(e < tol)) fail_msg("%s %s: sequence %d token %d: relative error %.3g >= %.0e", r->variant, how, s, i, e, tol);
}

// ---- the ways of feeding tokens ----

typedef struct fixture {
    ref_model ref;
    char *dir;
    char path[512], path_lowp[512];
} fixture;

// (a) each sequence alone, all its tokens in one call.
static void run_prefill(const ref_model *r, model *m, const float *ref_all) {
    for (int s = 0; s < r->n_seq; s++) {
        const int n = r->seq_len[s];
        kv_cache *kv = kv_cache_init(&m->cfg, 1, n, prec);
        int32_t seq[64], pos[64];
        for (int i = 0; i < n; i++) seq[i] = 0, pos[i] = i;
        float *logits = as_malloc(sizeof(float) * (size_t)n * r->n_vocab);
        model_batch b = {.n_tokens = n, .token = r->seqs[s], .seq = seq, .pos = pos};
        assert_int_equal(model_forward(m, kv, &b, logits), AS_OK);
        assert_int_equal(kv->len[0], n);
        for (int i = 0; i < n; i++) check_row(r, ref_all, logits + (int64_t)i * r->n_vocab, s, i, "prefill");
        free(logits);
        kv_cache_free(kv);
    }
}

// (b) each sequence one token per call through the KV cache.
static void run_decode(const ref_model *r, model *m, const float *ref_all) {
    kv_cache *kv = kv_cache_init(&m->cfg, 2, 32, prec);
    float *logits = as_malloc(sizeof(float) * (size_t)r->n_vocab);
    for (int s = 0; s < r->n_seq; s++) {
        kv_cache_clear_seq(kv, 1);
        for (int i = 0; i < r->seq_len[s]; i++) {
            int32_t seq = 1, pos = i;
            model_batch b = {.n_tokens = 1, .token = &r->seqs[s][i], .seq = &seq, .pos = &pos};
            assert_int_equal(model_forward(m, kv, &b, logits), AS_OK);
            check_row(r, ref_all, logits, s, i, "decode");
        }
    }
    free(logits);
    kv_cache_free(kv);
}

// (b) all sequences in ONE batch: interleaved (round robin over positions) or
// grouped (each sequence's tokens together, in reverse sequence order).
static void run_one_batch(const ref_model *r, model *m, const float *ref_all, bool interleaved) {
    int32_t tok[128], seq[128], pos[128], src_s[128], src_i[128];
    int n = 0;
    if (interleaved) {
        for (int i = 0; i < 64; i++)
            for (int s = 0; s < r->n_seq; s++)
                if (i < r->seq_len[s]) tok[n] = r->seqs[s][i], seq[n] = s, pos[n] = i, src_s[n] = s, src_i[n] = i, n++;
    } else {
        for (int s = r->n_seq - 1; s >= 0; s--)
            for (int i = 0; i < r->seq_len[s]; i++) tok[n] = r->seqs[s][i], seq[n] = s, pos[n] = i, src_s[n] = s, src_i[n] = i, n++;
    }
    assert_int_equal(n, r->total);
    kv_cache *kv = kv_cache_init(&m->cfg, r->n_seq, 24, prec);
    float *logits = as_malloc(sizeof(float) * (size_t)n * r->n_vocab);
    model_batch b = {.n_tokens = n, .token = tok, .seq = seq, .pos = pos};
    assert_int_equal(model_forward(m, kv, &b, logits), AS_OK);
    for (int k = 0; k < n; k++) check_row(r, ref_all, logits + (int64_t)k * r->n_vocab, src_s[k], src_i[k], interleaved ? "one batch, interleaved" : "one batch, grouped");
    for (int s = 0; s < r->n_seq; s++) assert_int_equal(kv->len[s], r->seq_len[s]);
    free(logits);
    kv_cache_free(kv);
}

// (b) chunks: the first 3 tokens of every sequence in one call (logits only for
// each sequence's last prefill row), then one token per unfinished sequence per
// call, sequences dropping out as they end.
static void run_chunks(const ref_model *r, model *m, const float *ref_all) {
    kv_cache *kv = kv_cache_init(&m->cfg, r->n_seq, 20, prec);
    int32_t tok[128], seq[128], pos[128], src_s[128], src_i[128];
    bool want[128];
    float *logits = as_malloc(sizeof(float) * 128 * (size_t)r->n_vocab);
    for (int start = 0;; start = (start == 0 ? 3 : start + 1)) {
        int n = 0;
        for (int s = 0; s < r->n_seq; s++) {
            const int end = AS_MIN(r->seq_len[s], start == 0 ? 3 : start + 1);
            for (int i = start; i < end; i++) {
                tok[n] = r->seqs[s][i], seq[n] = s, pos[n] = i, src_s[n] = s, src_i[n] = i;
                want[n++] = i == end - 1;
            }
        }
        if (n == 0) break;
        model_batch b = {.n_tokens = n, .token = tok, .seq = seq, .pos = pos, .want_logits = want};
        assert_int_equal(model_forward(m, kv, &b, logits), AS_OK);
        int o = 0;
        for (int k = 0; k < n; k++)
            if (want[k]) check_row(r, ref_all, logits + (int64_t)(o++) * r->n_vocab, src_s[k], src_i[k], "chunks");
    }
    for (int s = 0; s < r->n_seq; s++) assert_int_equal(kv->len[s], r->seq_len[s]);
    free(logits);
    kv_cache_free(kv);
}

// (c) a prefix copied from another sequence: the longest sequence fills
// sequence 0, sequence 1 holds other tokens (longer than the prefix), then
// kv_cache_copy_prefix gives sequence 1 the first L positions of sequence 0 and
// sequence 1 runs the rest; every row must match the reference, for prefixes
// inside the first key tile, at its end and past it, and the empty one.
static void run_copy_prefix(const ref_model *r, model *m, const float *ref_all) {
    int s = 0;
    for (int k = 1; k < r->n_seq; k++) s = r->seq_len[k] > r->seq_len[s] ? k : s;
    const int n = r->seq_len[s];
    assert_true(n > KV_TILE + 1);
    kv_cache *kv = kv_cache_init(&m->cfg, 2, 32, prec);
    int32_t tok[64], seq[64], pos[64];
    float *logits = as_malloc(sizeof(float) * (size_t)n * r->n_vocab);
    for (int i = 0; i < n; i++) seq[i] = 0, pos[i] = i;
    assert_int_equal(model_forward(m, kv, &(model_batch){.n_tokens = n, .token = r->seqs[s], .seq = seq, .pos = pos}, logits), AS_OK);
    const int32_t prefixes[] = {5, KV_TILE, KV_TILE + 1, 0, n - 1};
    for (size_t c = 0; c < AS_ARRAY_LEN(prefixes); c++) {
        const int32_t L = prefixes[c];
        kv_cache_clear_seq(kv, 1);
        for (int i = 0; i < n; i++) tok[i] = (r->seqs[s][n - 1 - i] + 7) % r->n_vocab, seq[i] = 1, pos[i] = i;
        assert_int_equal(model_forward(m, kv, &(model_batch){.n_tokens = n, .token = tok, .seq = seq, .pos = pos}, logits), AS_OK);
        kv_cache_copy_prefix(kv, 1, 0, L);
        assert_int_equal(kv->len[1], L);
        assert_int_equal(kv->len[0], n);
        for (int i = L; i < n; i++) seq[i - L] = 1, pos[i - L] = i;
        model_batch b = {.n_tokens = n - L, .token = r->seqs[s] + L, .seq = seq, .pos = pos};
        assert_int_equal(model_forward(m, kv, &b, logits), AS_OK);
        assert_int_equal(kv->len[1], n);
        for (int i = L; i < n; i++) check_row(r, ref_all, logits + (int64_t)(i - L) * r->n_vocab, s, i, "copied prefix");
    }
    free(logits);
    kv_cache_free(kv);
}

static void check_variant(const char *variant, int32_t expect_head_dim, bool expect_tied, bool expect_neox, bool expect_rope_freqs) {
    fixture fx;
    ref_load(&fx.ref, variant);
    fx.dir = as_test_tmpdir();
    assert_non_null(fx.dir);
    snprintf(fx.path, sizeof fx.path, "%s/%s.gguf", fx.dir, variant);
    snprintf(fx.path_lowp, sizeof fx.path_lowp, "%s/%s_lowp.gguf", fx.dir, variant);
    write_model(&fx.ref, fx.path, false, NULL);
    write_model(&fx.ref, fx.path_lowp, true, NULL);
    for (int lowp = 0; lowp < 2; lowp++) {
        model *m;
        if (model_load(&m, lowp ? fx.path_lowp : fx.path) != AS_OK) fail_msg("%s", as_last_error());
        assert_int_equal(m->cfg.head_dim, expect_head_dim);
        assert_int_equal(m->cfg.n_vocab, fx.ref.n_vocab);
        assert_int_equal(m->cfg.tied_output, expect_tied);
        assert_int_equal(m->cfg.rope_neox, expect_neox);
        assert_int_equal(m->cfg.n_ff, 96);
        assert_int_equal(m->rope_freqs != NULL, expect_rope_freqs);
        const float *ref_all = lowp ? fx.ref.logits_lowp : fx.ref.logits;
        worst = 0;
        run_prefill(&fx.ref, m, ref_all);
        run_decode(&fx.ref, m, ref_all);
        run_one_batch(&fx.ref, m, ref_all, true);
        run_one_batch(&fx.ref, m, ref_all, false);
        run_chunks(&fx.ref, m, ref_all);
        run_copy_prefix(&fx.ref, m, ref_all);
        printf("  %s%s: worst relative error %.2e\n", variant, lowp ? " (F16/BF16 file)" : "", worst);
        if (!lowp) { // the BF16 precision, every way of feeding tokens, against the same fp32 reference
            prec = KERNEL_PRECISION_BF16, tol = BF16_TOL, worst = 0;
            run_prefill(&fx.ref, m, ref_all);
            run_decode(&fx.ref, m, ref_all);
            run_one_batch(&fx.ref, m, ref_all, true);
            run_chunks(&fx.ref, m, ref_all);
            run_copy_prefix(&fx.ref, m, ref_all);
            printf("  %s, BF16 precision: worst relative error %.2e\n", variant, worst);
            assert_true(worst > TOL); // the bf16 path really ran (it rounds)
            prec = KERNEL_PRECISION_F32, tol = TOL;
        }
        model_free(m);
    }
    // The low-precision file must really differ from the F32 one, or the
    // second pass above proved nothing about F16/BF16 decoding.
    assert_true(rel_err(fx.ref.logits, fx.ref.logits_lowp, fx.ref.n_vocab * fx.ref.total) > 10 * TOL);
    unlink(fx.path);
    unlink(fx.path_lowp);
    rmdir(fx.dir);
    ref_free(&fx.ref);
}

static void test_llama_tied(void **state) {
    (void)state;
    check_variant("llama_tied", 8, true, false, false);
}

static void test_llama_untied(void **state) {
    (void)state;
    check_variant("llama_untied", 8, false, false, true);
}

static void test_gemma(void **state) {
    (void)state;
    check_variant("gemma", 32, true, true, false);
}

// ---- errors ----

static void expect_load_error(const ref_model *r, const char *dir, const gguf_edit *e, const char *needle1, const char *needle2) {
    char path[512];
    snprintf(path, sizeof path, "%s/bad.gguf", dir);
    write_model(r, path, false, e);
    model *m = (model *)0x1;
    assert_int_equal(model_load(&m, path), AS_FAIL);
    assert_null(m);
    const char *msg = as_last_error();
    if (!strstr(msg, path) || !strstr(msg, needle1) || (needle2 && !strstr(msg, needle2)))
        fail_msg("error '%s' should name %s, %s and %s", msg, path, needle1, needle2 ? needle2 : "");
    assert_null(strchr(msg, '\n'));
    unlink(path);
}

static void test_load_errors(void **state) {
    (void)state;
    ref_model r;
    ref_load(&r, "llama_tied");
    char *dir = as_test_tmpdir();
    assert_non_null(dir);
    expect_load_error(&r, dir, &(gguf_edit){.drop_tensor = "blk.1.ffn_up.weight"}, "blk.1.ffn_up.weight", "missing");
    // attn_k is (n_head_kv * head_dim = 16) rows of C = 32.
    expect_load_error(&r, dir, &(gguf_edit){.shrink_tensor = "blk.0.attn_k.weight"}, "blk.0.attn_k.weight", "expected shape [32, 16], found [32, 15]");
    expect_load_error(&r, dir, &(gguf_edit){.shrink_tensor = "output_norm.weight"}, "output_norm.weight", "expected shape [32], found [31]");
    expect_load_error(&r, dir, &(gguf_edit){.arch = "mamba"}, "mamba", "not supported");
    expect_load_error(&r, dir, &(gguf_edit){.drop_key = "llama.block_count"}, "llama.block_count", NULL);
    expect_load_error(&r, dir, &(gguf_edit){.drop_tensor = "token_embd.weight"}, "token_embd.weight", "missing");
    // Impossible configurations are refused by key before any tensor is looked at.
    expect_load_error(&r, dir, &(gguf_edit){.set_key = "llama.attention.head_count_kv", .set_value = 3}, "head_count 4 is not a multiple of head_count_kv 3", NULL);
    expect_load_error(&r, dir, &(gguf_edit){.set_key = "llama.embedding_length", .set_value = 0}, "llama.embedding_length", "expected a value in [1,");
    expect_load_error(&r, dir, &(gguf_edit){.set_key = "llama.rope.dimension_count", .set_value = 7}, "llama.rope.dimension_count 7", "even");
    expect_load_error(&r, dir, &(gguf_edit){.set_key = "llama.rope.dimension_count", .set_value = 10}, "llama.rope.dimension_count 10", "<= head size 8");
    expect_load_error(&r, dir, &(gguf_edit){.set_key = "llama.attention.head_count", .set_value = 6}, "llama.attention.key_length", "absent");
    expect_load_error(&r, dir, &(gguf_edit){.set_key = "llama.attention.layer_norm_rms_epsilon", .set_value = 0}, "layer_norm_rms_epsilon", "(0, 1)");
    expect_load_error(&r, dir, &(gguf_edit){.set_key = "llama.rope.freq_base", .set_value = NAN}, "llama.rope.freq_base", "finite");
    // More layers than the file has: the first absent block is named.
    expect_load_error(&r, dir, &(gguf_edit){.set_key = "llama.block_count", .set_value = 3}, "blk.2.attn_norm.weight", "missing");
    ref_model ru;
    ref_load(&ru, "llama_untied"); // the variant with rope_freqs.weight: (head_dim / 2) = 4 factors
    expect_load_error(&ru, dir, &(gguf_edit){.shrink_tensor = "rope_freqs.weight"}, "rope_freqs.weight", "expected shape [4], found [3]");
    expect_load_error(&ru, dir, &(gguf_edit){.shrink_tensor = "output.weight"}, "output.weight", "expected shape [32, 96], found [32, 95]");
    ref_free(&ru);
    // A file that is not there.
    model *m;
    assert_int_equal(model_load(&m, "/nonexistent/model.gguf"), AS_FAIL);
    assert_non_null(strstr(as_last_error(), "/nonexistent/model.gguf"));
    rmdir(dir);
    ref_free(&r);
}

// The untied reference model written to a scratch folder and loaded.
typedef struct untied {
    ref_model r;
    char *dir;
    char path[512];
} untied;
static model *untied_load(untied *u) {
    ref_load(&u->r, "llama_untied");
    u->dir = as_test_tmpdir();
    snprintf(u->path, sizeof u->path, "%s/m.gguf", u->dir);
    write_model(&u->r, u->path, false, NULL);
    model *m;
    assert_int_equal(model_load(&m, u->path), AS_OK);
    return m;
}
static void untied_free(untied *u) {
    unlink(u->path);
    rmdir(u->dir);
    ref_free(&u->r);
}

static void test_batch_errors(void **state) {
    (void)state;
    untied u;
    model *m = untied_load(&u);
    kv_cache *kv = kv_cache_init(&m->cfg, 2, 4, KERNEL_PRECISION_F32);
    float logits[2 * 96];
    int32_t tok[2] = {1, 2}, seq[2] = {0, 0}, pos[2] = {0, 1};
    model_batch b = {.n_tokens = 2, .token = tok, .seq = seq, .pos = pos};
    struct {
        int32_t tok1, seq1, pos1;
        const char *needle;
    } cases[] = {
        {96, 0, 1, "outside the vocabulary"}, {-1, 0, 1, "outside the vocabulary"}, {2, 2, 0, "sequence 2 outside"},
        {2, 0, 2, "expects position 1 next, found 2"}, {2, 0, 0, "expects position 1 next, found 0"},
    };
    for (size_t i = 0; i < AS_ARRAY_LEN(cases); i++) {
        tok[1] = cases[i].tok1, seq[1] = cases[i].seq1, pos[1] = cases[i].pos1;
        assert_int_equal(model_forward(m, kv, &b, logits), AS_FAIL);
        if (!strstr(as_last_error(), cases[i].needle)) fail_msg("case %zu: '%s' lacks '%s'", i, as_last_error(), cases[i].needle);
        assert_int_equal(kv->len[0], 0); // a rejected batch leaves the cache as it was
    }
    tok[1] = 2, seq[1] = 0, pos[1] = 1;
    assert_int_equal(model_forward(m, kv, &b, NULL), AS_FAIL);
    assert_non_null(strstr(as_last_error(), "no logits buffer"));
    bool none[2] = {false, false};
    b.want_logits = none;
    assert_int_equal(model_forward(m, kv, &b, NULL), AS_OK); // nothing asked, nothing written
    assert_int_equal(kv->len[0], 2);
    kv_cache_clear_seq(kv, 0);
    // Past the cache's context: 4 positions fit, the 5th does not.
    int32_t t4[4] = {1, 2, 3, 4}, s4[4] = {0, 0, 0, 0}, p4[4] = {0, 1, 2, 3};
    model_batch b4 = {.n_tokens = 4, .token = t4, .seq = s4, .pos = p4};
    float l4[4 * 96];
    assert_int_equal(model_forward(m, kv, &b4, l4), AS_OK);
    int32_t p5 = 4;
    model_batch b5 = {.n_tokens = 1, .token = t4, .seq = s4, .pos = &p5};
    assert_int_equal(model_forward(m, kv, &b5, l4), AS_FAIL);
    assert_non_null(strstr(as_last_error(), "past the cache's n_ctx 4"));
    // A copied sequence continues exactly like the original.
    kv_cache_copy_seq(kv, 1, 0);
    assert_int_equal(kv->len[1], 4);
    kv_cache_truncate_seq(kv, 0, 3);
    kv_cache_truncate_seq(kv, 1, 3);
    int32_t tk = 9, sq[2] = {0, 1}, ps = 3;
    float la[96], lb[96];
    assert_int_equal(model_forward(m, kv, &(model_batch){.n_tokens = 1, .token = &tk, .seq = &sq[0], .pos = &ps}, la), AS_OK);
    assert_int_equal(model_forward(m, kv, &(model_batch){.n_tokens = 1, .token = &tk, .seq = &sq[1], .pos = &ps}, lb), AS_OK);
    assert_memory_equal(la, lb, sizeof la);
    // A cache built for another model is refused.
    model_config other = m->cfg;
    other.n_layer = 3;
    kv_cache *kv2 = kv_cache_init(&other, 1, 4, KERNEL_PRECISION_F32);
    assert_int_equal(model_forward(m, kv2, &b4, l4), AS_FAIL);
    assert_non_null(strstr(as_last_error(), "KV cache"));
    assert_null(kv_cache_init(&m->cfg, 0, 4, KERNEL_PRECISION_F32));
    assert_null(kv_cache_init(&m->cfg, 1, 4, (kernel_precision)7));
    assert_non_null(strstr(as_last_error(), "precision 7"));
    kv_cache_free(kv2);
    kv_cache_free(kv);
    model_free(m);
    untied_free(&u);
}

// A backend that cannot hold the weights or the cache (a plugin reporting
// through last_error, as the CUDA backend on a full GPU): model_use_backend and
// model_kv_cache fail with its reason in one line, and the model stays on the
// CPU, usable.
static int g_weights_left;
static as_weights *full_weights_new(const as_matrix *const *parts, int n_parts) {
    if (g_weights_left-- <= 0) return NULL;
    return as_backend_cpu.weights_new(parts, n_parts);
}
static int full_kv_init(kernel_kv *kv, int32_t n_layer, int32_t n_seq, int32_t n_ctx, int32_t n_head_kv, int32_t head_dim) {
    (void)kv, (void)n_layer, (void)n_seq, (void)n_ctx, (void)n_head_kv, (void)head_dim;
    return AS_FAIL;
}
static const char *full_last_error(void) { return "fake backend: no room on the device"; }

static void test_backend_full(void **state) {
    (void)state;
    untied u;
    model *m = untied_load(&u);
    as_backend full = as_backend_cpu;
    full.name = "full", full.weights_new = full_weights_new, full.kv_init = full_kv_init, full.last_error = full_last_error;
    g_weights_left = 5; // the second layer's second group fails
    assert_int_equal(model_use_backend(m, &full), AS_FAIL);
    assert_non_null(strstr(as_last_error(), "layer 1's weights on full: fake backend: no room on the device"));
    assert_ptr_equal(m->be, &as_backend_cpu);
    kv_cache *kv = model_kv_cache(m, 1, 4, KERNEL_PRECISION_F32);
    int32_t tok = 1, seq = 0, pos = 0;
    float logits[96];
    assert_int_equal(model_forward(m, kv, &(model_batch){.n_tokens = 1, .token = &tok, .seq = &seq, .pos = &pos}, logits), AS_OK);
    kv_cache_free(kv);
    g_weights_left = 1 << 20;
    assert_int_equal(model_use_backend(m, &full), AS_OK);
    assert_null(model_kv_cache(m, 3, 4, KERNEL_PRECISION_F32));
    assert_non_null(strstr(as_last_error(), "kv cache of 3 sequences x 4 positions on full: fake backend: no room"));
    model_free(m);
    untied_free(&u);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backend_full),
        cmocka_unit_test(test_llama_tied), cmocka_unit_test(test_llama_untied), cmocka_unit_test(test_gemma),
        cmocka_unit_test(test_load_errors), cmocka_unit_test(test_batch_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
