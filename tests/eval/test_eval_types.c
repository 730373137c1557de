// eval_run end to end on the tiny llama with task files and data the test
// writes: generate_until with string targets and lm-eval's filters, the error
// on a gold answer the extraction cannot read.
#include "tiny_scorer.h"

#include <sys/stat.h>

#include "eval/eval.h"

static void write_text(const char *name, const char *text) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", g_dir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static char *path_of(const char *name) {
    static char p[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", g_dir, name);
    return p[k];
}

static const cJSON *get(const cJSON *o, const char *a, const char *b) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(o, a), b);
    if (!x) fail_msg("results lack %s / %s", a, b);
    return x;
}

// Runs one task file; *samples (when not NULL) gets the --log-samples lines.
static cJSON *run(const char *task_file, cJSON **samples) {
    eval_options o = eval_options_default();
    o.tasks = path_of(task_file);
    o.data_dir = g_dir;
    o.tasks_dir = g_dir;
    o.log_samples = samples ? path_of("samples.jsonl") : NULL;
    cJSON *r = NULL;
    if (eval_run(g_model, g_tok, &o, &r)) fail_msg("%s", as_last_error());
    if (samples) {
        char *text;
        size_t len;
        assert_int_equal(as_read_file(o.log_samples, &text, &len), 0);
        *samples = cJSON_CreateArray();
        for (char *p = text, *nl; (nl = strchr(p, '\n')); p = nl + 1) {
            cJSON *line = cJSON_ParseWithLength(p, (size_t)(nl - p));
            assert_non_null(line);
            cJSON_AddItemToArray(*samples, line);
        }
        free(text);
    }
    return r;
}

static int run_fails(const char *task_file, const char *needle) {
    eval_options o = eval_options_default();
    o.tasks = path_of(task_file);
    o.data_dir = g_dir;
    o.tasks_dir = g_dir;
    cJSON *r = NULL;
    if (eval_run(g_model, g_tok, &o, &r) == 0) fail_msg("%s ran; expected an error with '%s'", task_file, needle);
    assert_null(r);
    if (!strstr(as_last_error(), needle)) fail_msg("error '%s' lacks '%s'", as_last_error(), needle);
    return 0;
}

