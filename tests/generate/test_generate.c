// Generation engine on a tiny random llama model written by the test:
//  - against a plain one-sequence loop over model_forward (prefill, argmax,
//    feed) written here without the engine;
//  - batch invariance: prompts of different lengths give identical tokens and
//    log-probabilities at batch sizes 1, 3, 4, 6 and with chunked prefill,
//    greedy and seeded sampling;
//  - max_new_tokens, end tokens (option and tokenizer), stop strings,
//    streaming, context limit, progress, bad requests;
//  - sampling through a backend's sample_rows (sampler_sample as one, and the
//    CUDA plugin's sampler run on the host where it was built): the CPU's results.
#include "test_common.h"

#include <dlfcn.h>
#include <math.h>

#include "generate/generate.h"
#include "tensor/cuda/cuda_host_check.h"
#include "tiny_llama.h"
#include "util/common.h"

static char g_dir[512], g_path[600], g_path_q8[600], g_path_q4[600];
static model *g_model;     // F32 weights
static model *g_model_q8;  // Q8_0 matrices, run in KERNEL_PRECISION_Q8
static model *g_model_q4;  // Q4_1 matrices, run in KERNEL_PRECISION_Q8 (the tile kernels of Q4)
static tokenizer *g_tok;
static int g_vocab;

static int setup(void **st) {
    (void)st;
    char *d = as_test_tmpdir();
    if (!d) return -1;
    snprintf(g_dir, sizeof g_dir, "%s", d);
    snprintf(g_path, sizeof g_path, "%s/tiny.gguf", g_dir);
    tiny_llama_cfg c = tiny_llama_default();
    if (tiny_llama_write(g_path, &c, &g_vocab)) return -1;
    snprintf(g_path_q8, sizeof g_path_q8, "%s/tiny_q8.gguf", g_dir);
    c.wtype = GGML_TYPE_Q8_0;
    if (tiny_llama_write(g_path_q8, &c, NULL)) return -1;
    snprintf(g_path_q4, sizeof g_path_q4, "%s/tiny_q4.gguf", g_dir);
    c.wtype = GGML_TYPE_Q4_1;
    if (tiny_llama_write(g_path_q4, &c, NULL)) return -1;
    if (model_load(&g_model, g_path) || model_load(&g_model_q8, g_path_q8) || model_load(&g_model_q4, g_path_q4)) {
        fprintf(stderr, "%s\n", as_last_error());
        return -1;
    }
    if (tokenizer_load(&g_tok, g_model->file)) {
        fprintf(stderr, "%s\n", as_last_error());
        return -1;
    }
    return 0;
}

static int teardown(void **st) {
    (void)st;
    tokenizer_free(g_tok);
    model_free(g_model);
    model_free(g_model_q8);
    model_free(g_model_q4);
    unlink(g_path);
    unlink(g_path_q8);
    unlink(g_path_q4);
    rmdir(g_dir);
    return 0;
}

// Prompts of lengths 1 .. 33 over the ordinary tokens (not the control ones).
#define N_PROMPTS 6
static const int k_prompt_len[N_PROMPTS] = {5, 1, 12, 33, 3, 20};
static int32_t g_prompts[N_PROMPTS][40];

static void make_requests(generate_request *r, int n, int max_new, bool sampled) {
    for (int i = 0; i < n; i++) {
        int p = i % N_PROMPTS;
        for (int t = 0; t < k_prompt_len[p]; t++) g_prompts[p][t] = (int32_t)((p * 31 + t * 7 + 3) % (g_vocab - 2));
        r[i] = (generate_request){.prompt = g_prompts[p], .n_prompt = k_prompt_len[p], .max_new_tokens = max_new};
        if (sampled) {
            r[i].sampling = sampler_params_default();
            r[i].sampling.temperature = 1.2f;
            r[i].sampling.repeat_penalty = 1.1f;
            r[i].sampling.seed = 1000 + (uint64_t)i;
        } else {
            r[i].sampling = sampler_params_greedy();
        }
    }
}

static void run_model(model *m, const generate_request *r, int n, const generate_options *o, generate_result *out) {
    if (generate_run(m, g_tok, r, n, o, out)) fail_msg("generate_run: %s", as_last_error());
}

static void run_ok(const generate_request *r, int n, const generate_options *o, generate_result *out) {
    run_model(g_model, r, n, o, out);
}

