// LoRA checkpoints against Hugging Face PEFT itself (tools/ref_peft.py):
// tests/vectors/peft_<arch>/ is an adapter folder written by PEFT's
// save_pretrained for tiny random llama/gemma models whose base weights (in
// GGUF layout) and log-probabilities, with the adapters on and off, are in
// tests/vectors/peft_<arch>.json.
//  * loading PEFT's folder reproduces PEFT's log-probabilities;
//  * saving gives PEFT's tensors (names, shapes, values bit for bit) and the
//    config values PEFT reads; reloading is exact;
//  * corrupt safetensors files and unsupported or inconsistent adapter
//    folders are refused with one error line naming the file.
#include "train_test_util.h"
#include "train_vectors.h"

#include "train/checkpoint.h"
#include "train/safetensors.h"
#include "train/train.h"
#include "util/common.h"

typedef struct peft_case {
    cJSON *doc;
    char dir[256], gguf[512], folder[512];
    int32_t n_seq, T, len[8], prompt[8], *tokens;
    train_batch b;
} peft_case;

static void case_open(peft_case *c, const char *arch) {
    char name[64];
    snprintf(name, sizeof name, "peft_%s.json", arch);
    c->doc = tv_load_json(name);
    snprintf(c->folder, sizeof c->folder, "%s/peft_%s", AS_TEST_VECTORS, arch);
    char *d = as_test_tmpdir();
    assert_non_null(d);
    snprintf(c->dir, sizeof c->dir, "%s", d);
    snprintf(c->gguf, sizeof c->gguf, "%s/base.gguf", c->dir);
    tv_write_gguf(c->doc, c->gguf, false);
    const cJSON *seqs = cJSON_GetObjectItem(c->doc, "sequences");
    c->n_seq = cJSON_GetArraySize(seqs);
    assert_true(c->n_seq <= 8);
    c->T = 0;
    for (int s = 0; s < c->n_seq; s++) c->len[s] = cJSON_GetArraySize(cJSON_GetArrayItem(seqs, s)), c->T = AS_MAX(c->T, c->len[s]), c->prompt[s] = 1;
    c->tokens = as_calloc((size_t)(c->n_seq * c->T), sizeof(int32_t));
    for (int s = 0; s < c->n_seq; s++)
        for (int i = 0; i < c->len[s]; i++) c->tokens[s * c->T + i] = cJSON_GetArrayItem(cJSON_GetArrayItem(seqs, s), i)->valueint;
    c->b = (train_batch){.n_seq = c->n_seq, .n_ctx = c->T, .tokens = c->tokens, .len = c->len, .prompt_len = c->prompt};
}

