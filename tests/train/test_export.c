// Export and merge (src/train/export.h):
//  * merging PEFT's adapters (tests/vectors/peft_<arch>) into the base gives
//    the log-probabilities of the adapted model, which PEFT computed;
//  * the merged model exported as F32 GGUF reloads bit for bit, and the
//    inference engine on it gives the same log-probabilities; F16 and Q8_0
//    exports hold exactly the rounded weights, with llama.cpp's file types;
//  * every metadata key of the source file (strings, string arrays, numeric
//    arrays) is carried over; bad requests give one error line.
#include "train_test_util.h"
#include "train_vectors.h"

#include "model/model.h"
#include "tensor/quant.h"
#include "train/checkpoint.h"
#include "train/export.h"
#include "model/safetensors.h"
#include "train/train.h"
#include "util/common.h"

static void token_logps(train_model *m, const cJSON *seqs, float *out, int64_t *n_out) {
    int64_t n = 0;
    for (int s = 0; s < cJSON_GetArraySize(seqs); s++) {
        const cJSON *q = cJSON_GetArrayItem(seqs, s);
        int32_t len = cJSON_GetArraySize(q), tok[64], pl = 1;
        for (int i = 0; i < len; i++) tok[i] = cJSON_GetArrayItem(q, i)->valueint;
        train_batch b = {.n_seq = 1, .n_ctx = len, .tokens = tok, .len = &len, .prompt_len = &pl};
        float sum;
        assert_int_equal(train_forward(m, &b, &sum, NULL), AS_OK);
        n += train_token_logprobs(m, out + n);
    }
    *n_out = n;
}