static void free_results(generate_result *r, int n) {
    for (int i = 0; i < n; i++) generate_result_free(&r[i]);
}

// bitwise: log-probabilities identical to the bit; else within 1e-5.
static void assert_same_results(const generate_result *a, const generate_result *b, int n, bool bitwise) {
    for (int i = 0; i < n; i++) {
        assert_int_equal(a[i].n_ids, b[i].n_ids);
        assert_memory_equal(a[i].ids, b[i].ids, a[i].n_ids * sizeof *a[i].ids);
        if (bitwise) assert_memory_equal(a[i].logprobs, b[i].logprobs, a[i].n_ids * sizeof *a[i].logprobs);
        for (int64_t k = 0; k < a[i].n_ids; k++) assert_true(fabsf(a[i].logprobs[k] - b[i].logprobs[k]) < 1e-5f);
        assert_int_equal(a[i].finish, b[i].finish);
        assert_string_equal(a[i].text, b[i].text);
    }
}

// ---- the plain loop ----

static double ref_logprob(const float *l, int n, int tok) {
    double mx = -INFINITY, z = 0.0;
    for (int i = 0; i < n; i++) mx = l[i] > mx ? l[i] : mx;
    for (int i = 0; i < n; i++) z += exp(l[i] - mx);
    return l[tok] - mx - log(z);
}

static void plain_greedy(const int32_t *prompt, int n_prompt, int max_new, int32_t *ids, double *lps) {
    const int V = g_model->cfg.n_vocab;
    kv_cache *kv = kv_cache_init(&g_model->cfg, 1, n_prompt + max_new, KERNEL_PRECISION_F32);
    int32_t *seq = calloc(n_prompt, sizeof *seq), *pos = malloc(n_prompt * sizeof *pos);
    bool *want = calloc(n_prompt, sizeof *want);
    for (int t = 0; t < n_prompt; t++) pos[t] = t;
    want[n_prompt - 1] = true;
    float *logits = malloc(V * sizeof *logits);
    model_batch b = {.n_tokens = n_prompt, .token = prompt, .seq = seq, .pos = pos, .want_logits = want};
    assert_int_equal(model_forward(g_model, kv, &b, logits), 0);
    for (int k = 0; k < max_new; k++) {
        int best = 0;
        for (int i = 1; i < V; i++)
            if (logits[i] > logits[best]) best = i;
        ids[k] = best;
        lps[k] = ref_logprob(logits, V, best);
        int32_t s0 = 0, p = n_prompt + k;
        bool w = true;
        model_batch d = {.n_tokens = 1, .token = &ids[k], .seq = &s0, .pos = &p, .want_logits = &w};
        assert_int_equal(model_forward(g_model, kv, &d, logits), 0);
    }
    free(logits);
    free(seq);
    free(pos);
    free(want);
    kv_cache_free(kv);
}

static void test_matches_plain_loop(void **st) {
    (void)st;
    generate_request r[N_PROMPTS];
    generate_result out[N_PROMPTS];
    make_requests(r, N_PROMPTS, 16, false);
    generate_options o = generate_options_default();
    o.batch_size = 4;
    run_ok(r, N_PROMPTS, &o, out);
    for (int i = 0; i < N_PROMPTS; i++) {
        int32_t ids[16];
        double lps[16], sum = 0.0;
        plain_greedy(r[i].prompt, (int)r[i].n_prompt, 16, ids, lps);
        assert_int_equal(out[i].n_ids, 16);
        assert_int_equal(out[i].finish, GENERATE_FINISH_LENGTH);
        assert_memory_equal(out[i].ids, ids, sizeof ids);
        for (int k = 0; k < 16; k++) {
            assert_true(fabs(out[i].logprobs[k] - lps[k]) < 1e-5);
            sum += lps[k];
        }
        assert_true(fabs(out[i].logprob_sum - sum) < 1e-4);
        // the greedy tokens differ across prompts (the model is not degenerate)
        if (i > 0) assert_true(memcmp(out[i].ids, out[0].ids, sizeof ids) != 0 || r[i].n_prompt == r[0].n_prompt);
    }
    free_results(out, N_PROMPTS);
}

