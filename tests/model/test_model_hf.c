// Hugging Face folders for inference (src/model/model_hf.h):
//  * the tiny random llama (GQA, untied) and gemma (MQA, tied, head_dim !=
//    C/H) models of tests/vectors/peft_<arch>.json, exported to a folder by
//    train_export_hf (with a small byte-level tokenizer), load back through
//    model_load(<folder>) with the GGUF model's logits: bitwise for llama,
//    within fp32 rounding of Gemma's norm offset; the tokenizer comes along;
//  * the same folder rewritten as two shards with F16 and BF16 matrices keeps
//    those types in memory (kernel_matmul reads them) and stays within the
//    rounding's distance of the fp32 logits;
//  * bad folders: one error line naming the file and the field.
#include "train/train_vectors.h"

#include <math.h>

#include "model/model.h"
#include "model/model_hf.h"
#include "model/safetensors.h"
#include "tokenizer/tokenizer.h"
#include "train/export.h"
#include "train/train.h"
#include "util/common.h"

static char g_dir[300];

// A 40-token byte-level BPE vocabulary (GPT-2 pre-tokenizer) in a GGUF holding only the tokenizer.
static void write_tokenizer_gguf(const char *path) {
    const char *tokens[40];
    char store[40][8];
    tokens[0] = "<|endoftext|>";
    for (int i = 1; i <= 26; i++) snprintf(store[i], sizeof store[i], "%c", 'a' + i - 1), tokens[i] = store[i];
    tokens[27] = "\xc4\xa0", tokens[28] = "ab", tokens[29] = "\xc4\xa0" "ab", tokens[30] = "cd";
    for (int i = 31; i < 40; i++) snprintf(store[i], sizeof store[i], "%d", i - 30), tokens[i] = store[i];
    int32_t types[40];
    for (int i = 0; i < 40; i++) types[i] = i ? 1 : 3;
    const char *merges[] = {"a b", "\xc4\xa0 ab", "c d"};
    gguf_writer *w = gguf_writer_init();
    gguf_write_str(w, "tokenizer.ggml.model", "gpt2");
    gguf_write_str(w, "tokenizer.ggml.pre", "gpt2");
    gguf_write_arr_str(w, "tokenizer.ggml.tokens", tokens, 40);
    gguf_write_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types, 40);
    gguf_write_arr_str(w, "tokenizer.ggml.merges", merges, 3);
    gguf_write_u32(w, "tokenizer.ggml.eos_token_id", 0);
    gguf_write_str(w, "tokenizer.chat_template", "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}");
    if (gguf_writer_save(w, path)) fail_msg("%s", as_last_error());
    gguf_writer_free(w);
}

static const int32_t SEQ[] = {3, 17, 5, 9, 22, 31, 4, 2, 11, 39, 0, 7};
#define SEQ_N ((int32_t)AS_ARRAY_LEN(SEQ))

// Logits of every position of SEQ.
static float *logits_of(model *m) {
    kv_cache *kv = kv_cache_init(&m->cfg, 1, SEQ_N, KERNEL_PRECISION_F32);
    int32_t seq[SEQ_N], pos[SEQ_N];
    for (int i = 0; i < SEQ_N; i++) seq[i] = 0, pos[i] = i;
    model_batch b = {.n_tokens = SEQ_N, .token = SEQ, .seq = seq, .pos = pos};
    float *out = as_malloc(sizeof(float) * (size_t)SEQ_N * (size_t)m->cfg.n_vocab);
    if (model_forward(m, kv, &b, out)) fail_msg("%s", as_last_error());
    kv_cache_free(kv);
    return out;
}

static double max_rel_diff(const float *a, const float *b, size_t n) {
    double worst = 0;
    for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs((double)a[i] - b[i]) / (1.0 + fabs((double)b[i])));
    return worst;
}

static void rm_folder(const char *dir) {
    const char *files[] = {"model.safetensors", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json",
                           "config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"};
    char p[700];
    for (size_t i = 0; i < AS_ARRAY_LEN(files); i++) snprintf(p, sizeof p, "%s/%s", dir, files[i]), unlink(p);
    rmdir(dir);
}