static void merge_arch(const char *arch) {
    char name[64], dir_v[512], src[600], out[600];
    snprintf(name, sizeof name, "peft_%s.json", arch);
    cJSON *doc = tv_load_json(name);
    char *dir = as_test_tmpdir();
    snprintf(src, sizeof src, "%s/base.gguf", dir);
    snprintf(out, sizeof out, "%s/merged.gguf", dir);
    tv_write_gguf(doc, src, false);
    snprintf(dir_v, sizeof dir_v, "%s/peft_%s", AS_TEST_VECTORS, arch);
    train_model *m;
    if (train_model_load(&m, src)) fail_msg("%s", as_last_error());
    train_set_threads(m, 2);
    train_set_training(m, false);
    if (train_lora_load_peft(m, dir_v)) fail_msg("%s", as_last_error());
    const cJSON *seqs = cJSON_GetObjectItem(doc, "sequences");
    float with[128], merged[128], engine_lp[128];
    int64_t n1, n2;
    token_logps(m, seqs, with, &n1);
    assert_int_equal(train_lora_merge(m), AS_OK);
    assert_null(m->lora);
    token_logps(m, seqs, merged, &n2);
    assert_int_equal(n1, n2);
    // Against PEFT's own adapted log-probabilities.
    const cJSON *ref = cJSON_GetObjectItem(doc, "logps_adapters_on");
    double worst = 0;
    int64_t r = 0;
    for (int s = 0; s < cJSON_GetArraySize(ref); s++)
        for (int i = 0; i < cJSON_GetArraySize(cJSON_GetArrayItem(ref, s)); i++, r++) {
            const double want = cJSON_GetArrayItem(cJSON_GetArrayItem(ref, s), i)->valuedouble;
            worst = fmax(worst, fabs(merged[r] - want) / (1 + fabs(want)));
            assert_true(fabs(merged[r] - with[r]) <= 1e-5 * (1 + fabs(with[r])));
        }
    printf("  %s: merged model vs PEFT's adapted log-probs: %.2e\n", arch, worst);
    assert_true(worst <= 1e-5);

    // F32 export: bit for bit, and the inference engine agrees.
    if (train_export_gguf(m, src, out, GGML_TYPE_F32)) fail_msg("%s", as_last_error());
    train_model *back;
    if (train_model_load(&back, out)) fail_msg("%s", as_last_error());
    assert_int_equal(back->n_params, m->n_params);
    assert_memory_equal(back->params_memory, m->params_memory, sizeof(float) * m->n_params);
    train_model_free(back);
    model *inf;
    if (model_load(&inf, out)) fail_msg("%s", as_last_error());
    const int64_t V = inf->cfg.n_vocab;
    float logits[64 * 64];
    r = 0;
    worst = 0;
    for (int s = 0; s < cJSON_GetArraySize(seqs); s++) {
        const cJSON *q = cJSON_GetArrayItem(seqs, s);
        int32_t len = cJSON_GetArraySize(q), tok[64], sq[64], pos[64];
        for (int i = 0; i < len; i++) tok[i] = cJSON_GetArrayItem(q, i)->valueint, sq[i] = 0, pos[i] = i;
        kv_cache *kv = kv_cache_init(&inf->cfg, 1, len, KERNEL_PRECISION_F32);
        model_batch mb = {.n_tokens = len, .token = tok, .seq = sq, .pos = pos};
        assert_int_equal(model_forward(inf, kv, &mb, logits), AS_OK);
        for (int i = 1; i < len; i++, r++) {
            const float *z = logits + (i - 1) * V;
            double mx = z[0], se = 0;
            for (int64_t j = 1; j < V; j++) mx = fmax(mx, z[j]);
            for (int64_t j = 0; j < V; j++) se += exp(z[j] - mx);
            engine_lp[r] = (float)(z[tok[i]] - mx - log(se));
            worst = fmax(worst, fabs(engine_lp[r] - merged[r]) / (1 + fabs(merged[r])));
        }
        kv_cache_free(kv);
    }
    printf("  %s: inference engine on the exported F32 file vs training model: %.2e\n", arch, worst);
    assert_true(worst <= 1e-5);
    model_free(inf);

    // F16: exactly the fp16 rounding of every matrix; norms exact; file type 1.
    if (train_export_gguf(m, src, out, GGML_TYPE_F16)) fail_msg("%s", as_last_error());
    if (train_model_load(&back, out)) fail_msg("%s", as_last_error());
    const float *mat = m->params.wq, *got = back->params.wq;
    for (size_t i = 0; i < m->param_sizes[4]; i++) assert_true(got[i] == as_fp16_to_f32(as_f32_to_fp16(mat[i])));
    assert_memory_equal(back->params.attn_norm, m->params.attn_norm, sizeof(float) * m->param_sizes[3]);
    train_model_free(back);
    gguf_file *g;
    assert_int_equal(gguf_open(&g, out), AS_OK);
    uint32_t ft;
    assert_int_equal(gguf_get_u32(g, "general.file_type", &ft), AS_OK);
    assert_int_equal(ft, 1);
    assert_int_equal(gguf_find_tensor(g, "blk.0.attn_q.weight")->type, GGML_TYPE_F16);
    assert_int_equal(gguf_find_tensor(g, "blk.0.attn_norm.weight")->type, GGML_TYPE_F32);
    gguf_close(g);
    unlink(out), unlink(src), rmdir(dir);
    train_model_free(m);
    cJSON_Delete(doc);
}

static void test_merge_export_llama(void **state) {
    (void)state;
    merge_arch("llama");
}

static void test_merge_export_gemma(void **state) {
    (void)state;
    merge_arch("gemma");
}