// String targets: the first run learns what the (deterministic, greedy) tiny
// model answers; the second gives items 0 and 2 those answers as gold (the
// others another text) and must score exactly them, under the default filter
// ("none": the output as it is) and under a regex filter taking the first
// non-space character.
static void test_generate_until_strings(void **st) {
    (void)st;
    write_text("gen.jsonl", "{\"q\": \"the cat\", \"a\": \"?\"}\n{\"q\": \"and the\", \"a\": \"?\"}\n"
                            "{\"q\": \"Hello\", \"a\": \"?\"}\n{\"q\": \"ing\", \"a\": \"?\"}\n");
    const char *yaml = "task: gen\ntype: generate_until\ndata: gen.jsonl\nmatch: string\ndoc_to_text: \"Q: {{q}}\\nA:\"\n"
                       "gold: \"{{a}}\"\nuntil: [\"\\n\"]\nmax_gen_toks: 6\n"
                       "filter_list:\n  - name: none\n    filter:\n      - function: take_first\n"
                       "  - name: first-char\n    filter:\n      - function: regex\n        regex_pattern: \"(\\\\S)\"\n"
                       "      - function: take_first\n";
    write_text("gen.yaml", yaml);
    cJSON *samples;
    cJSON *r = run("gen.yaml", &samples);
    // lm-eval logs one line per document and filter.
    assert_int_equal(cJSON_GetArraySize(samples), 8);
    char out[4][64];
    for (int i = 0; i < 4; i++) {
        const cJSON *s = cJSON_GetArrayItem(samples, 2 * i);
        assert_string_equal(cJSON_GetObjectItem(s, "filter")->valuestring, "none");
        assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(samples, 2 * i + 1), "filter")->valuestring, "first-char");
        assert_int_equal(cJSON_GetObjectItem(s, "doc_id")->valueint, i);
        const cJSON *resp = cJSON_GetArrayItem(cJSON_GetArrayItem(cJSON_GetObjectItem(s, "resps"), 0), 0);
        assert_true(cJSON_IsString(resp));
        assert_string_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(s, "filtered_resps"), 0)->valuestring, resp->valuestring);
        const cJSON *args = cJSON_GetObjectItem(cJSON_GetObjectItem(s, "arguments"), "gen_args_0");
        assert_non_null(strstr(cJSON_GetObjectItem(args, "arg_0")->valuestring, "\nA:"));
        assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(args, "arg_1"), "max_gen_toks")->valueint, 6);
        snprintf(out[i], sizeof out[i], "%s", resp->valuestring);
        assert_true(strlen(out[i]) < 60);
        if (getenv("AS_TEST_VERBOSE")) fprintf(stderr, "output %d: [%s]\n", i, out[i]);
    }
    assert_true(get(cJSON_GetObjectItem(r, "results"), "gen", "exact_match,none")->valuedouble == 0);
    cJSON_Delete(samples), cJSON_Delete(r);
    // Items 0 and 2 answered exactly; item 1's gold is its first character
    // only (first-char matches when the output has one); item 3 never.
    char first1[8] = "";
    for (const char *p = out[1]; *p; p++)
        if (*p != ' ' && *p != '\n' && *p != '\t') { first1[0] = *p, first1[1] = 0; break; }
    const char *qs[4] = {"the cat", "and the", "Hello", "ing"}, *golds[4] = {out[0], first1, out[2], "never said"};
    as_sbuf data = {0};
    for (int i = 0; i < 4; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "q", qs[i]);
        cJSON_AddStringToObject(o, "a", golds[i]);
        char *line = cJSON_PrintUnformatted(o);
        as_sb_printf(&data, "%s\n", line);
        free(line);
        cJSON_Delete(o);
    }
    write_text("gen.jsonl", data.s);
    free(data.s);
    r = run("gen.yaml", NULL);
    const cJSON *res = cJSON_GetObjectItem(r, "results");
    const double want_none = (strcmp(out[1], first1) == 0) ? 0.75 : 0.5;
    assert_true(fabs(get(res, "gen", "exact_match,none")->valuedouble - want_none) < 1e-12);
    // first-char: gold "x..." vs the output's first non-space character.
    int n_first = 0;
    for (int i = 0; i < 4; i++) {
        char f[16] = "[invalid]";
        for (const char *p = out[i]; *p; p++)
            if (*p != ' ' && *p != '\n' && *p != '\t') { f[0] = *p, f[1] = 0; break; }
        n_first += !strcmp(f, golds[i]);
    }
    assert_true(fabs(get(res, "gen", "exact_match,first-char")->valuedouble - n_first / 4.0) < 1e-12);
    assert_true(cJSON_IsNumber(get(res, "gen", "exact_match_stderr,none")));
    cJSON_Delete(r);
}

// A gold the task's extraction cannot read is an error naming the item, not a 0.
static void test_unreadable_gold(void **st) {
    (void)st;
    write_text("num.jsonl", "{\"q\": \"one\", \"a\": \"#### 1\"}\n{\"q\": \"two\", \"a\": \"forty-two\"}\n");
    write_text("num.yaml", "task: num\ntype: generate_until\ndata: num.jsonl\ndoc_to_text: \"Q: {{q}}\\nA:\"\n"
                           "gold: \"{{a}}\"\nuntil: [\"\\n\"]\nmax_gen_toks: 4\n");
    run_fails("num.yaml", "num.yaml: item 1: gold: 'forty-two' holds no number");
    write_text("num2.yaml", "task: num2\ntype: generate_until\ndata: num.jsonl\ndoc_to_text: \"Q: {{q}}\\nA:\"\n"
                            "gold: \"{{answer}}\"\nuntil: [\"\\n\"]\nmax_gen_toks: 4\n");
    run_fails("num2.yaml", "num2.yaml: item 0: field 'answer' missing (gold, position 3)");
}