// A raw safetensors writer with F16/BF16 tensors (st_writer writes F32 only).
typedef struct raw_tensor {
    const char *name;
    const char *dtype;
    int n_dims;
    int64_t shape[2];
    void *data;
    size_t bytes;
} raw_tensor;

static void write_raw(const char *path, const raw_tensor *t, int n) {
    cJSON *h = cJSON_CreateObject();
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        cJSON *e = cJSON_AddObjectToObject(h, t[i].name);
        cJSON_AddStringToObject(e, "dtype", t[i].dtype);
        cJSON *sh = cJSON_AddArrayToObject(e, "shape");
        for (int d = 0; d < t[i].n_dims; d++) cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)t[i].shape[d]));
        cJSON *of = cJSON_AddArrayToObject(e, "data_offsets");
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)(off + t[i].bytes)));
        off += t[i].bytes;
    }
    char *js = cJSON_PrintUnformatted(h);
    cJSON_Delete(h);
    FILE *f = fopen(path, "wb");
    const uint64_t hl = strlen(js);
    assert_int_equal(fwrite(&hl, 8, 1, f), 1);
    assert_int_equal(fwrite(js, 1, hl, f), hl);
    for (int i = 0; i < n; i++) assert_int_equal(fwrite(t[i].data, 1, t[i].bytes, f), t[i].bytes);
    fclose(f);
    free(js);
}

// Rewrites dir/model.safetensors as two shards with an index: matrices
// alternately F16 and BF16, norms F32.
static void reshard_lowp(const char *dir) {
    char p[700];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    st_file *f;
    if (st_open(&f, p)) fail_msg("%s", as_last_error());
    raw_tensor *t = as_calloc((size_t)f->n_tensors, sizeof *t);
    cJSON *index = cJSON_CreateObject(), *wm = cJSON_AddObjectToObject(index, "weight_map");
    int n[2] = {0, 0};
    raw_tensor *shard[2] = {as_calloc((size_t)f->n_tensors, sizeof(raw_tensor)), as_calloc((size_t)f->n_tensors, sizeof(raw_tensor))};
    for (int64_t i = 0; i < f->n_tensors; i++) {
        const st_tensor *s = &f->tensors[i];
        raw_tensor *r = &t[i];
        r->name = s->name, r->n_dims = s->n_dims, r->shape[0] = s->shape[0], r->shape[1] = s->shape[1];
        if (s->n_dims == 1) {
            r->dtype = "F32", r->bytes = sizeof(float) * (size_t)s->n_elems;
            r->data = as_malloc(r->bytes);
            memcpy(r->data, s->data, r->bytes);
        } else {
            const bool bf = i % 2;
            r->dtype = bf ? "BF16" : "F16", r->bytes = 2 * (size_t)s->n_elems;
            uint16_t *h = r->data = as_malloc(r->bytes);
            for (int64_t k = 0; k < s->n_elems; k++) h[k] = bf ? as_f32_to_bf16(st_get(s, k)) : as_f32_to_fp16(st_get(s, k));
        }
        const int k = (int)(i % 2);
        shard[k][n[k]++] = *r;
        cJSON_AddStringToObject(wm, r->name, k ? "model-00002-of-00002.safetensors" : "model-00001-of-00002.safetensors");
    }
    snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", dir);
    write_raw(p, shard[0], n[0]);
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", dir);
    write_raw(p, shard[1], n[1]);
    char *js = cJSON_Print(index);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    assert_int_equal(as_write_file_atomic(p, js, strlen(js)), AS_OK);
    free(js);
    cJSON_Delete(index);
    for (int64_t i = 0; i < f->n_tensors; i++) free(t[i].data);
    free(t), free(shard[0]), free(shard[1]);
    st_close(f);
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    unlink(p);
}