// Q8_0 needs rows that are multiples of 32: a model with C = 32, F = 64, plus a
// source file with every kind of metadata value to carry over.
static void test_q8_and_metadata(void **state) {
    (void)state;
    char *dir = as_test_tmpdir();
    char src[512], out[512];
    snprintf(src, sizeof src, "%s/src.gguf", dir);
    snprintf(out, sizeof out, "%s/q8.gguf", dir);
    model_config c = {0};
    c.arch = MODEL_ARCH_LLAMA;
    snprintf(c.arch_name, sizeof c.arch_name, "llama");
    c.n_vocab = 40, c.n_embd = 32, c.n_layer = 1, c.n_head = 4, c.n_head_kv = 2, c.head_dim = 8, c.n_ff = 64, c.n_ctx_train = 128;
    c.n_rot = 8, c.rms_eps = 1e-5f, c.rope_theta = 10000.0f, c.emb_scale = 1.0f, c.tied_output = false;
    train_model *m;
    assert_int_equal(train_model_init(&m, &c), AS_OK);
    as_rng r;
    as_rng_seed(&r, 17);
    fill_normal(m->params_memory, (int64_t)m->n_params, 0.3f, &r);
    // Source metadata: a string, a string array, a numeric array, a bool, an architecture key to be overwritten.
    gguf_writer *w = gguf_writer_init();
    gguf_write_str(w, "general.architecture", "llama");
    gguf_write_str(w, "tokenizer.chat_template", "{% for m in messages %}{{ m.content }}{% endfor %}");
    const char *toks[3] = {"<s>", "hello", "\xc4\xa0world"};
    gguf_write_arr_str(w, "tokenizer.ggml.tokens", toks, 3);
    const float scores[3] = {0.0f, -1.5f, -2.25f};
    gguf_write_arr(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, scores, 3);
    gguf_write_bool(w, "tokenizer.ggml.add_bos_token", true);
    gguf_write_u32(w, "llama.block_count", 99);
    assert_int_equal(gguf_writer_save(w, src), AS_OK);
    gguf_writer_free(w);

    if (train_export_gguf(m, src, out, GGML_TYPE_Q8_0)) fail_msg("%s", as_last_error());
    gguf_file *g;
    assert_int_equal(gguf_open(&g, out), AS_OK);
    gguf_str s;
    assert_int_equal(gguf_get_str(g, "tokenizer.chat_template", &s), AS_OK);
    assert_true(gguf_str_eq(s, "{% for m in messages %}{{ m.content }}{% endfor %}"));
    gguf_type at;
    uint64_t n;
    int64_t ki;
    assert_int_equal(gguf_get_arr(g, "tokenizer.ggml.tokens", &at, &n, &ki), AS_OK);
    assert_int_equal(n, 3);
    assert_true(gguf_str_eq(gguf_arr_str(g, ki, 2), "\xc4\xa0world"));
    assert_int_equal(gguf_get_arr(g, "tokenizer.ggml.scores", &at, &n, &ki), AS_OK);
    assert_int_equal(at, GGUF_TYPE_FLOAT32);
    assert_float_equal(gguf_arr_num(g, ki, 2), -2.25, 0);
    bool bos;
    assert_int_equal(gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &bos), AS_OK);
    assert_true(bos);
    uint32_t v;
    assert_int_equal(gguf_get_u32(g, "llama.block_count", &v), AS_OK);
    assert_int_equal(v, 1); // from the model, not the source
    assert_int_equal(gguf_get_u32(g, "general.file_type", &v), AS_OK);
    assert_int_equal(v, 7);
    assert_int_equal(gguf_find_tensor(g, "blk.0.ffn_down.weight")->type, GGML_TYPE_Q8_0);
    assert_int_equal(gguf_find_tensor(g, "output.weight")->type, GGML_TYPE_Q8_0);
    gguf_close(g);
    // The weights are exactly the Q8_0 round trip of the originals.
    train_model *back;
    if (train_model_load(&back, out)) fail_msg("%s", as_last_error());
    block_q8_0 blk[2];
    float rt[64];
    const float *orig = m->params.w_down, *got = back->params.w_down; // (C, F): rows of 64
    double err = 0;
    for (int64_t row = 0; row < c.n_embd; row++) {
        quant_quantize_row(GGML_TYPE_Q8_0, orig + row * 64, blk, 64);
        quant_dequantize_row(GGML_TYPE_Q8_0, blk, rt, 64);
        assert_memory_equal(rt, got + row * 64, sizeof rt);
        for (int j = 0; j < 64; j++) err = fmax(err, fabs(rt[j] - orig[row * 64 + j]));
    }
    assert_true(err > 0 && err < 0.01); // really quantised, and by about 1/254 of the row maximum
    train_model_free(back);

    // Errors.
    assert_int_equal(train_export_gguf(m, src, out, GGML_TYPE_Q4_1), AS_FAIL);
    assert_non_null(strstr(as_last_error(), "Q4_1"));
    assert_int_equal(train_export_gguf(m, "/nonexistent/src.gguf", out, GGML_TYPE_F32), AS_FAIL);
    assert_non_null(strstr(as_last_error(), "/nonexistent/src.gguf"));
    assert_int_equal(train_lora_merge(m), AS_FAIL);
    assert_non_null(strstr(as_last_error(), "no adapters"));
    train_model_free(m);
    unlink(out), unlink(src), rmdir(dir);
}