static void rm_folder(const char *dir) {
    char p[1024];
    snprintf(p, sizeof p, "%s/adapter_model.safetensors", dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/adapter_config.json", dir);
    unlink(p);
    rmdir(dir);
}

static void case_close(peft_case *c) {
    unlink(c->gguf);
    rmdir(c->dir);
    free(c->tokens);
    cJSON_Delete(c->doc);
}

static train_model *load_base(const peft_case *c) {
    train_model *m;
    if (train_model_load(&m, c->gguf)) fail_msg("%s", as_last_error());
    train_set_threads(m, 2);
    train_set_training(m, false); // PEFT's reference ran in eval mode: no dropout
    return m;
}

// Token log-probabilities of the batch against the JSON list `key`.
static void check_logps(train_model *m, const peft_case *c, const char *key, const char *what) {
    float sums[8], tok[128];
    assert_int_equal(train_forward(m, &c->b, sums, NULL), AS_OK);
    const int64_t n = train_token_logprobs(m, tok);
    int64_t r = 0;
    double worst = 0;
    const cJSON *seqs = cJSON_GetObjectItem(c->doc, key);
    for (int s = 0; s < c->n_seq; s++) {
        const cJSON *lp = cJSON_GetArrayItem(seqs, s);
        for (int i = 0; i < cJSON_GetArraySize(lp); i++, r++) {
            const double want = cJSON_GetArrayItem(lp, i)->valuedouble;
            worst = fmax(worst, fabs(tok[r] - want) / (1 + fabs(want)));
        }
    }
    assert_int_equal(r, n);
    printf("  %s: %lld log-probs, max |ours - PEFT| / (1 + |logp|) = %.2e\n", what, (long long)n, worst);
    if (!(worst <= 1e-5)) fail_msg("%s: log-probs differ from PEFT's by %.3g", what, worst);
}

static void peft_arch(const char *arch) {
    peft_case c;
    case_open(&c, arch);
    train_model *m = load_base(&c);
    if (train_lora_load_peft(m, c.folder)) fail_msg("%s", as_last_error());
    assert_int_equal(m->lora->cfg.rank, 2);
    assert_float_equal(m->lora->cfg.alpha, 4.0f, 0);
    assert_float_equal(m->lora->cfg.dropout, 0.05f, 1e-7f);
    assert_int_equal(m->lora->cfg.targets, (1u << TRAIN_LORA_N_TARGETS) - 1);
    char what[96];
    snprintf(what, sizeof what, "%s, PEFT adapters on", arch);
    check_logps(m, &c, "logps_adapters_on", what);
    train_set_adapters(m, false);
    snprintf(what, sizeof what, "%s, adapters off", arch);
    check_logps(m, &c, "logps_adapters_off", what);
    train_set_adapters(m, true);
    float first[8];
    assert_int_equal(train_forward(m, &c.b, first, NULL), AS_OK);

    // Save: PEFT's tensors, bit for bit, and the config values PEFT reads.
    char out[600];
    snprintf(out, sizeof out, "%s/saved", c.dir);
    if (train_lora_save_peft(m, out, "tiny-test-model")) fail_msg("%s", as_last_error());
    char p1[700], p2[700];
    snprintf(p1, sizeof p1, "%s/adapter_model.safetensors", c.folder);
    snprintf(p2, sizeof p2, "%s/adapter_model.safetensors", out);
    st_file *theirs, *ours;
    if (st_open(&theirs, p1) || st_open(&ours, p2)) fail_msg("%s", as_last_error());
    assert_int_equal(theirs->n_tensors, ours->n_tensors);
    for (int64_t i = 0; i < theirs->n_tensors; i++) {
        const st_tensor *a = &theirs->tensors[i], *b = st_find(ours, a->name);
        if (!b) fail_msg("saved adapter lacks %s", a->name);
        assert_int_equal(a->n_dims, b->n_dims);
        for (int d = 0; d < a->n_dims; d++) assert_int_equal(a->shape[d], b->shape[d]);
        assert_int_equal(a->dtype, ST_F32);
        assert_memory_equal(a->data, b->data, sizeof(float) * (size_t)a->n_elems);
    }
    st_close(theirs), st_close(ours);
    snprintf(p2, sizeof p2, "%s/adapter_config.json", out);
    char *text;
    assert_int_equal(as_read_file(p2, &text, NULL), AS_OK);
    cJSON *cfg = cJSON_Parse(text);
    free(text);
    assert_string_equal(cJSON_GetObjectItem(cfg, "peft_type")->valuestring, "LORA");
    assert_string_equal(cJSON_GetObjectItem(cfg, "task_type")->valuestring, "CAUSAL_LM");
    assert_string_equal(cJSON_GetObjectItem(cfg, "base_model_name_or_path")->valuestring, "tiny-test-model");
    assert_int_equal(cJSON_GetObjectItem(cfg, "r")->valueint, 2);
    assert_float_equal(cJSON_GetObjectItem(cfg, "lora_alpha")->valuedouble, 4.0, 0);
    assert_float_equal(cJSON_GetObjectItem(cfg, "lora_dropout")->valuedouble, 0.05, 1e-7);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(cfg, "target_modules")), 7);
    cJSON_Delete(cfg);

    // Reload into a fresh base: the same log-probabilities exactly.
    train_model *m2 = load_base(&c);
    if (train_lora_load_peft(m2, out)) fail_msg("%s", as_last_error());
    float again[8];
    assert_int_equal(train_forward(m2, &c.b, again, NULL), AS_OK);
    assert_memory_equal(first, again, sizeof(float) * (size_t)c.n_seq);
    train_model_free(m2);
    rm_folder(out);
    train_model_free(m);
    case_close(&c);
}