// MT-Bench's question file is JSON Lines (util/jsonl.h): a bad line is an
// error naming the file and the line, before any answer is generated.
static void test_mt_bench_questions(void **st) {
    (void)st;
    write_text("mtq.jsonl", "{\"question_id\": 1, \"category\": \"math\", \"turns\": [\"1+1?\", \"And 2+2?\"]}\n\n"
                            "{\"question_id\": 2, \"category\": \"math\", \"turns\": [\"3+3?\"\n");
    write_text("mtq.yaml", "task: mtq\ntype: mt_bench\ndata: mtq.jsonl\nmax_gen_toks: 4\n");
    run_fails("mtq.yaml", "mtq.jsonl:3: not valid JSON (column 55)");
}

// The log-likelihood of toks[n_ctx..n) after toks[0..n_ctx) and whether each
// of those tokens is the argmax of its logits (the first of equal maxima),
// from one run of the sequence in a fresh cache.
static double ref_ll(const int32_t *toks, size_t n, size_t n_ctx, bool *greedy) {
    kv_cache *kv = kv_cache_init(&g_model->cfg, 1, (int32_t)n, g_prec);
    int32_t seq[512] = {0}, pos[512];
    assert_true(n <= 512);
    for (size_t i = 0; i < n; i++) pos[i] = (int32_t)i;
    const int32_t nv = g_model->cfg.n_vocab;
    float *logits = malloc(n * (size_t)nv * sizeof *logits);
    model_batch b = {.n_tokens = (int32_t)(n - 1), .token = toks, .seq = seq, .pos = pos};
    assert_int_equal(model_forward(g_model, kv, &b, logits), 0);
    double ll = 0;
    *greedy = true;
    for (size_t j = n_ctx; j < n; j++) {
        const float *l = logits + (j - 1) * (size_t)nv;
        double mx = l[0], z = 0;
        int32_t arg = 0;
        for (int32_t v = 1; v < nv; v++)
            if (l[v] > mx) mx = l[v], arg = v;
        for (int32_t v = 0; v < nv; v++) z += exp(l[v] - mx);
        ll += l[toks[j]] - mx - log(z);
        *greedy &= arg == toks[j];
    }
    free(logits);
    kv_cache_free(kv);
    return ll;
}

static int32_t *encode(const char *s, size_t n, size_t *k) {
    int32_t *ids = NULL;
    *k = 0;
    assert_int_equal(tokenizer_encode(g_tok, s, n, false, false, &ids, k), 0);
    return ids;
}