// The Hugging Face folder against what transformers' save_pretrained wrote
// for the same base (tests/vectors/peft_<arch>.json: hf_tensors, hf_config).
static void hf_arch(const char *arch) {
    char name[64], src[600], out[600], path[700];
    snprintf(name, sizeof name, "peft_%s.json", arch);
    cJSON *doc = tv_load_json(name);
    char *dir = as_test_tmpdir();
    snprintf(src, sizeof src, "%s/base.gguf", dir);
    snprintf(out, sizeof out, "%s/hf", dir);
    tv_write_gguf(doc, src, false);
    train_model *m;
    if (train_model_load(&m, src)) fail_msg("%s", as_last_error());
    if (train_export_hf(m, src, out)) fail_msg("%s", as_last_error());
    snprintf(path, sizeof path, "%s/model.safetensors", out);
    st_file *f;
    if (st_open(&f, path)) fail_msg("%s", as_last_error());
    const bool gemma = !strcmp(arch, "gemma");
    const cJSON *t;
    int n = 0;
    double worst_norm = 0;
    cJSON_ArrayForEach(t, cJSON_GetObjectItem(doc, "hf_tensors")) {
        const char *tn = cJSON_GetObjectItem(t, "name")->valuestring;
        const st_tensor *ours = st_find(f, tn);
        if (!ours) fail_msg("%s: exported folder lacks %s", arch, tn);
        const cJSON *shape = cJSON_GetObjectItem(t, "shape");
        assert_int_equal(ours->n_dims, cJSON_GetArraySize(shape));
        for (int d = 0; d < ours->n_dims; d++) assert_int_equal(ours->shape[d], cJSON_GetArrayItem(shape, d)->valueint);
        float *want = tv_floats(t, "data", (size_t)ours->n_elems);
        const bool norm = strstr(tn, "norm") != NULL;
        for (int64_t i = 0; i < ours->n_elems; i++) {
            const double e = fabs((double)st_get(ours, i) - want[i]);
            // Gemma norms went through GGUF's 1 + w in float32: one rounding of 1 + w.
            if (gemma && norm) worst_norm = fmax(worst_norm, e), assert_true(e <= 6e-8);
            else if (e != 0) fail_msg("%s: %s[%lld]: %.9g, transformers %.9g", arch, tn, (long long)i, (double)st_get(ours, i), (double)want[i]);
        }
        free(want);
        n++;
    }
    assert_int_equal(n, f->n_tensors); // nothing extra (no lm_head when tied)
    st_close(f);
    snprintf(path, sizeof path, "%s/config.json", out);
    char *text;
    assert_int_equal(as_read_file(path, &text, NULL), AS_OK);
    cJSON *ours = cJSON_Parse(text), *want = cJSON_GetObjectItem(doc, "hf_config");
    free(text);
    assert_string_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(ours, "architectures"), 0)->valuestring,
                        cJSON_GetArrayItem(cJSON_GetObjectItem(want, "architectures"), 0)->valuestring);
    const char *same[] = {"model_type", "hidden_act"};
    for (size_t i = 0; i < AS_ARRAY_LEN(same); i++)
        assert_string_equal(cJSON_GetObjectItem(ours, same[i])->valuestring, cJSON_GetObjectItem(want, same[i])->valuestring);
    const char *nums[] = {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                          "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps"};
    for (size_t i = 0; i < AS_ARRAY_LEN(nums); i++) {
        const double a = cJSON_GetObjectItem(ours, nums[i])->valuedouble, b = cJSON_GetObjectItem(want, nums[i])->valuedouble;
        if (!(fabs(a - b) <= 1e-6 * fabs(b))) fail_msg("%s: config %s %.9g, transformers %.9g", arch, nums[i], a, b);
    }
    assert_float_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(ours, "rope_parameters"), "rope_theta")->valuedouble,
                       cJSON_GetObjectItem(cJSON_GetObjectItem(want, "rope_parameters"), "rope_theta")->valuedouble, 1e-3);
    assert_int_equal(cJSON_IsTrue(cJSON_GetObjectItem(ours, "tie_word_embeddings")), cJSON_IsTrue(cJSON_GetObjectItem(want, "tie_word_embeddings")));
    printf("  %s: %d tensors as transformers writes them (Gemma norms within %.1e), config.json keys agree\n", arch, n, worst_norm);
    cJSON_Delete(ours);
    unlink(path);
    snprintf(path, sizeof path, "%s/model.safetensors", out);
    unlink(path);
    rmdir(out), unlink(src), rmdir(dir);
    train_model_free(m);
    cJSON_Delete(doc);
}