// Same outputs whatever the batch size, admission order and prefill chunking.
// Bit-identical in Q8 precision, where every kernel treats each token row on
// its own; in F32 precision the matmul switches from per-row dot products
// (<= 4 tokens) to OpenBLAS sgemm (more tokens), whose summation order differs
// in the last bits, so tokens must agree and log-probabilities within 1e-5.
static void check_batch_invariance(model *m, kernel_precision prec, bool sampled) {
    enum { N = 9 };
    const bool bitwise = prec == KERNEL_PRECISION_Q8;
    generate_request r[N];
    generate_result ref[N], out[N];
    make_requests(r, N, 20, sampled);
    generate_options o = generate_options_default();
    o.precision = prec;
    o.batch_size = 1;
    run_model(m, r, N, &o, ref);
    const struct { int batch, max_tokens; } cfgs[] = {{3, 512}, {4, 512}, {6, 8}, {9, 16}, {2, 2}};
    for (size_t c = 0; c < AS_ARRAY_LEN(cfgs); c++) {
        o.batch_size = cfgs[c].batch;
        o.max_batch_tokens = cfgs[c].max_tokens;
        run_model(m, r, N, &o, out);
        assert_same_results(ref, out, N, bitwise);
        free_results(out, N);
    }
    // requests 0 and 6 share a prompt and (greedy) must agree; sampled with other seeds they differ
    if (!sampled) assert_memory_equal(ref[0].ids, ref[6].ids, 20 * sizeof(int32_t));
    else assert_true(memcmp(ref[0].ids, ref[6].ids, 20 * sizeof(int32_t)) != 0);
    free_results(ref, N);
}

static void test_batch_invariance_greedy(void **st) {
    (void)st;
    check_batch_invariance(g_model_q8, KERNEL_PRECISION_Q8, false);
    check_batch_invariance(g_model_q4, KERNEL_PRECISION_Q8, false);
    check_batch_invariance(g_model, KERNEL_PRECISION_F32, false);
}

static void test_batch_invariance_sampled(void **st) {
    (void)st;
    check_batch_invariance(g_model_q8, KERNEL_PRECISION_Q8, true);
    check_batch_invariance(g_model_q4, KERNEL_PRECISION_Q8, true);
    check_batch_invariance(g_model, KERNEL_PRECISION_F32, true);
}

static void test_max_new_tokens(void **st) {
    (void)st;
    const int maxes[] = {1, 2, 7};
    for (size_t m = 0; m < AS_ARRAY_LEN(maxes); m++) {
        generate_request r[3];
        generate_result out[3];
        make_requests(r, 3, maxes[m], m == 1);
        generate_options o = generate_options_default();
        o.batch_size = 2;
        run_ok(r, 3, &o, out);
        for (int i = 0; i < 3; i++) {
            assert_int_equal(out[i].n_ids, maxes[m]);
            assert_int_equal(out[i].finish, GENERATE_FINISH_LENGTH);
        }
        free_results(out, 3);
    }
}

// Ending on an end token given by option: take the greedy continuation, declare
// its 4th token an end token; generation must stop right there (end token
// included in ids, not in text), while the other requests are unaffected
// unless they produce that token too.
static void test_end_ids(void **st) {
    (void)st;
    generate_request r[N_PROMPTS];
    generate_result ref[N_PROMPTS], out[N_PROMPTS];
    make_requests(r, N_PROMPTS, 12, false);
    generate_options o = generate_options_default();
    o.batch_size = 3;
    run_ok(r, N_PROMPTS, &o, ref);
    int32_t end = ref[2].ids[3];
    o.end_ids = &end;
    o.n_end_ids = 1;
    run_ok(r, N_PROMPTS, &o, out);
    for (int i = 0; i < N_PROMPTS; i++) {
        int64_t first = -1;
        for (int64_t k = 0; k < ref[i].n_ids && first < 0; k++)
            if (ref[i].ids[k] == end) first = k;
        if (first < 0) {
            assert_int_equal(out[i].finish, GENERATE_FINISH_LENGTH);
            assert_int_equal(out[i].n_ids, 12);
        } else {
            assert_int_equal(out[i].finish, GENERATE_FINISH_STOP);
            assert_int_equal(out[i].n_ids, first + 1);
            assert_memory_equal(out[i].ids, ref[i].ids, (first + 1) * sizeof(int32_t));
            // the text is that of the tokens before the end token
            char *t = tokenizer_decode(g_tok, ref[i].ids, (size_t)first, false);
            assert_string_equal(out[i].text, t);
            free(t);
        }
    }
    assert_int_equal(out[2].n_ids, 4);
    free_results(ref, N_PROMPTS);
    free_results(out, N_PROMPTS);
}