// type: loglikelihood (LAMBADA): the built-in lambada_openai.yaml on a
// {context, continuation} file.  Each item's log-likelihood and greedy flag
// against a reference; perplexity = exp(-mean ll), acc = mean greedy.  One
// more task makes a continuation the model's own argmax token: acc 1 there.
static void test_loglikelihood_lambada(void **st) {
    (void)st;
    const char *ctx[3] = {"the cat and the", "Hello and", "ing the"}, *word[3] = {"thing", "Hello", NULL};
    // A context and the model's argmax token after it, one printable character
    // (the tiny tokenizer has no merges: a character is a token).
    static const char *const cands[] = {"ing the", "the", "and", "Hello", "ing", "the cat", "x and", "Hello the",
                                        "a b c", "and and", "the the", "q", "Hello ing", "z", "cat", "dog and"};
    char greedy_word[8] = "";
    const char *greedy_ctx = NULL;
    for (size_t ci = 0; ci < sizeof cands / sizeof *cands && !greedy_word[0]; ci++) {
        size_t k;
        int32_t *toks = encode(cands[ci], strlen(cands[ci]), &k);
        kv_cache *kv = kv_cache_init(&g_model->cfg, 1, (int32_t)k, g_prec);
        int32_t seq[64] = {0}, pos[64];
        for (size_t i = 0; i < k; i++) pos[i] = (int32_t)i;
        float *logits = malloc(k * (size_t)g_model->cfg.n_vocab * sizeof *logits);
        model_batch b = {.n_tokens = (int32_t)k, .token = toks, .seq = seq, .pos = pos};
        assert_int_equal(model_forward(g_model, kv, &b, logits), 0);
        const float *l = logits + (k - 1) * (size_t)g_model->cfg.n_vocab;
        int32_t arg = 0;
        for (int32_t v = 1; v < g_model->cfg.n_vocab; v++)
            if (l[v] > l[arg]) arg = v;
        free(logits), free(toks);
        kv_cache_free(kv);
        char piece[64];
        size_t pn = tokenizer_token_to_piece(g_tok, arg, false, piece, sizeof piece - 1);
        if (pn == 1 && piece[0] > ' ' && piece[0] < 127 && piece[0] != '"' && piece[0] != '\\')
            greedy_word[0] = piece[0], greedy_ctx = cands[ci];
    }
    assert_non_null(greedy_ctx);
    word[2] = "and";
    as_sbuf data = {0};
    for (int i = 0; i < 3; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "context", ctx[i]);
        cJSON_AddStringToObject(o, "continuation", word[i]);
        char *line = cJSON_PrintUnformatted(o);
        as_sb_printf(&data, "%s\n", line);
        free(line);
        cJSON_Delete(o);
    }
    char dir[600];
    snprintf(dir, sizeof dir, "%s/lambada", g_dir);
    mkdir(dir, 0755);
    write_text("lambada/lambada_openai_test.jsonl", data.s);
    free(data.s);
    eval_options o = eval_options_default();
    o.tasks = "lambada_openai";
    o.data_dir = g_dir;
    o.tasks_dir = AS_TASKS_DIR;
    o.log_samples = path_of("ll_samples.jsonl");
    cJSON *r;
    if (eval_run(g_model, g_tok, &o, &r)) fail_msg("%s", as_last_error());
    double sum = 0, n_greedy = 0;
    for (int i = 0; i < 3; i++) {
        char whole[256];
        snprintf(whole, sizeof whole, "%s %s", ctx[i], word[i]);
        size_t nc, nw;
        int32_t *c = encode(ctx[i], strlen(ctx[i]), &nc), *w = encode(whole, strlen(whole), &nw);
        int32_t toks[256];
        memcpy(toks, c, nc * sizeof *c);
        memcpy(toks + nc, w + nc, (nw - nc) * sizeof *w);
        bool g;
        sum += ref_ll(toks, nw, nc, &g);
        n_greedy += g;
        free(c), free(w);
    }
    const cJSON *res = cJSON_GetObjectItem(r, "results");
    const double ppl = get(res, "lambada_openai", "perplexity,none")->valuedouble;
    if (fabs(ppl - exp(-sum / 3)) > 1e-4 * ppl) fail_msg("perplexity %.9g vs reference %.9g", ppl, exp(-sum / 3));
    assert_true(fabs(get(res, "lambada_openai", "acc,none")->valuedouble - n_greedy / 3) < 1e-12);
    assert_true(cJSON_IsNumber(get(res, "lambada_openai", "perplexity_stderr,none")));
    assert_string_equal(get(cJSON_GetObjectItem(r, "configs"), "lambada_openai", "output_type")->valuestring, "loglikelihood");
    cJSON_Delete(r);
    // acc is the greedy flag: the argmax character as the continuation scores 1.
    char line[256];
    snprintf(line, sizeof line, "{\"c\": \"%s\", \"w\": \"%s\"}\n{\"c\": \"%s\", \"w\": \"%s%s\"}\n", greedy_ctx,
             greedy_word, greedy_ctx, greedy_word, greedy_word);
    write_text("greedy.jsonl", line);
    write_text("greedy.yaml", "task: greedy\ntype: loglikelihood\ndata: greedy.jsonl\ndoc_to_text: \"{{c}}\"\ndoc_to_target: \"{{w}}\"\n");
    cJSON *samples;
    r = run("greedy.yaml", &samples);
    const cJSON *resp0 = cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetArrayItem(samples, 0), "filtered_resps"), 0);
    assert_string_equal(cJSON_GetArrayItem(resp0, 1)->valuestring, "True");
    // The second item adds a second token: greedy only if it is the argmax again.
    size_t nc, nw;
    char whole[64];
    snprintf(whole, sizeof whole, "%s%s%s", greedy_ctx, greedy_word, greedy_word);
    int32_t *cc = encode(greedy_ctx, strlen(greedy_ctx), &nc), *ww = encode(whole, strlen(whole), &nw);
    bool g2;
    ref_ll(ww, nw, nc, &g2);
    free(cc), free(ww);
    assert_true(fabs(get(cJSON_GetObjectItem(r, "results"), "greedy", "acc,none")->valuedouble - (1 + g2) / 2.0) < 1e-12);
    cJSON_Delete(samples), cJSON_Delete(r);
}