static void test_hf_export(void **state) {
    (void)state;
    hf_arch("llama");
    hf_arch("gemma");
}

// Llama-3 RoPE factors (rope_freqs.weight, in tests/vectors/model_llama_untied.json)
// travel with the model: GGUF export keeps them; the HF export refuses.
static void test_rope_freqs(void **state) {
    (void)state;
    cJSON *doc = tv_load_json("model_llama_untied.json");
    char *dir = as_test_tmpdir();
    char src[512], out[512], hf[512];
    snprintf(src, sizeof src, "%s/src.gguf", dir);
    snprintf(out, sizeof out, "%s/out.gguf", dir);
    snprintf(hf, sizeof hf, "%s/hf", dir);
    tv_write_gguf(doc, src, false);
    train_model *m, *back;
    if (train_model_load(&m, src)) fail_msg("%s", as_last_error());
    assert_non_null(m->rope_freqs);
    if (train_export_gguf(m, src, out, GGML_TYPE_F32)) fail_msg("%s", as_last_error());
    if (train_model_load(&back, out)) fail_msg("%s", as_last_error());
    assert_non_null(back->rope_freqs);
    assert_memory_equal(back->rope_freqs, m->rope_freqs, sizeof(float) * (size_t)(m->cfg.n_rot / 2));
    assert_memory_equal(back->params_memory, m->params_memory, sizeof(float) * m->n_params);
    assert_int_equal(train_export_hf(m, src, hf), AS_FAIL);
    assert_non_null(strstr(as_last_error(), "rope_freqs"));
    train_model_free(back);
    train_model_free(m);
    unlink(out), unlink(src), rmdir(dir);
    cJSON_Delete(doc);
}