// The tokenizer's own end token (<|im_end|>): hot sampling over a 110-token
// vocabulary hits it in some of 48 requests of 40 tokens (fixed seeds, so the
// outcome is deterministic).
static void test_tokenizer_end(void **st) {
    (void)st;
    enum { N = 48 };
    generate_request r[N];
    generate_result out[N];
    make_requests(r, N, 40, true);
    for (int i = 0; i < N; i++) r[i].sampling = (sampler_params){3.0f, 0, 1.0f, 0.0f, 1.0f, 0, (uint64_t)i};
    int32_t im_end = tokenizer_find(g_tok, TINY_IM_END_TEXT);
    assert_true(im_end >= 0 && tokenizer_is_end(g_tok, im_end));
    generate_options o = generate_options_default();
    o.batch_size = 5;
    run_ok(r, N, &o, out);
    int n_stop = 0;
    for (int i = 0; i < N; i++) {
        for (int64_t k = 0; k + 1 < out[i].n_ids; k++) assert_false(tokenizer_is_end(g_tok, out[i].ids[k]));
        if (out[i].finish == GENERATE_FINISH_STOP) {
            n_stop++;
            assert_true(tokenizer_is_end(g_tok, out[i].ids[out[i].n_ids - 1]));
            assert_null(strstr(out[i].text, TINY_IM_END_TEXT));
        } else {
            assert_int_equal(out[i].finish, GENERATE_FINISH_LENGTH);
            assert_int_equal(out[i].n_ids, 40);
        }
    }
    assert_true(n_stop >= 1 && n_stop < N);
    free_results(out, N);
}

// ---- stop strings and streaming ----

typedef struct stream_log {
    char text[8][4096];
    size_t len[8];
    int n_calls[8], n_final[8];
    int n_split; // non-final chunks ending in the lead byte 0xC3 (an incomplete "é")
} stream_log;

static void on_token(void *user, int64_t req, int32_t token, const char *text, size_t len) {
    stream_log *s = user;
    assert_true(req >= 0 && req < 8);
    assert_true(s->len[req] + len < sizeof s->text[req]);
    memcpy(s->text[req] + s->len[req], text, len);
    s->len[req] += len;
    s->n_calls[req]++;
    if (token < 0) s->n_final[req]++;
    else if (len > 0 && (unsigned char)text[len - 1] == 0xC3) s->n_split++;
}

