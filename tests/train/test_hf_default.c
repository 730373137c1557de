// The default model's exports against what the ecosystem computes on them
// (tests/vectors/hf_export_default.json, from tools/check_hf_export.py, which
// ran transformers, its AutoTokenizer and llama-cpp-python on `alphaspin
// merge` outputs):
//  * train_export_hf's folder: tokenizer_load_hf gives AutoTokenizer's ids on
//    every string; model_load(<folder>) gives transformers' log-probs, and the
//    GGUF path's;
//  * train_export_gguf's F32, F16 and Q8_0 files: the inference engine gives
//    llama.cpp's log-probs on each (llama.cpp quantises activations to 8 bits
//    for Q8_0 weights and keeps its KV cache in F16, hence the looser bounds
//    than against transformers; measured: F32 max 0.0096, F16 0.013, Q8_0
//    0.997, mean 0.077, of the same size as alphaspin's own q8 path).
// Skipped without the default model.  Slow (writes ~1 GB of exports).
#include "train_test_util.h"
#include "train_vectors.h"

#include <math.h>

#include "model/model.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_hf.h"
#include "train/export.h"
#include "train/train.h"
#include "util/common.h"

static char g_dir[300];

// log p(ids[t] | ids[<t]) for t >= 1, f32 precision.
static double *logprobs(model *m, const int32_t *ids, int n) {
    kv_cache *kv = kv_cache_init(&m->cfg, 1, n, KERNEL_PRECISION_F32);
    int32_t *seq = as_calloc((size_t)n, sizeof(int32_t)), *pos = as_malloc(sizeof(int32_t) * (size_t)n);
    for (int i = 0; i < n; i++) pos[i] = i;
    model_batch b = {.n_tokens = n, .token = ids, .seq = seq, .pos = pos};
    const int64_t V = m->cfg.n_vocab;
    float *lg = as_malloc(sizeof(float) * (size_t)(n * V));
    if (model_forward(m, kv, &b, lg)) fail_msg("%s", as_last_error());
    double *out = as_malloc(sizeof(double) * (size_t)n);
    for (int t = 1; t < n; t++) {
        const float *row = lg + (t - 1) * V;
        double mx = row[0], s = 0;
        for (int64_t v = 1; v < V; v++) mx = fmax(mx, row[v]);
        for (int64_t v = 0; v < V; v++) s += exp(row[v] - mx);
        out[t - 1] = row[ids[t]] - mx - log(s);
    }
    free(lg), free(seq), free(pos);
    kv_cache_free(kv);
    return out;
}

// Largest |ours - reference| over every token of every text, for the model
// at `path`; *mean gets the mean.
static double compare(const char *path, const cJSON *texts, const char *key, const char *sub, double *mean) {
    model *m;
    if (model_load(&m, path)) fail_msg("%s", as_last_error());
    double worst = 0, sum = 0;
    int count = 0;
    const cJSON *t;
    cJSON_ArrayForEach(t, texts) {
        const cJSON *ids = cJSON_GetObjectItem(t, "ids"), *ref = cJSON_GetObjectItem(t, key);
        if (sub) ref = cJSON_GetObjectItem(ref, sub);
        const int n = cJSON_GetArraySize(ids);
        int32_t *tok = as_malloc(sizeof(int32_t) * (size_t)n);
        for (int i = 0; i < n; i++) tok[i] = cJSON_GetArrayItem(ids, i)->valueint;
        double *lp = logprobs(m, tok, n);
        assert_int_equal(cJSON_GetArraySize(ref), n - 1);
        for (int i = 0; i < n - 1; i++) {
            const double d = fabs(lp[i] - cJSON_GetArrayItem(ref, i)->valuedouble);
            worst = fmax(worst, d), sum += d, count++;
        }
        free(lp), free(tok);
    }
    model_free(m);
    *mean = sum / count;
    return worst;
}