// Loading a Hugging Face folder: transformers' own tensors and config.json
// (from the vector) give the GGUF model's weights and PEFT's base log-probs,
// from one file or from shards.
static void write_hf_folder(const cJSON *doc, const char *dir, int n_shards, const char *config_edit_key, const char *drop) {
    as_mkdir_p(dir);
    const cJSON *list = cJSON_GetObjectItem(doc, "hf_tensors"), *t;
    const int n = cJSON_GetArraySize(list);
    float **data = as_calloc((size_t)n, sizeof(float *));
    st_writer *w[2] = {st_writer_init(), st_writer_init()};
    cJSON *index = cJSON_CreateObject(), *wm = cJSON_AddObjectToObject(index, "weight_map");
    int i = 0;
    cJSON_ArrayForEach(t, list) {
        const char *name = cJSON_GetObjectItem(t, "name")->valuestring;
        const cJSON *sh = cJSON_GetObjectItem(t, "shape");
        int64_t shape[2] = {1, 1}, ne = 1;
        const int nd = cJSON_GetArraySize(sh);
        for (int d = 0; d < nd; d++) shape[d] = cJSON_GetArrayItem(sh, d)->valueint, ne *= shape[d];
        data[i] = tv_floats(t, "data", (size_t)ne);
        const int s = n_shards == 2 ? i % 2 : 0;
        if (!drop || strcmp(drop, name)) st_writer_add_f32(w[s], name, nd, shape, data[i]);
        cJSON_AddStringToObject(wm, name, s ? "model-00002-of-00002.safetensors" : "model-00001-of-00002.safetensors");
        i++;
    }
    char p[700];
    if (n_shards == 2) {
        snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", dir);
        assert_int_equal(st_writer_save(w[0], p), AS_OK);
        snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", dir);
        assert_int_equal(st_writer_save(w[1], p), AS_OK);
        char *js = cJSON_Print(index);
        snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
        assert_int_equal(as_write_file_atomic(p, js, strlen(js)), AS_OK);
        free(js);
    } else {
        snprintf(p, sizeof p, "%s/model.safetensors", dir);
        assert_int_equal(st_writer_save(w[0], p), AS_OK);
    }
    cJSON *cfg = cJSON_Duplicate(cJSON_GetObjectItem(doc, "hf_config"), 1);
    if (config_edit_key && !strcmp(config_edit_key, "model_type")) cJSON_ReplaceItemInObject(cfg, "model_type", cJSON_CreateString("mistral"));
    if (config_edit_key && !strcmp(config_edit_key, "rope_scaling")) {
        cJSON *rs = cJSON_CreateObject();
        cJSON_AddStringToObject(rs, "rope_type", "llama3");
        cJSON_AddItemToObject(cfg, "rope_scaling", rs);
    }
    char *js = cJSON_Print(cfg);
    snprintf(p, sizeof p, "%s/config.json", dir);
    assert_int_equal(as_write_file_atomic(p, js, strlen(js)), AS_OK);
    free(js);
    cJSON_Delete(cfg), cJSON_Delete(index);
    st_writer_free(w[0]), st_writer_free(w[1]);
    for (int k = 0; k < n; k++) free(data[k]);
    free(data);
}

static void rm_hf_folder(const char *dir) {
    const char *files[] = {"model.safetensors", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                           "model.safetensors.index.json", "config.json"};
    char p[700];
    for (size_t i = 0; i < AS_ARRAY_LEN(files); i++) snprintf(p, sizeof p, "%s/%s", dir, files[i]), unlink(p);
    rmdir(dir);
}

