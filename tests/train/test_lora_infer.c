// LoRA in the inference engine (model_set_lora): adapters read from a PEFT
// folder on their own (train_lora_read_peft) and applied by model_forward over
// the unmerged base give the log-probabilities that Hugging Face PEFT computed
// for the adapted model (tests/vectors/peft_<arch>.json, tools/ref_peft.py);
// switching back to no adapters gives the base's again, bit for bit.
#include "train_test_util.h"
#include "train_vectors.h"

#include "model/model.h"
#include "train/checkpoint.h"
#include "train/train.h"
#include "util/common.h"

// Token log-probabilities of every sequence (positions 1..len-1) from the engine.
static int64_t engine_logps(model *m, const cJSON *seqs, float *out) {
    const int64_t V = m->cfg.n_vocab;
    float *logits = as_malloc(sizeof(float) * 64 * (size_t)V);
    int64_t r = 0;
    for (int s = 0; s < cJSON_GetArraySize(seqs); s++) {
        const cJSON *q = cJSON_GetArrayItem(seqs, s);
        int32_t len = cJSON_GetArraySize(q), tok[64], sq[64], pos[64];
        assert_true(len <= 64);
        for (int i = 0; i < len; i++) tok[i] = cJSON_GetArrayItem(q, i)->valueint, sq[i] = 0, pos[i] = i;
        kv_cache *kv = kv_cache_init(&m->cfg, 1, len, KERNEL_PRECISION_F32);
        model_batch mb = {.n_tokens = len, .token = tok, .seq = sq, .pos = pos};
        assert_int_equal(model_forward(m, kv, &mb, logits), AS_OK);
        for (int i = 1; i < len; i++, r++) {
            const float *z = logits + (i - 1) * V;
            double mx = z[0], se = 0;
            for (int64_t j = 1; j < V; j++) mx = fmax(mx, z[j]);
            for (int64_t j = 0; j < V; j++) se += exp(z[j] - mx);
            out[r] = (float)(z[tok[i]] - mx - log(se));
        }
        kv_cache_free(kv);
    }
    free(logits);
    return r;
}

static double worst_vs(const cJSON *ref, const float *got) {
    double worst = 0;
    int64_t r = 0;
    for (int s = 0; s < cJSON_GetArraySize(ref); s++)
        for (int i = 0; i < cJSON_GetArraySize(cJSON_GetArrayItem(ref, s)); i++, r++) {
            const double want = cJSON_GetArrayItem(cJSON_GetArrayItem(ref, s), i)->valuedouble;
            worst = fmax(worst, fabs(got[r] - want) / (1 + fabs(want)));
        }
    return worst;
}

static void lora_arch(const char *arch) {
    char name[64], dir_v[512], src[600];
    snprintf(name, sizeof name, "peft_%s.json", arch);
    cJSON *doc = tv_load_json(name);
    char *dir = as_test_tmpdir();
    snprintf(src, sizeof src, "%s/base.gguf", dir);
    tv_write_gguf(doc, src, false);
    snprintf(dir_v, sizeof dir_v, "%s/peft_%s", AS_TEST_VECTORS, arch);
    model *m;
    if (model_load(&m, src)) fail_msg("%s", as_last_error());
    train_lora *lo;
    if (train_lora_read_peft(&m->cfg, dir_v, &lo)) fail_msg("%s", as_last_error());
    const cJSON *seqs = cJSON_GetObjectItem(doc, "sequences");
    float base[256], with[256], again[256];
    const int64_t n = engine_logps(m, seqs, base);
    model_lora view;
    train_lora_view(lo, &view);
    assert_int_equal(model_set_lora(m, &view), AS_OK);
    assert_int_equal(engine_logps(m, seqs, with), n);
    const double w_on = worst_vs(cJSON_GetObjectItem(doc, "logps_adapters_on"), with);
    const double w_base = worst_vs(cJSON_GetObjectItem(doc, "logps_adapters_on"), base);
    printf("  %s: engine with adapters vs PEFT: %.2e (base without them: %.2e)\n", arch, w_on, w_base);
    assert_true(w_on <= 1e-5);
    assert_true(w_base > 1e-3); // the adapters change the model: the check above can fail
    assert_int_equal(model_set_lora(m, NULL), AS_OK);
    engine_logps(m, seqs, again);
    assert_memory_equal(base, again, sizeof(float) * (size_t)n);
    model_lora bad = view;
    bad.rank = 0;
    assert_int_equal(model_set_lora(m, &bad), AS_FAIL);
    train_lora_free(lo);
    model_free(m);
    unlink(src), rmdir(dir);
    cJSON_Delete(doc);
}

static void test_lora_llama(void **state) {
    (void)state;
    lora_arch("llama");
}
static void test_lora_gemma(void **state) {
    (void)state;
    lora_arch("gemma");
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_lora_llama), cmocka_unit_test(test_lora_gemma)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