static void test_stop_strings_and_stream(void **st) {
    (void)st;
    enum { N = 4 };
    generate_request r[N];
    generate_result ref[N], out[N];
    make_requests(r, N, 30, true);
    generate_options o = generate_options_default();
    o.batch_size = 2;
    run_ok(r, N, &o, ref);
    // stop strings cut from the middle of the reference texts (spanning tokens)
    char stops[N][8];
    const char *stop_ptr[N][2];
    for (int i = 0; i < N; i++) {
        size_t L = strlen(ref[i].text);
        assert_true(L > 12);
        memcpy(stops[i], ref[i].text + L / 2, 3);
        stops[i][3] = 0;
        stop_ptr[i][0] = "never-appears-\x01";
        stop_ptr[i][1] = stops[i];
        r[i].stop = stop_ptr[i];
        r[i].n_stop = 2;
    }
    stream_log log;
    memset(&log, 0, sizeof log);
    o.on_token = on_token;
    o.user = &log;
    run_ok(r, N, &o, out);
    for (int i = 0; i < N; i++) {
        const char *at = strstr(ref[i].text, stops[i]);
        assert_non_null(at);
        size_t cut = (size_t)(at - ref[i].text);
        assert_int_equal(out[i].finish, GENERATE_FINISH_STOP);
        assert_int_equal(strlen(out[i].text), cut);
        assert_memory_equal(out[i].text, ref[i].text, cut);
        // tokens up to the one that completed the stop string, same as before
        assert_true(out[i].n_ids <= ref[i].n_ids);
        assert_memory_equal(out[i].ids, ref[i].ids, out[i].n_ids * sizeof(int32_t));
        char *full = tokenizer_decode(g_tok, out[i].ids, (size_t)out[i].n_ids, false);
        assert_non_null(strstr(full, stops[i]));
        char *before = tokenizer_decode(g_tok, out[i].ids, (size_t)out[i].n_ids - 1, false);
        assert_null(strstr(before, stops[i]));
        free(full);
        free(before);
        // the stream is exactly the final text, never including the stop string
        assert_int_equal(log.len[i], cut);
        assert_memory_equal(log.text[i], out[i].text, cut);
        assert_int_equal(log.n_final[i], 1);
        assert_int_equal(log.n_calls[i], out[i].n_ids); // one per non-final token, plus the final flush
    }
    free_results(out, N);
    free_results(ref, N);

    // Without stop strings the stream also equals the text, and no chunk but
    // the final flush ends inside the two-byte character.
    enum { M = 8 };
    generate_request r2[M];
    generate_result out2[M];
    make_requests(r2, M, 60, true);
    for (int i = 0; i < M; i++) r2[i].sampling = (sampler_params){3.0f, 0, 1.0f, 0.0f, 1.0f, 0, 77 + (uint64_t)i};
    memset(&log, 0, sizeof log);
    run_ok(r2, M, &o, out2);
    int n_lead = 0;
    for (int i = 0; i < M; i++) {
        assert_int_equal(log.len[i], strlen(out2[i].text));
        assert_memory_equal(log.text[i], out2[i].text, log.len[i]);
        char *dec = tokenizer_decode(g_tok, out2[i].ids, (size_t)out2[i].n_ids, false);
        assert_string_equal(dec, out2[i].text);
        free(dec);
        n_lead += strchr(out2[i].text, '\xC3') != NULL;
    }
    assert_true(n_lead > 0); // the case did occur
    assert_int_equal(log.n_split, 0);
    free_results(out2, M);
}

static void test_context_limit(void **st) {
    (void)st;
    generate_request r[2];
    generate_result out[2];
    make_requests(r, 2, 50, false); // prompts of 5 and 1 tokens
    generate_options o = generate_options_default();
    o.n_ctx = 10;
    run_ok(r, 2, &o, out);
    // positions 0..9: the prompt, then generated tokens fed back; the last
    // sampled token needs no position
    assert_int_equal(out[0].n_ids, 10 - 5 + 1);
    assert_int_equal(out[1].n_ids, 10 - 1 + 1);
    assert_int_equal(out[0].finish, GENERATE_FINISH_LENGTH);
    free_results(out, 2);
}

typedef struct progress_log {
    int calls;
    int64_t last_done, total, generated;
} progress_log;

static void on_progress(void *user, const generate_progress *p) {
    progress_log *l = user;
    l->calls++;
    assert_int_equal(p->done, l->last_done + 1);
    assert_true(p->n_generated >= l->generated);
    assert_true(p->elapsed_s >= 0.0 && p->eta_s >= 0.0 && p->tokens_per_s >= 0.0);
    l->last_done = p->done;
    l->total = p->total;
    l->generated = p->n_generated;
}

static void test_progress(void **st) {
    (void)st;
    generate_request r[7];
    generate_result out[7];
    make_requests(r, 7, 5, false);
    progress_log log = {0};
    generate_options o = generate_options_default();
    o.batch_size = 3;
    o.on_progress = on_progress;
    o.user = &log;
    run_ok(r, 7, &o, out);
    assert_int_equal(log.calls, 7);
    assert_int_equal(log.total, 7);
    assert_int_equal(log.generated, 35);
    free_results(out, 7);
}

static void expect_error(const generate_request *r, int n, const generate_options *o, const tokenizer *tok, const char *what) {
    generate_result out[4];
    as_clear_error();
    assert_int_equal(generate_run(g_model, tok, r, n, o, out), -1);
    if (!strstr(as_last_error(), what)) fail_msg("expected '%s' in '%s'", what, as_last_error());
}