// lm-eval's get_rolling_token_windows + make_disjoint_window, written out
// again from its definition (context_len 1): the first window predicts the
// first min(max, n) tokens after the prefix token; each next one predicts up
// to `max` more, its input the `max` tokens before its last prediction.
static int ref_windows(const int32_t *t, int n, int32_t prefix, int max, int32_t win[][64], int *wn, int *wctx) {
    int k = 0, first = n < max ? n : max;
    // (input, pred) = ([prefix] + t[:first-1], t[:first]); disjoint: input[:len - (len(pred) - 1)].
    win[k][0] = prefix;
    for (int i = 0; i < first; i++) win[k][1 + i] = t[i];
    wn[k] = first + 1, wctx[k] = 1, k++;
    for (int predicted = first; predicted < n; k++) {
        int plen = n - predicted < max ? n - predicted : max, end = predicted + plen;
        // input = t[end - max - 1 : end - 1] (max tokens), pred = t[end - plen : end]
        int in0 = end - max - 1, ctx_len = max - (plen - 1);
        for (int i = 0; i < ctx_len; i++) win[k][i] = t[in0 + i];
        for (int i = 0; i < plen; i++) win[k][ctx_len + i] = t[end - plen + i];
        wn[k] = ctx_len + plen, wctx[k] = ctx_len;
        predicted = end;
    }
    return k;
}