static void test_peft_llama(void **state) {
    (void)state;
    peft_arch("llama");
}

static void test_peft_gemma(void **state) {
    (void)state;
    peft_arch("gemma");
}

// ---- refusing bad input ----

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    fclose(f);
}

// A safetensors file with the given header and `data_len` zero data bytes.
static void write_st(const char *path, const char *header, size_t data_len, uint64_t claimed_len) {
    const size_t hl = strlen(header);
    uint8_t *buf = as_calloc(8 + hl + data_len + 1, 1);
    const uint64_t len = claimed_len ? claimed_len : hl;
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)(len >> (8 * i));
    memcpy(buf + 8, header, hl);
    write_bytes(path, buf, 8 + hl + data_len);
    free(buf);
}

static void expect_st_error(const char *path, const char *needle) {
    st_file *f = (st_file *)0x1;
    assert_int_equal(st_open(&f, path), AS_FAIL);
    assert_null(f);
    const char *msg = as_last_error();
    if (!strstr(msg, path) || !strstr(msg, needle)) fail_msg("error '%s' should name %s and '%s'", msg, path, needle);
    assert_null(strchr(msg, '\n'));
}

static void test_safetensors_errors(void **state) {
    (void)state;
    char *dir = as_test_tmpdir();
    char path[512];
    snprintf(path, sizeof path, "%s/x.safetensors", dir);
    write_bytes(path, "abc", 3);
    expect_st_error(path, "too short");
    write_st(path, "{}", 0, 1000);
    expect_st_error(path, "header length 1000");
    write_st(path, "{\"a\": ", 0, 0);
    expect_st_error(path, "not a JSON object");
    write_st(path, "{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}", 8, 0);
    expect_st_error(path, "dtype U8");
    write_st(path, "{\"a\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, 0);
    expect_st_error(path, "8 bytes for 2 elements of I64");
    write_st(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, 0);
    expect_st_error(path, "8 bytes for 3 elements");
    write_st(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8, 0);
    expect_st_error(path, "outside the 8 data bytes");
    write_st(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, 0);
    expect_st_error(path, "overlap");
    write_st(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, 0);
    expect_st_error(path, "dimension 0");
    write_st(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 8, 0);
    expect_st_error(path, "data_offsets");
    // A valid one (F16 and BF16 decoded).
    write_st(path, "{\"__metadata__\":{\"format\":\"pt\"},\"h\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[4,6]}}", 6, 0);
    st_file *f;
    assert_int_equal(st_open(&f, path), AS_OK);
    assert_int_equal(f->n_tensors, 2);
    assert_non_null(st_find(f, "h"));
    assert_float_equal(st_get(st_find(f, "h"), 1), 0.0f, 0);
    st_close(f);
    unlink(path);
    expect_st_error(path, "cannot open");
    rmdir(dir);
}

// Copies PEFT's llama folder to dst, with the config text edited (old -> new)
// and the tensor list filtered/altered.
static void make_folder(const char *src, const char *dst, const char *old, const char *new_, const char *drop, const char *extra,
                        bool bad_shape) {
    as_mkdir_p(dst);
    char p[700];
    snprintf(p, sizeof p, "%s/adapter_config.json", src);
    char *text;
    assert_int_equal(as_read_file(p, &text, NULL), AS_OK);
    char *hit = old ? strstr(text, old) : NULL;
    if (old) assert_non_null(hit);
    snprintf(p, sizeof p, "%s/adapter_config.json", dst);
    FILE *out = fopen(p, "wb");
    if (hit) {
        fwrite(text, 1, (size_t)(hit - text), out);
        fputs(new_, out);
        fputs(hit + strlen(old), out);
    } else {
        fputs(text, out);
    }
    fclose(out);
    free(text);
    snprintf(p, sizeof p, "%s/adapter_model.safetensors", src);
    st_file *f;
    assert_int_equal(st_open(&f, p), AS_OK);
    st_writer *w = st_writer_init();
    float *copies[128];
    int nc = 0;
    for (int64_t i = 0; i < f->n_tensors; i++) {
        const st_tensor *t = &f->tensors[i];
        if (drop && !strcmp(t->name, drop)) continue;
        int64_t shape[2] = {t->shape[0], t->shape[1]};
        if (bad_shape && i == 0) shape[1]--;
        copies[nc] = as_malloc(sizeof(float) * (size_t)t->n_elems);
        for (int64_t j = 0; j < t->n_elems; j++) copies[nc][j] = st_get(t, j);
        st_writer_add_f32(w, t->name, 2, shape, copies[nc]);
        nc++;
    }
    if (extra) st_writer_add_f32(w, extra, 2, (int64_t[]){1, 1}, copies[0]);
    snprintf(p, sizeof p, "%s/adapter_model.safetensors", dst);
    assert_int_equal(st_writer_save(w, p), AS_OK);
    st_writer_free(w);
    for (int i = 0; i < nc; i++) free(copies[i]);
    st_close(f);
}

static void test_peft_errors(void **state) {
    (void)state;
    peft_case c;
    case_open(&c, "llama");
    char bad[600];
    snprintf(bad, sizeof bad, "%s/bad", c.dir);
    struct {
        const char *old, *new_, *drop, *extra;
        bool bad_shape;
        const char *needle;
    } cases[] = {
        {"\"use_dora\": false", "\"use_dora\": true", NULL, NULL, false, "use_dora is true"},
        {"\"use_rslora\": false", "\"use_rslora\": true", NULL, NULL, false, "use_rslora"},
        {"\"r\": 2", "\"r\": 0", NULL, NULL, false, "r: expected an integer"},
        {"\"peft_type\": \"LORA\"", "\"peft_type\": \"IA3\"", NULL, NULL, false, "peft_type"},
        {"\"q_proj\"", "\"qkv_proj\"", NULL, NULL, false, "'qkv_proj' is not one of"},
        {"\"layers_to_transform\": null", "\"layers_to_transform\": [0]", NULL, NULL, false, "layers_to_transform is set"},
        {"\"bias\": \"none\"", "\"bias\": \"all\"", NULL, NULL, false, "bias"},
        {NULL, NULL, "base_model.model.model.layers.1.mlp.up_proj.lora_B.weight", NULL, false, "up_proj.lora_B.weight is missing"},
        {NULL, NULL, NULL, "base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight", false, "unexpected tensor"},
        {NULL, NULL, NULL, NULL, true, "expected shape"},
    };
    for (size_t i = 0; i < AS_ARRAY_LEN(cases); i++) {
        make_folder(c.folder, bad, cases[i].old, cases[i].new_, cases[i].drop, cases[i].extra, cases[i].bad_shape);
        train_model *m = load_base(&c);
        assert_int_equal(train_lora_load_peft(m, bad), AS_FAIL);
        const char *msg = as_last_error();
        if (!strstr(msg, bad) || !strstr(msg, cases[i].needle)) fail_msg("case %zu: '%s' lacks the folder or '%s'", i, msg, cases[i].needle);
        assert_null(strchr(msg, '\n'));
        assert_null(m->lora); // nothing half-attached
        train_model_free(m);
        rm_folder(bad);
    }
    // No adapters to save; adapters already attached.
    train_model *m = load_base(&c);
    assert_int_equal(train_lora_save_peft(m, bad, NULL), AS_FAIL);
    assert_non_null(strstr(as_last_error(), "no LoRA adapters"));
    assert_int_equal(train_lora_load_peft(m, c.folder), AS_OK);
    assert_int_equal(train_lora_load_peft(m, c.folder), AS_FAIL);
    assert_non_null(strstr(as_last_error(), "already"));
    train_model_free(m);
    case_close(&c);
}

// ---- exact resume ----

// One optimizer step on two sequences picked by the data-order stream.
static void train_steps(train_model *m, optim *o, as_rng *data, const peft_case *c, int k) {
    for (int step = 0; step < k; step++) {
        int64_t perm[8];
        train_shuffle(perm, c->n_seq, data);
        int32_t tok[2 * 16], len[2], pl[2] = {2, 3};
        for (int j = 0; j < 2; j++) {
            len[j] = c->len[perm[j]];
            memcpy(tok + j * c->T, c->tokens + perm[j] * c->T, sizeof(int32_t) * (size_t)c->T);
        }
        train_batch b = {.n_seq = 2, .n_ctx = c->T, .tokens = tok, .len = len, .prompt_len = pl};
        float lp[2];
        int32_t cnt[2];
        assert_int_equal(train_forward(m, &b, lp, cnt), AS_OK);
        const float up[2] = {-1.0f / (float)cnt[0], -1.0f / (float)cnt[1]}; // SFT: mean token NLL per sequence
        train_zero_grad(m);
        assert_int_equal(train_backward(m, up), AS_OK);
        train_optim_step(m, o, NULL, NULL);
    }
}

static train_model *resume_model(const peft_case *c, bool lora, optim **o, optim_kind kind) {
    train_model *m = load_base(c);
    train_set_training(m, true);
    if (lora) {
        train_lora_config lc = {.rank = 2, .alpha = 4.0f, .dropout = 0.1f, .seed = 11};
        assert_int_equal(train_lora_attach(m, &lc), AS_OK);
    }
    float *p, *g;
    const optim_segment *segs;
    int ns;
    const size_t n = train_trainable(m, &p, &g, &segs, &ns);
    optim_config oc;
    optim_config_default(&oc, kind);
    oc.lr = 5e-3f, oc.schedule = OPTIM_SCHEDULE_COSINE, oc.warmup_ratio = 0.2, oc.total_steps = 5, oc.max_grad_norm = 1.0f;
    assert_int_equal(optim_init(o, &oc, n), AS_OK);
    return m;
}

static void resume_case(peft_case *c, bool lora, optim_kind kind) {
    char path[600];
    snprintf(path, sizeof path, "%s/state.safetensors", c->dir);
    // Five steps in one go.
    optim *o;
    as_rng data;
    as_rng_seed(&data, 5);
    train_model *m = resume_model(c, lora, &o, kind);
    train_steps(m, o, &data, c, 5);
    float *p, *g;
    const optim_segment *segs;
    int ns;
    const size_t n = train_trainable(m, &p, &g, &segs, &ns);
    float *straight = as_malloc(sizeof(float) * n);
    memcpy(straight, p, sizeof(float) * n);
    train_model_free(m);
    optim_free(o);
    // Three steps, save, a fresh process-like start, load, two more.
    as_rng_seed(&data, 5);
    m = resume_model(c, lora, &o, kind);
    train_steps(m, o, &data, c, 3);
    if (train_state_save(m, o, &data, NULL, path)) fail_msg("%s", as_last_error());
    train_model_free(m);
    optim_free(o);
    as_rng_seed(&data, 999); // overwritten by the load
    m = resume_model(c, lora, &o, kind);
    if (train_state_load(m, o, &data, NULL, path)) fail_msg("%s", as_last_error());
    assert_int_equal(o->step, 3);
    train_steps(m, o, &data, c, 2);
    train_trainable(m, &p, &g, &segs, &ns);
    assert_memory_equal(straight, p, sizeof(float) * n);
    free(straight);
    // A state for other adapters or another optimizer is refused.
    optim *o2;
    train_model *m2 = resume_model(c, !lora, &o2, kind);
    assert_int_equal(train_state_load(m2, o2, &data, NULL, path), AS_FAIL);
    assert_non_null(strstr(as_last_error(), "adapters"));
    train_model_free(m2);
    optim_free(o2);
    m2 = resume_model(c, lora, &o2, kind == OPTIM_ADAMW ? OPTIM_RMSPROP : OPTIM_ADAMW);
    assert_int_equal(train_state_load(m2, o2, &data, NULL, path), AS_FAIL);
    assert_non_null(strstr(as_last_error(), "optimizer kind"));
    train_model_free(m2);
    optim_free(o2);
    // A damaged file is refused and changes nothing.
    char *bytes;
    size_t len;
    assert_int_equal(as_read_file(path, &bytes, &len), AS_OK);
    bytes[len - 5] ^= 0x10;
    write_bytes(path, bytes, len);
    float *before = as_malloc(sizeof(float) * n);
    memcpy(before, p, sizeof(float) * n);
    assert_int_equal(train_state_load(m, o, &data, NULL, path), AS_FAIL);
    assert_non_null(strstr(as_last_error(), "checksum mismatch"));
    assert_memory_equal(before, p, sizeof(float) * n);
    write_bytes(path, bytes, len - 7);
    assert_int_equal(train_state_load(m, o, &data, NULL, path), AS_FAIL);
    assert_non_null(strstr(as_last_error(), path));
    free(bytes), free(before);
    unlink(path);
    train_model_free(m);
    optim_free(o);
}

static void test_state_resume(void **state) {
    (void)state;
    peft_case c;
    case_open(&c, "llama");
    resume_case(&c, true, OPTIM_ADAMW);
    resume_case(&c, false, OPTIM_RMSPROP);
    resume_case(&c, false, OPTIM_ADAMW);
    case_close(&c);
}

// A trainer's own state beside the loop's (train_state_extra): integer and
// double tensors and metadata come back bit for bit, under the checksum; a
// reader that expects none refuses the file, and the extra's own refusal is
// the load's.
typedef struct extra_state {
    int32_t i32[5];
    int64_t i64[3];
    double f64[4];
    char note[32];
    bool refuse;
} extra_state;

static void extra_write(void *user, st_writer *w) {
    const extra_state *x = user;
    st_writer_add(w, "x.i32", ST_I32, 1, (int64_t[]){5}, x->i32);
    st_writer_add(w, "x.i64", ST_I64, 1, (int64_t[]){3}, x->i64);
    st_writer_add(w, "x.f64", ST_F64, 2, (int64_t[]){2, 2}, x->f64);
    st_writer_add(w, "x.none", ST_I32, 1, (int64_t[]){0}, NULL); // an empty buffer is a tensor of no elements
    st_writer_set_metadata(w, "x.note", x->note);
}

static int extra_read(void *user, const st_file *f) {
    extra_state *x = user;
    if (x->refuse) return as_error("%s: extra refused", f->path);
    const st_tensor *a = st_find(f, "x.i32"), *b = st_find(f, "x.i64"), *c = st_find(f, "x.f64"), *e = st_find(f, "x.none");
    const char *note = st_metadata(f, "x.note");
    if (!a || !b || !c || !e || !note || a->dtype != ST_I32 || b->dtype != ST_I64 || c->dtype != ST_F64 || e->n_elems != 0 || c->n_elems != 4)
        return as_error("%s: extra tensors missing or misshapen", f->path);
    memcpy(x->i32, a->data, sizeof x->i32), memcpy(x->i64, b->data, sizeof x->i64), memcpy(x->f64, c->data, sizeof x->f64);
    snprintf(x->note, sizeof x->note, "%s", note);
    return AS_OK;
}

static void test_state_extra(void **state) {
    (void)state;
    peft_case c;
    case_open(&c, "llama");
    char path[600];
    snprintf(path, sizeof path, "%s/state.safetensors", c.dir);
    optim *o;
    train_model *m = resume_model(&c, true, &o, OPTIM_ADAMW);
    as_rng data;
    as_rng_seed(&data, 5);
    train_steps(m, o, &data, &c, 2);
    extra_state saved = {.i32 = {-7, 0, 1, INT32_MAX, INT32_MIN}, .i64 = {INT64_MIN, 1LL << 40, -3}, .f64 = {M_PI, -1e-300, 1e300, -0.0},
                         .note = "hello"};
    const train_state_extra xs = {.write = extra_write, .read = extra_read, .n_tensors = 4, .user = &saved};
    if (train_state_save(m, o, &data, &xs, path)) fail_msg("%s", as_last_error());
    // The dtypes as safetensors readers see them: names, shapes, st_get's conversion.
    st_file *f;
    assert_int_equal(st_open(&f, path), AS_OK);
    assert_int_equal(st_find(f, "x.f64")->shape[0], 2);
    assert_true(st_get(st_find(f, "x.i32"), 0) == -7.0f && st_get(st_find(f, "x.i64"), 1) == (float)(1LL << 40));
    assert_true(st_get(st_find(f, "x.f64"), 0) == (float)M_PI);
    st_close(f);
    // Read back into fresh objects.
    optim *o2;
    train_model *m2 = resume_model(&c, true, &o2, OPTIM_ADAMW);
    extra_state got = {0};
    train_state_extra xr = {.write = extra_write, .read = extra_read, .n_tensors = 4, .user = &got};
    as_rng data2;
    if (train_state_load(m2, o2, &data2, &xr, path)) fail_msg("%s", as_last_error());
    assert_memory_equal(&got, &saved, sizeof got);
    assert_memory_equal(&data2, &data, sizeof data);
    assert_memory_equal(o2->m, o->m, sizeof(float) * o->n);
    // A reader that expects no extra (or fewer tensors) refuses the file, naming it.
    assert_int_equal(train_state_load(m2, o2, &data2, NULL, path), AS_FAIL);
    assert_non_null(strstr(as_last_error(), "the state of another trainer"));
    assert_non_null(strstr(as_last_error(), path));
    xr.n_tensors = 3;
    assert_int_equal(train_state_load(m2, o2, &data2, &xr, path), AS_FAIL);
    xr.n_tensors = 4, got.refuse = true;
    assert_int_equal(train_state_load(m2, o2, &data2, &xr, path), AS_FAIL);
    assert_non_null(strstr(as_last_error(), "extra refused"));
    // The checksum covers the extra tensors: one flipped bit in the last (the doubles) is refused.
    got.refuse = false;
    char *bytes;
    size_t len;
    assert_int_equal(as_read_file(path, &bytes, &len), AS_OK);
    bytes[len - 2] ^= 0x01;
    write_bytes(path, bytes, len);
    assert_int_equal(train_state_load(m2, o2, &data2, &xr, path), AS_FAIL);
    assert_non_null(strstr(as_last_error(), "checksum mismatch"));
    free(bytes);
    unlink(path);
    train_model_free(m), train_model_free(m2);
    optim_free(o), optim_free(o2);
    case_close(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_peft_llama),
        cmocka_unit_test(test_peft_gemma),
        cmocka_unit_test(test_safetensors_errors),
        cmocka_unit_test(test_peft_errors),
        cmocka_unit_test(test_state_resume),
        cmocka_unit_test(test_state_extra),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