static void test_bad_requests(void **st) {
    (void)st;
    generate_request r[2];
    make_requests(r, 2, 4, false);
    generate_options o = generate_options_default();
    int32_t bad_tok[2] = {1, 100000};
    const char *stop[1] = {""};
    generate_request b;

    b = r[1], b.n_prompt = 0;
    generate_request two[2] = {r[0], b};
    expect_error(two, 2, &o, g_tok, "request 1: empty prompt");
    b = r[1], b.prompt = bad_tok, b.n_prompt = 2;
    two[1] = b;
    expect_error(two, 2, &o, g_tok, "outside the vocabulary");
    b = r[1], b.max_new_tokens = 0;
    two[1] = b;
    expect_error(two, 2, &o, g_tok, "max_new_tokens");
    b = r[1], b.sampling.top_p = 2.0f;
    two[1] = b;
    expect_error(two, 2, &o, g_tok, "top_p");
    b = r[1], b.stop = stop, b.n_stop = 1;
    two[1] = b;
    expect_error(two, 2, &o, g_tok, "stop string 0 is empty");
    stop[0] = "x";
    expect_error(two, 2, &o, NULL, "need a tokenizer");
    generate_options small = o;
    small.n_ctx = 3;
    expect_error(r, 1, &small, g_tok, "does not fit the context");
    generate_options zero = o;
    zero.batch_size = 0;
    expect_error(r, 1, &zero, g_tok, "batch_size");
    // and no requests at all is fine
    assert_int_equal(generate_run(g_model, g_tok, NULL, 0, &o, NULL), 0);
}

// Without a tokenizer: ids only, text NULL.
static void test_no_tokenizer(void **st) {
    (void)st;
    generate_request r[2];
    generate_result a[2], b[2];
    make_requests(r, 2, 6, false);
    run_ok(r, 2, NULL, a);
    assert_int_equal(generate_run(g_model, NULL, r, 2, NULL, b), 0);
    for (int i = 0; i < 2; i++) {
        assert_null(b[i].text);
        assert_int_equal(a[i].n_ids, b[i].n_ids);
        assert_memory_equal(a[i].ids, b[i].ids, a[i].n_ids * sizeof(int32_t));
    }
    free_results(a, 2);
    free_results(b, 2);
}

// ---- sampling on the backend (as_backend's sample_rows) ----

// The contract of sample_rows written with sampler_sample, row by row: what a
// backend's sampler must give.
static int64_t g_backend_rows;
static void ref_sample_rows(int32_t *tok, const float *logits, int64_t ld, int64_t n_rows, int32_t n_vocab, as_sample_row *rows) {
    for (int64_t r = 0; r < n_rows; r++) {
        as_sample_row *w = &rows[r];
        sampler_params p = {.temperature = w->temperature, .top_k = w->top_k, .top_p = w->top_p, .min_p = w->min_p,
                            .repeat_penalty = w->repeat_penalty, .repeat_last_n = w->repeat_last_n};
        sampler s;
        assert_int_equal(sampler_init(&s, &p, n_vocab), 0);
        s.rng = w->rng;
        tok[r] = sampler_sample(&s, logits + r * ld, w->history, w->n_history);
        w->rng = s.rng;
        sampler_free(&s);
    }
    g_backend_rows += n_rows;
}

// sampler_logprob as logprob_rows, counting its rows.
static int64_t g_logprob_rows;
static void ref_logprob_rows(float *out, const float *logits, int64_t ld, int64_t n_rows, int32_t n_vocab, const int32_t *tok) {
    for (int64_t r = 0; r < n_rows; r++) out[r] = (float)sampler_logprob(logits + r * ld, n_vocab, tok[r]);
    g_logprob_rows += n_rows;
}

// The CUDA plugin's sampler and log-probs run on the host (cuda_host_check.h), where it was built.
static void (*g_plugin_sample_rows)(int32_t *, const float *, int64_t, int64_t, int32_t, as_sample_row *);
static void (*g_plugin_logprob_rows)(float *, const float *, int64_t, int64_t, int32_t, const int32_t *);
static void plugin_logprob_rows(float *out, const float *logits, int64_t ld, int64_t n_rows, int32_t n_vocab, const int32_t *tok) {
    g_plugin_logprob_rows(out, logits, ld, n_rows, n_vocab, tok);
    g_logprob_rows += n_rows;
}
static void plugin_sample_rows(int32_t *tok, const float *logits, int64_t ld, int64_t n_rows, int32_t n_vocab, as_sample_row *rows) {
    g_plugin_sample_rows(tok, logits, ld, n_rows, n_vocab, rows);
    g_backend_rows += n_rows;
}
static bool load_plugin_sampler(void) {
    void *h = dlopen(AS_BINARY_DIR "/libalphaspin_cuda.so", RTLD_NOW | RTLD_LOCAL);
    void *f = h ? dlsym(h, "alphaspin_cuda_train_host") : NULL;
    const as_cuda_train_host *ht = f ? ((const as_cuda_train_host *(*)(void))(uintptr_t)f)() : NULL;
    if (!ht || ht->version != AS_CUDA_TRAIN_HOST_VERSION || !ht->ops.sample_rows || !ht->ops.logprob_rows) return false;
    g_plugin_sample_rows = ht->ops.sample_rows;
    g_plugin_logprob_rows = ht->ops.logprob_rows;
    return true;
}