// type: loglikelihood_rolling on a model whose context window (16) is shorter
// than the documents: word_perplexity = exp(-sum ll / sum words),
// byte_perplexity = exp(-sum ll / sum bytes), bits_per_byte = -sum ll /
// (sum bytes * ln 2), the ll of each document the sum over its windows.
static void test_loglikelihood_rolling(void **st) {
    (void)st;
    char small[600];
    snprintf(small, sizeof small, "%s/small.gguf", g_dir);
    tiny_llama_cfg c = tiny_llama_default();
    c.n_ctx = 16, c.seed = 7;
    assert_int_equal(tiny_llama_write(small, &c, NULL), 0);
    model *big = g_model, *m;
    if (model_load(&m, small)) fail_msg("%s", as_last_error());
    g_model = m;
    const char *docs[3] = {"the cat and the dog sing and ring the thing, Hello Hello and the end.",
                           "short one", "  two  spaces\n\nand a newline and more and more and more words here ok"};
    as_sbuf data = {0};
    for (int i = 0; i < 3; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "page", docs[i]);
        char *line = cJSON_PrintUnformatted(o);
        as_sb_printf(&data, "%s\n", line);
        free(line);
        cJSON_Delete(o);
    }
    write_text("wiki.jsonl", data.s);
    free(data.s);
    write_text("wiki.yaml", "task: wiki\ntype: loglikelihood_rolling\ndata: wiki.jsonl\ndoc_to_target: \"{{page}}\"\n");
    cJSON *samples;
    cJSON *r = run("wiki.yaml", &samples);
    const int32_t prefix = tokenizer_bos(g_tok) >= 0 ? tokenizer_bos(g_tok) : tokenizer_eos(g_tok);
    double sum = 0, words = 0, bytes = 0;
    int total_windows = 0;
    for (int i = 0; i < 3; i++) {
        size_t k;
        int32_t *t = encode(docs[i], strlen(docs[i]), &k);
        static int32_t win[32][64];
        int wn[32], wctx[32];
        int nw = ref_windows(t, (int)k, prefix, 16, win, wn, wctx);
        total_windows += nw;
        double doc = 0;
        for (int w = 0; w < nw; w++) {
            bool g;
            assert_true(wn[w] - 1 <= 16);
            doc += ref_ll(win[w], (size_t)wn[w], (size_t)wctx[w], &g);
        }
        // The sample log: one token pair per window, the same tokens.
        const cJSON *tk = cJSON_GetObjectItem(cJSON_GetArrayItem(samples, i), "tokens");
        assert_int_equal(cJSON_GetArraySize(tk), nw);
        for (int w = 0; w < nw; w++) {
            const cJSON *pair = cJSON_GetArrayItem(tk, w);
            assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(pair, "context")), wctx[w]);
            assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(pair, "continuation")), wn[w] - wctx[w]);
            assert_int_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(pair, "continuation"), 0)->valueint, win[w][wctx[w]]);
        }
        sum += doc;
        bytes += (double)strlen(docs[i]);
        free(t);
    }
    words = 15 + 2 + 15; // Python: [len(re.split(r"\s+", d)) for d in docs] (a leading run gives an empty piece)
    assert_true(total_windows > 3);
    const cJSON *res = cJSON_GetObjectItem(r, "results");
    struct { const char *k; double want; } m3[] = {{"word_perplexity,none", exp(-sum / words)},
                                                   {"byte_perplexity,none", exp(-sum / bytes)},
                                                   {"bits_per_byte,none", -sum / (bytes * log(2.0))}};
    for (int i = 0; i < 3; i++) {
        const double got = get(res, "wiki", m3[i].k)->valuedouble;
        if (fabs(got - m3[i].want) > 1e-4 * fabs(m3[i].want)) fail_msg("%s %.9g vs reference %.9g", m3[i].k, got, m3[i].want);
    }
    assert_string_equal(get(res, "wiki", "word_perplexity_stderr,none")->valuestring, "N/A");
    cJSON_Delete(samples), cJSON_Delete(r);
    g_model = big;
    model_free(m);
}

// The results' configs state what ran: the data file as resolved, the
// few-shot set-up only with shots, and the shots each item actually got.
static void test_configs_state_what_ran(void **st) {
    (void)st;
    write_text("mc.jsonl", "{\"q\": \"a\", \"ch\": [\"x\", \"y\"], \"g\": 0}\n{\"q\": \"b\", \"ch\": [\"x\", \"y\"], \"g\": 1}\n"
                           "{\"q\": \"c\", \"ch\": [\"x\", \"y\"], \"g\": 0}\n");
    char yaml[1024];
    snprintf(yaml, sizeof yaml, "task: mc0\ndata: %s\ndoc_to_text: \"Q: {{q}}\\nA:\"\nchoices: [\"{{ch}}\"]\ngold: \"{{g}}\"\n",
             path_of("mc.jsonl"));
    write_text("mc0.yaml", yaml);
    cJSON *r = run("mc0.yaml", NULL);
    const cJSON *c = cJSON_GetObjectItem(cJSON_GetObjectItem(r, "configs"), "mc0");
    assert_string_equal(cJSON_GetObjectItem(c, "data")->valuestring, path_of("mc.jsonl"));
    assert_null(cJSON_GetObjectItem(c, "data_dir"));
    assert_null(cJSON_GetObjectItem(c, "fewshot_sampler"));
    assert_null(cJSON_GetObjectItem(c, "fewshot_split"));
    assert_string_equal(cJSON_GetObjectItem(c, "primary_metric")->valuestring, "acc");
    cJSON_Delete(r);
    // 5 shots asked from a pool of 3 with the item excluded: 2 drawn for each.
    write_text("mc5.yaml", "task: mc5\ndata: mc.jsonl\nnum_fewshot: 5\ndoc_to_text: \"Q: {{q}}\\nA:\"\nchoices: [\"{{ch}}\"]\ngold: \"{{g}}\"\n");
    r = run("mc5.yaml", NULL);
    c = cJSON_GetObjectItem(cJSON_GetObjectItem(r, "configs"), "mc5");
    assert_string_equal(cJSON_GetObjectItem(c, "data")->valuestring, path_of("mc.jsonl")); // found beside the task file
    assert_string_equal(cJSON_GetObjectItem(c, "fewshot_sampler")->valuestring, "random");
    assert_int_equal(cJSON_GetObjectItem(c, "num_fewshot")->valueint, 5);
    assert_int_equal(cJSON_GetObjectItem(c, "fewshot_drawn")->valueint, 2);
    assert_int_equal(get(r, "n-shot", "mc5")->valueint, 5);
    cJSON_Delete(r);
}