static void roundtrip_arch(const char *arch) {
    char name[64], src[400], tokp[400], hf[400];
    snprintf(name, sizeof name, "peft_%s.json", arch);
    cJSON *doc = tv_load_json(name);
    snprintf(src, sizeof src, "%s/base.gguf", g_dir);
    snprintf(tokp, sizeof tokp, "%s/tok.gguf", g_dir);
    snprintf(hf, sizeof hf, "%s/hf", g_dir);
    tv_write_gguf(doc, src, false);
    write_tokenizer_gguf(tokp);
    model *g, *h;
    if (model_load(&g, src)) fail_msg("%s", as_last_error());
    train_model *tm;
    if (train_model_from_model(&tm, g)) fail_msg("%s", as_last_error());
    if (train_export_hf(tm, tokp, hf)) fail_msg("%s", as_last_error());
    train_model_free(tm);
    // The folder, through model_load (which sees a directory).
    if (model_load(&h, hf)) fail_msg("%s", as_last_error());
    const model_config *a = &g->cfg, *b = &h->cfg;
    assert_int_equal(a->arch, b->arch), assert_int_equal(a->n_vocab, b->n_vocab), assert_int_equal(a->n_layer, b->n_layer);
    assert_int_equal(a->n_head_kv, b->n_head_kv), assert_int_equal(a->head_dim, b->head_dim), assert_int_equal(a->tied_output, b->tied_output);
    assert_int_equal(a->rope_neox, b->rope_neox), assert_int_equal(a->gelu, b->gelu);
    assert_float_equal(a->rms_eps, b->rms_eps, 0), assert_float_equal(a->emb_scale, b->emb_scale, 0), assert_float_equal(a->rope_theta, b->rope_theta, 0);
    assert_int_equal(h->layers[1].wq.type, GGML_TYPE_F32);
    float *lg = logits_of(g), *lh = logits_of(h);
    const size_t nl = (size_t)SEQ_N * (size_t)a->n_vocab;
    const bool gemma = !strcmp(arch, "gemma");
    const double d = max_rel_diff(lh, lg, nl);
    if (gemma ? d > 1e-5 : memcmp(lg, lh, sizeof(float) * nl)) fail_msg("%s: logits from the folder differ from the GGUF's by %.3g", arch, d);
    printf("  %s: F32 folder -> logits %s the GGUF model's (max rel diff %.2e)\n", arch, gemma ? "within 1e-5 of" : "bitwise equal to", d);
    // Its tokenizer and chat template came along.
    tokenizer *tk;
    if (tokenizer_load(&tk, h->file)) fail_msg("%s", as_last_error());
    int32_t *ids;
    size_t n;
    assert_int_equal(tokenizer_encode(tk, "ab cd1", 6, false, false, &ids, &n), AS_OK);
    const int32_t want[] = {28, 27, 30, 31};
    assert_int_equal(n, 4);
    assert_memory_equal(ids, want, sizeof want);
    free(ids);
    tokenizer_free(tk);
    assert_true(gguf_find_key(h->file, "tokenizer.chat_template") >= 0);
    model_free(h);
    // Two shards, F16 and BF16 matrices: kept in their type; logits as the GGUF with the same rounding.
    reshard_lowp(hf);
    if (model_load(&h, hf)) fail_msg("%s", as_last_error());
    int n16 = 0, nbf = 0;
    for (int l = 0; l < a->n_layer; l++) {
        const as_matrix *ms[] = {&h->layers[l].wq, &h->layers[l].wk, &h->layers[l].wv, &h->layers[l].wo, &h->layers[l].w_gate, &h->layers[l].w_up, &h->layers[l].w_down};
        for (size_t k = 0; k < AS_ARRAY_LEN(ms); k++) n16 += ms[k]->type == GGML_TYPE_F16, nbf += ms[k]->type == GGML_TYPE_BF16;
    }
    assert_true(n16 > 0 && nbf > 0);
    float *ll = logits_of(h);
    const double dl = max_rel_diff(ll, lg, nl);
    printf("  %s: F16/BF16 shards -> %d F16 and %d BF16 matrices kept, logits within %.2e of fp32\n", arch, n16, nbf, dl);
    assert_true(dl < 5e-2); // BF16 keeps 8 bits of mantissa
    assert_true(dl > 0);    // and the rounding did reach the model
    free(ll);
    model_free(h);
    // Bad folders.
    struct {
        const char *file, *text, *needle;
    } bad[] = {
        {"model.safetensors.index.json", "{\"weight_map\": {\"model.norm.weight\": \"../x.safetensors\"}}", "expected a file name in the folder"},
        {"model.safetensors.index.json", "{\"weight_map\": {\"model.norm.weight\": \"absent.safetensors\"}}", "absent.safetensors: cannot open"},
        {"model.safetensors.index.json", "{\"weight_map\": {\"model.norm.weight\": \"model-00001-of-00002.safetensors\"}}", "is missing"},
        {"model.safetensors.index.json", "[", "expected an object weight_map"},
        {"config.json", "{\"model_type\": \"mistral\"}", "model_type 'mistral' is not supported"},
        {"config.json", "{\"model_type\": \"llama\", \"vocab_size\": 40}", "hidden_size is missing"},
        {"config.json", "{\"model_type\": \"llama\", \"vocab_size\": 40, \"hidden_size\": 16, \"intermediate_size\": 24, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 3}", "not a multiple of num_key_value_heads"},
        {"config.json", "{\"model_type\": \"llama\", \"vocab_size\": 40, \"hidden_size\": 16, \"intermediate_size\": 24, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"hidden_act\": \"relu\"}", "activation 'relu'"},
        {"config.json", "{\"model_type\": \"llama\", \"vocab_size\": 41, \"hidden_size\": 16, \"intermediate_size\": 24, \"num_hidden_layers\": 2, \"num_attention_heads\": 4}", "expected shape [41, 16]"},
        {"config.json", "not json", "config.json: not a JSON object"},
        {"tokenizer.json", "{\"model\": {\"type\": \"Unigram\"}}", "tokenizer.json: model.type 'Unigram'"},
    };
    char p[700], *keep[3];
    const char *kept[3] = {"model.safetensors.index.json", "config.json", "tokenizer.json"};
    for (int k = 0; k < 3; k++) {
        snprintf(p, sizeof p, "%s/%s", hf, kept[k]);
        assert_int_equal(as_read_file(p, &keep[k], NULL), AS_OK);
    }
    for (size_t i = 0; i < AS_ARRAY_LEN(bad); i++) {
        snprintf(p, sizeof p, "%s/%s", hf, bad[i].file);
        assert_int_equal(as_write_file_atomic(p, bad[i].text, strlen(bad[i].text)), AS_OK);
        h = (model *)1;
        assert_int_equal(model_load(&h, hf), AS_FAIL);
        assert_null(h);
        const char *msg = as_last_error();
        if (!strstr(msg, bad[i].needle) || !strstr(msg, hf) || strchr(msg, '\n')) fail_msg("case %zu: '%s' lacks '%s' or the folder", i, msg, bad[i].needle);
        for (int k = 0; k < 3; k++) { // restore
            snprintf(p, sizeof p, "%s/%s", hf, kept[k]);
            assert_int_equal(as_write_file_atomic(p, keep[k], strlen(keep[k])), AS_OK);
        }
    }
    for (int k = 0; k < 3; k++) free(keep[k]);
    snprintf(p, sizeof p, "%s/config.json", hf);
    unlink(p);
    assert_int_equal(model_load(&h, hf), AS_FAIL);
    assert_non_null(strstr(as_last_error(), "config.json: cannot open"));
    free(lg), free(lh);
    model_free(g);
    rm_folder(hf);
    unlink(src), unlink(tokp);
    cJSON_Delete(doc);
}

static void test_roundtrip_llama(void **state) {
    (void)state;
    roundtrip_arch("llama");
}

static void test_roundtrip_gemma(void **state) {
    (void)state;
    roundtrip_arch("gemma");
}

int main(void) {
    char *d = as_test_tmpdir();
    if (!d) return 1;
    snprintf(g_dir, sizeof g_dir, "%s", d);
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_roundtrip_llama), cmocka_unit_test(test_roundtrip_gemma)};
    const int rc = cmocka_run_group_tests(tests, NULL, NULL);
    rmdir(g_dir);
    return rc;
}