// A model whose backend has sample_rows samples through it, with the host
// sampler's tokens, log-probabilities and seeds' streams: the same results as
// the CPU path, for greedy and sampled requests of every filter side by side;
// with logprob_rows too, the log-probabilities come from it (the logits then
// in the backend's buf_alloc memory): the CPU's, or within rounding of them
// (the plugin's sum in its own order).
static void test_backend_sampling(void **st) {
    (void)st;
    enum { N = 9 };
    generate_request r[N];
    generate_result ref[N], out[N];
    make_requests(r, N, 20, true);
    for (int i = 0; i < N; i++) {
        sampler_params *p = &r[i].sampling;
        if (i % 4 == 1) *p = sampler_params_greedy(), p->repeat_penalty = 1.3f, p->repeat_last_n = -1;
        if (i % 4 == 2) p->top_k = 0, p->top_p = 0.9f, p->min_p = 0.0f;
        if (i % 4 == 3) p->top_k = 3, p->temperature = 0.7f, p->repeat_last_n = 8;
    }
    generate_options o = generate_options_default();
    o.precision = KERNEL_PRECISION_Q8;
    o.batch_size = 4;
    assert_ptr_equal(g_model_q8->be, &as_backend_cpu);
    run_model(g_model_q8, r, N, &o, ref);
    static as_backend wrapped;
    wrapped = as_backend_cpu;
    wrapped.name = "cpu+sample_rows";
    static const char *const what[4] = {"sampler_sample as sample_rows", "sampler_sample and sampler_logprob as sample_rows and logprob_rows",
                                        "the CUDA plugin's sampler (host run)", "the CUDA plugin's sampler and log-probs (host run)"};
    for (int impl = 0; impl < 4; impl++) {
        const bool plugin = impl >= 2, lp = impl % 2;
        if (impl == 2 && !load_plugin_sampler()) {
            fprintf(stderr, "  the CUDA plugin's sampler: not built here, skipped\n");
            break;
        }
        wrapped.sample_rows = plugin ? plugin_sample_rows : ref_sample_rows;
        wrapped.logprob_rows = !lp ? NULL : plugin ? plugin_logprob_rows : ref_logprob_rows;
        assert_int_equal(model_use_backend(g_model_q8, &wrapped), AS_OK);
        g_backend_rows = 0, g_logprob_rows = 0;
        run_model(g_model_q8, r, N, &o, out);
        assert_int_equal(model_use_backend(g_model_q8, &as_backend_cpu), AS_OK);
        int64_t n_ids = 0;
        for (int i = 0; i < N; i++) n_ids += out[i].n_ids;
        assert_int_equal(g_backend_rows, n_ids); // every token came from sample_rows
        assert_int_equal(g_logprob_rows, lp ? n_ids : 0);
        assert_same_results(ref, out, N, impl != 3); // the plugin's log-probs: within 1e-5
        free_results(out, N);
        fprintf(stderr, "  %s: %lld tokens, as the host sampler's\n", what[impl], (long long)n_ids);
    }
    free_results(ref, N);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_plain_loop),
        cmocka_unit_test(test_batch_invariance_greedy),
        cmocka_unit_test(test_batch_invariance_sampled),
        cmocka_unit_test(test_max_new_tokens),
        cmocka_unit_test(test_end_ids),
        cmocka_unit_test(test_tokenizer_end),
        cmocka_unit_test(test_stop_strings_and_stream),
        cmocka_unit_test(test_context_limit),
        cmocka_unit_test(test_progress),
        cmocka_unit_test(test_bad_requests),
        cmocka_unit_test(test_no_tokenizer),
        cmocka_unit_test(test_backend_sampling),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