static void test_exports(void **state) {
    (void)state;
    const char *mp = as_test_default_model();
    cJSON *doc = tv_load_json("hf_export_default.json");
    const cJSON *texts = cJSON_GetObjectItem(doc, "texts");
    train_model *tm;
    if (train_model_load(&tm, mp)) fail_msg("%s", as_last_error());
    char hf[400], p[500];
    snprintf(hf, sizeof hf, "%s/hf", g_dir);
    if (train_export_hf(tm, mp, hf)) fail_msg("%s", as_last_error());

    // Tokenizer: AutoTokenizer's ids on the exported files.
    tokenizer *tok;
    if (tokenizer_load_hf(&tok, hf)) fail_msg("%s", as_last_error());
    int n_str = 0, bad = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(doc, "tokenizer")) {
        const char *s = cJSON_GetObjectItem(c, "text")->valuestring;
        const cJSON *want = cJSON_GetObjectItem(c, "ids");
        int32_t *ids;
        size_t n;
        assert_int_equal(tokenizer_encode(tok, s, strlen(s), false, true, &ids, &n), AS_OK);
        bool same = (int)n == cJSON_GetArraySize(want);
        for (size_t i = 0; same && i < n; i++) same = ids[i] == cJSON_GetArrayItem(want, (int)i)->valueint;
        if (!same && bad++ < 5) fprintf(stderr, "ids differ from AutoTokenizer's on \"%.60s\"\n", s);
        free(ids);
        n_str++;
    }
    tokenizer_free(tok);
    printf("  tokenizer.json: %d strings, ids equal transformers' AutoTokenizer's\n", n_str);
    assert_int_equal(bad, 0);
    assert_true(n_str >= 300);

    // The folder: transformers' log-probs, and those of the original GGUF.
    double mean;
    const double d_hf = compare(hf, texts, "transformers_base_folder", NULL, &mean);
    const double d_gguf = compare(mp, texts, "transformers_base_folder", NULL, &mean);
    printf("  HF folder: max |dlogp| vs transformers %.2e (original Q4_1 GGUF: %.2e)\n", d_hf, d_gguf);
    assert_true(d_hf < 1e-3);
    assert_true(d_gguf < 1e-3);

    // GGUF exports: llama.cpp's log-probs on each.
    const struct {
        ggml_type type;
        const char *name;
        double max_tol, mean_tol;
    } types[] = {{GGML_TYPE_F32, "F32", 0.02, 0.003}, {GGML_TYPE_F16, "F16", 0.03, 0.005}, {GGML_TYPE_Q8_0, "Q8_0", 1.5, 0.12}};
    for (size_t i = 0; i < AS_ARRAY_LEN(types); i++) {
        snprintf(p, sizeof p, "%s/model_%s.gguf", g_dir, types[i].name);
        if (train_export_gguf(tm, mp, p, types[i].type)) fail_msg("%s", as_last_error());
        const double d = compare(p, texts, "llama_cpp", types[i].name, &mean);
        printf("  %s GGUF export: |dlogp| vs llama.cpp max %.2e, mean %.2e\n", types[i].name, d, mean);
        assert_true(d < types[i].max_tol && mean < types[i].mean_tol);
        unlink(p);
    }
    train_model_free(tm);
    const char *files[] = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"};
    for (size_t i = 0; i < AS_ARRAY_LEN(files); i++) snprintf(p, sizeof p, "%s/%s", hf, files[i]), unlink(p);
    rmdir(hf);
    cJSON_Delete(doc);
}

int main(void) {
    AS_REQUIRE_DEFAULT_MODEL();
    (void)tv_write_gguf;
    char *d = as_test_tmpdir();
    if (!d) return 1;
    snprintf(g_dir, sizeof g_dir, "%s", d);
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_exports)};
    const int rc = cmocka_run_group_tests(tests, NULL, NULL);
    rmdir(g_dir);
    return rc;
}