// Python's str(float) and json.dumps(indent=2, ensure_ascii=False), the forms
// lm-eval's sample lines and hashes hold (expected values from Python 3).
static void test_python_forms(void **st) {
    (void)st;
    struct { double x; const char *want; } f[] = {{-1.5, "-1.5"}, {-12.345678901234567, "-12.345678901234567"}, {1e-05, "1e-05"},
                                                  {1e16, "1e+16"}, {123456789012345.6, "123456789012345.6"}, {-0.0001, "-0.0001"},
                                                  {0.1, "0.1"}, {100.0, "100.0"}, {2.5e-10, "2.5e-10"}};
    for (size_t i = 0; i < sizeof f / sizeof *f; i++) {
        char buf[32];
        eval_py_float(f[i].x, buf);
        if (strcmp(buf, f[i].want)) fail_msg("str(%.17g): '%s', want '%s'", f[i].x, buf, f[i].want);
    }
    cJSON *d = cJSON_Parse("{\"q\": \"\u00e9 \\\"x\\\"\\n\\u0001\", \"n\": 0.5, \"big\": 1e-05, \"ch\": [\"x\", \"y\"], \"g\": 0, \"e\": [], \"o\": {}}");
    assert_non_null(d);
    char *dumped = eval_py_json_dumps(d);
    assert_string_equal(dumped, "{\n  \"q\": \"\xC3\xA9 \\\"x\\\"\\n\\u0001\",\n  \"n\": 0.5,\n  \"big\": 1e-05,\n  \"ch\": [\n    \"x\",\n"
                                "    \"y\"\n  ],\n  \"g\": 0,\n  \"e\": [],\n  \"o\": {}\n}");
    char h[65];
    eval_sha256_hex(dumped, h);
    assert_string_equal(h, "356e4e243acf5dc5e2013dbab8bcae06c1a688adcc80b1a08988cef5a1901055");
    free(dumped);
    cJSON_Delete(d);
}