static void hf_load_arch(const char *arch) {
    char name[64], src[600], hf[600];
    snprintf(name, sizeof name, "peft_%s.json", arch);
    cJSON *doc = tv_load_json(name);
    char *dir = as_test_tmpdir();
    snprintf(src, sizeof src, "%s/base.gguf", dir);
    snprintf(hf, sizeof hf, "%s/hf", dir);
    tv_write_gguf(doc, src, false);
    train_model *g, *h;
    if (train_model_load(&g, src)) fail_msg("%s", as_last_error());
    const bool gemma = !strcmp(arch, "gemma");
    for (int shards = 1; shards <= 2; shards++) {
        write_hf_folder(doc, hf, shards, NULL, NULL);
        if (train_model_load_hf(&h, hf)) fail_msg("%s", as_last_error());
        const model_config *a = &g->cfg, *b = &h->cfg;
        assert_int_equal(a->n_vocab, b->n_vocab), assert_int_equal(a->n_head_kv, b->n_head_kv), assert_int_equal(a->head_dim, b->head_dim);
        assert_int_equal(a->tied_output, b->tied_output), assert_int_equal(a->rope_neox, b->rope_neox), assert_int_equal(a->gelu, b->gelu);
        assert_float_equal(a->emb_scale, b->emb_scale, 0), assert_float_equal(a->rms_eps, b->rms_eps, 0);
        assert_int_equal(g->n_params, h->n_params);
        for (int i = 0; i < TRAIN_N_PARAMS; i++) {
            const float *x = ((float **)&g->params)[i], *y = ((float **)&h->params)[i];
            const bool norm = strstr(TRAIN_PARAM_NAMES[i], "norm") != NULL;
            for (size_t k = 0; k < g->param_sizes[i]; k++)
                if (gemma && norm ? !(fabsf(x[k] - y[k]) <= 1.2e-7f) : x[k] != y[k])
                    fail_msg("%s (%d file(s)): %s[%zu]: from HF %.9g, from GGUF %.9g", arch, shards, TRAIN_PARAM_NAMES[i], k, (double)y[k], (double)x[k]);
        }
        // PEFT's base log-probabilities (adapters off) from the HF-loaded weights.
        const cJSON *seqs = cJSON_GetObjectItem(doc, "sequences"), *ref = cJSON_GetObjectItem(doc, "logps_adapters_off");
        float lp[128];
        int64_t n, r = 0;
        token_logps(h, seqs, lp, &n);
        double worst = 0;
        for (int s = 0; s < cJSON_GetArraySize(ref); s++)
            for (int i = 0; i < cJSON_GetArraySize(cJSON_GetArrayItem(ref, s)); i++, r++) {
                const double want = cJSON_GetArrayItem(cJSON_GetArrayItem(ref, s), i)->valuedouble;
                worst = fmax(worst, fabs(lp[r] - want) / (1 + fabs(want)));
            }
        assert_int_equal(r, n);
        assert_true(worst <= 1e-5);
        printf("  %s from a Hugging Face folder (%d file%s): weights as from the GGUF, log-probs vs transformers %.2e\n", arch, shards,
               shards > 1 ? "s" : "", worst);
        train_model_free(h);
        rm_hf_folder(hf);
    }
    // Refused: another model type, scaled RoPE, a missing tensor.
    struct { const char *edit, *drop, *needle; } bad[] = {{"model_type", NULL, "model_type 'mistral'"},
                                                          {"rope_scaling", NULL, "scaled RoPE"},
                                                          {NULL, "model.layers.1.mlp.up_proj.weight", "model.layers.1.mlp.up_proj.weight is missing"}};
    for (size_t i = 0; i < AS_ARRAY_LEN(bad); i++) {
        write_hf_folder(doc, hf, 1, bad[i].edit, bad[i].drop);
        h = (train_model *)0x1;
        assert_int_equal(train_model_load_hf(&h, hf), AS_FAIL);
        assert_null(h);
        if (!strstr(as_last_error(), bad[i].needle) || !strstr(as_last_error(), hf)) fail_msg("case %zu: '%s'", i, as_last_error());
        rm_hf_folder(hf);
    }
    train_model_free(g);
    unlink(src), rmdir(dir);
    cJSON_Delete(doc);
}

static void test_hf_load(void **state) {
    (void)state;
    hf_load_arch("llama");
    hf_load_arch("gemma");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_merge_export_llama),
        cmocka_unit_test(test_merge_export_gemma),
        cmocka_unit_test(test_q8_and_metadata),
        cmocka_unit_test(test_hf_export),
        cmocka_unit_test(test_rope_freqs),
        cmocka_unit_test(test_hf_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