// --log-samples in lm-eval's layout for a multiple-choice task: the document,
// each choice's request (context, continuation), its response (str(ll),
// str(is_greedy)), the target, the metric names and values, lm-eval's hashes,
// and the token ids (the tokens the scorer ran, by lm-eval's split rule).
static void test_log_samples_layout(void **st) {
    (void)st;
    write_text("ls.jsonl", "{\"q\": \"a\", \"ch\": [\"x\", \"y\"], \"g\": 0}\n{\"q\": \"b\", \"ch\": [\"the\", \"ing\"], \"g\": 1}\n");
    write_text("ls.yaml", "task: ls\ndata: ls.jsonl\ndoc_to_text: \"Q: {{q}}\\nA:\"\nchoices: [\"{{ch}}\"]\ngold: \"{{g}}\"\nmetrics: [acc, acc_norm]\n");
    cJSON *samples;
    cJSON *r = run("ls.yaml", &samples);
    assert_int_equal(cJSON_GetArraySize(samples), 2);
    const cJSON *s0 = cJSON_GetArrayItem(samples, 0);
    static const char *const keys[] = {"doc_id", "doc", "target", "arguments", "resps", "filtered_resps", "filter", "metrics",
                                       "doc_hash", "prompt_hash", "target_hash", "acc", "acc_norm", "task", "ll", "tokens"};
    const cJSON *k = s0->child;
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++, k = k->next) {
        assert_non_null(k);
        assert_string_equal(k->string, keys[i]);
    }
    assert_null(k);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(s0, "doc"), "q")->valuestring, "a");
    assert_string_equal(cJSON_GetObjectItem(s0, "target")->valuestring, "0");
    const cJSON *a1 = cJSON_GetObjectItem(cJSON_GetObjectItem(s0, "arguments"), "gen_args_1");
    assert_string_equal(cJSON_GetObjectItem(a1, "arg_0")->valuestring, "Q: a\nA:");
    assert_string_equal(cJSON_GetObjectItem(a1, "arg_1")->valuestring, " y");
    // sha256 of "Q: a\nA:" and of "0", as hashlib gives them.
    assert_string_equal(cJSON_GetObjectItem(s0, "prompt_hash")->valuestring, "ffe6024bb23f74dff4125fc5d4653d32222517915c21acd4d5dcf38be318ca51");
    assert_string_equal(cJSON_GetObjectItem(s0, "target_hash")->valuestring, "5feceb66ffc86f38d952786c6d696c79c2dbc239dd4e91b46729d73a27fb57e9");
    const cJSON *names = cJSON_GetObjectItem(s0, "metrics");
    assert_int_equal(cJSON_GetArraySize(names), 2);
    assert_string_equal(cJSON_GetArrayItem(names, 1)->valuestring, "acc_norm");
    // Responses: [[str(ll), str(greedy)]] per request; the ll that of a reference.
    for (int c = 0; c < 2; c++) {
        const cJSON *resp = cJSON_GetArrayItem(cJSON_GetArrayItem(cJSON_GetObjectItem(s0, "resps"), c), 0);
        const char *ll_s = cJSON_GetArrayItem(resp, 0)->valuestring, *g_s = cJSON_GetArrayItem(resp, 1)->valuestring;
        assert_true(!strcmp(g_s, "True") || !strcmp(g_s, "False"));
        const char *cont = c ? " y" : " x";
        char whole[64];
        snprintf(whole, sizeof whole, "Q: a\nA:%s", cont);
        size_t nc, nw;
        int32_t *cc = encode("Q: a\nA:", 7, &nc), *ww = encode(whole, strlen(whole), &nw);
        bool g;
        const double want = ref_ll(ww, nw, nc, &g);
        if (fabs(strtod(ll_s, NULL) - want) > 1e-4 * fabs(want)) fail_msg("choice %d: ll %s vs reference %.9g", c, ll_s, want);
        assert_string_equal(g_s, g ? "True" : "False");
        const cJSON *pair = cJSON_GetArrayItem(cJSON_GetObjectItem(s0, "tokens"), c);
        assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(pair, "context")), (int)nc);
        assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(pair, "continuation")), (int)(nw - nc));
        for (size_t q = 0; q < nw; q++) {
            const cJSON *part = cJSON_GetObjectItem(pair, q < nc ? "context" : "continuation");
            assert_int_equal(cJSON_GetArrayItem(part, (int)(q < nc ? q : q - nc))->valueint, ww[q]);
        }
        free(cc), free(ww);
    }
    cJSON_Delete(samples), cJSON_Delete(r);
}

// The tiny model's teardown, then the files the tests wrote.
static int teardown_all(void **st) {
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    int rc = teardown(st);
    return system(cmd) == 0 ? rc : -1;
}

int main(void) {
    (void)loglik_alone;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_generate_until_strings),
        cmocka_unit_test(test_unreadable_gold),
        cmocka_unit_test(test_mt_bench_questions),
        cmocka_unit_test(test_loglikelihood_lambada),
        cmocka_unit_test(test_loglikelihood_rolling),
        cmocka_unit_test(test_configs_state_what_ran),
        cmocka_unit_test(test_python_forms),
        cmocka_unit_test(test_log_samples_layout),
    };
    return cmocka_run_group_tests(tests, setup, teardown_all);
}
