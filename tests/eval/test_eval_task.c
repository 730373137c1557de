// Task files, data layouts, prompts, few-shot sampling and metrics, on tiny
// synthetic tasks scored by a fake scorer whose log-likelihoods the test sets.
#include "test_common.h"

#include <math.h>
#include <sys/stat.h>

#include "eval/eval_internal.h"
#include "eval/yaml_json.h"
#include "util/common.h"

static char g_dir[256];

#define assert_near(a, b, eps)                                                   \
    do {                                                                         \
        double a_ = (a), b_ = (b);                                               \
        if (!(fabs(a_ - b_) <= (eps))) fail_msg("%.17g != %.17g", a_, b_);        \
    } while (0)

static void write_file(const char *name, const char *text) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", g_dir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void load_task(const char *name, const char *yaml, eval_task *t) {
    write_file(name, yaml);
    char p[512];
    snprintf(p, sizeof p, "%s/%s", g_dir, name);
    int rc = eval_task_load(p, AS_TASKS_DIR, t);
    if (rc) fail_msg("%s", as_last_error());
}

// ---- fake scorer: ll of a continuation from a table; records the requests ----

typedef struct fake_entry { const char *cont; double ll; } fake_entry;
typedef struct fake {
    const fake_entry *table;
    int n;
    char *ctx[64], *cont[64];
    int n_seen;
} fake;

static int fake_loglik(void *user, eval_mc_item *items, int64_t n) {
    fake *f = user;
    for (int64_t i = 0; i < n; i++)
        for (int32_t c = 0; c < items[i].n_choices; c++) {
            double ll = NAN;
            for (int k = 0; k < f->n; k++)
                if (!strcmp(items[i].cont[c], f->table[k].cont)) ll = f->table[k].ll;
            if (isnan(ll)) fail_msg("fake scorer: no entry for continuation '%s'", items[i].cont[c]);
            items[i].ll[c] = ll;
            if (f->n_seen < 64) {
                f->ctx[f->n_seen] = as_strdup(items[i].ctx[c]);
                f->cont[f->n_seen++] = as_strdup(items[i].cont[c]);
            }
        }
    return 0;
}

static void fake_free(fake *f) {
    for (int i = 0; i < f->n_seen; i++) free(f->ctx[i]), free(f->cont[i]);
    f->n_seen = 0;
}

static double num(const cJSON *o, const char *task, const char *key) {
    const cJSON *t = cJSON_GetObjectItem(o, task);
    const cJSON *v = cJSON_GetObjectItem(t, key);
    if (!cJSON_IsNumber(v)) fail_msg("results lack %s / %s", task, key);
    return v->valuedouble;
}

// acc picks the highest summed log-likelihood; acc_norm divides by the choice's
// length in characters.  "a" (1 char) at -2 beats "bbbbbbbbbb" (10 chars) at -5
// for acc; per character -0.5 beats -2 for acc_norm.
static void test_acc_and_acc_norm(void **st) {
    (void)st;
    write_file("mc.jsonl", "{\"q\": \"one\", \"ch\": [\"a\", \"bbbbbbbbbb\"], \"g\": 1}\n"
                           "{\"q\": \"two\", \"ch\": [\"a\", \"bbbbbbbbbb\"], \"g\": 0}\n"
                           "{\"q\": \"three\", \"ch\": [\"a\", \"bbbbbbbbbb\"], \"g\": 0}\n");
    eval_task t;
    load_task("mc.yaml", "task: mc\ndata: mc.jsonl\ndoc_to_text: \"Question: {{q}}\\nAnswer:\"\nchoices: [\"{{ch}}\"]\n"
                         "gold: \"{{g}}\"\nmetrics: [acc, acc_norm]\n", &t);
    eval_subset *s;
    int32_t ns;
    assert_int_equal(eval_task_read_data(&t, "/nonexistent", &s, &ns), 0);
    assert_int_equal(ns, 1);
    fake_entry tab[] = {{" a", -2}, {" bbbbbbbbbb", -5}};
    fake f = {.table = tab, .n = 2};
    eval_options o = eval_options_default();
    o.shots = 0;
    cJSON *res = cJSON_CreateObject(), *nshot = cJSON_CreateObject(), *nsamp = cJSON_CreateObject();
    assert_int_equal(eval_run_mc(&t, s, ns, &o, fake_loglik, &f, res, nshot, nsamp, NULL), 0);
    // acc: items 2, 3 right (2/3); acc_norm: item 1 right (1/3).
    assert_near(num(res, "mc", "acc,none"), 2.0 / 3, 1e-12);
    assert_near(num(res, "mc", "acc_norm,none"), 1.0 / 3, 1e-12);
    // Sample standard error of the mean: sqrt(var_{n-1} / n); values {1,1,0}: var = 1/3.
    assert_near(num(res, "mc", "acc_stderr,none"), sqrt((1.0 / 3) / 3), 1e-12);
    assert_near(num(res, "mc", "acc_norm_stderr,none"), sqrt((1.0 / 3) / 3), 1e-12);
    // The prompt: lm-eval's text, the choice after the target delimiter, shared context.
    assert_string_equal(f.ctx[0], "Question: one\nAnswer:");
    assert_string_equal(f.cont[0], " a");
    assert_string_equal(f.ctx[1], "Question: one\nAnswer:");
    assert_string_equal(f.cont[1], " bbbbbbbbbb");
    assert_int_equal(cJSON_GetObjectItem(nshot, "mc")->valueint, 0);
    fake_free(&f);
    cJSON_Delete(res), cJSON_Delete(nshot), cJSON_Delete(nsamp);
    eval_subsets_free(s, ns);
    eval_task_free(&t);
}

// Ties go to the first choice (np.argmax); acc_norm counts characters, not bytes.
static void test_metrics_ties_and_utf8(void **st) {
    (void)st;
    char *ch[3] = {"\xC3\xA9\xC3\xA9", "xxx", "yy"}; // "éé" is 2 characters, 4 bytes
    eval_doc d = {.n_choices = 3, .choices = ch, .gold = 0};
    double acc, norm, mc2;
    double ll[3] = {-3, -3, -10};
    eval_mc_metrics(&d, ll, &acc, &norm, &mc2);
    assert_true(acc == 1);       // tie between 0 and 1: the first
    assert_true(norm == 0);      // -3/2 = -1.5 < -3/3 = -1: choice 1
    double ll2[3] = {-2.9, -3, -10};
    d.gold = 1;
    eval_mc_metrics(&d, ll2, &acc, &norm, &mc2);
    assert_true(norm == 1);      // -1.45 > -1: by characters; by bytes it would be -0.725
    // mc2: probability mass of the first n_true choices.
    d.n_true = 2;
    double ll3[3] = {log(0.2), log(0.3), log(0.1)};
    d.gold = 0;
    eval_mc_metrics(&d, ll3, &acc, &norm, &mc2);
    assert_near(mc2, 0.5 / 0.6, 1e-12);
    double m, se;
    double x[4] = {1, 0, 0, 1};
    eval_mean_stderr(x, 4, &m, &se);
    assert_near(m, 0.5, 1e-15);
    assert_near(se, sqrt((1.0 / 3) / 4), 1e-15); // var_{n-1} = 4*0.25/3
}

// Few-shot: from the evaluated split the item itself is never a shot, the same
// seed gives the same shots, another seed others; first_n takes the first ones.
static void test_fewshot_sampling(void **st) {
    (void)st;
    int64_t a[5], b[5];
    for (int64_t item = 0; item < 20; item++) {
        as_rng r1, r2;
        as_rng_seed(&r1, 1234 + (uint64_t)item), as_rng_seed(&r2, 1234 + (uint64_t)item);
        int32_t n1 = eval_fewshot_pick(&r1, 10, 5, false, item % 10, a);
        int32_t n2 = eval_fewshot_pick(&r2, 10, 5, false, item % 10, b);
        assert_int_equal(n1, 5);
        assert_int_equal(n2, 5);
        for (int k = 0; k < 5; k++) {
            assert_int_equal(a[k], b[k]);
            assert_true(a[k] != item % 10);
            for (int j = 0; j < k; j++) assert_true(a[j] != a[k]);
        }
    }
    // A pool of 3 with the item excluded: only 2 shots exist.
    as_rng r;
    as_rng_seed(&r, 1);
    assert_int_equal(eval_fewshot_pick(&r, 3, 5, false, 1, a), 2);
    assert_true(a[0] != 1 && a[1] != 1);
    assert_int_equal(eval_fewshot_pick(&r, 10, 3, true, 1, a), 3);
    assert_int_equal(a[0], 0), assert_int_equal(a[1], 2), assert_int_equal(a[2], 3);
    assert_int_equal(eval_fewshot_pick(&r, 10, 3, true, -1, a), 3);
    assert_int_equal(a[1], 1);
}

// The context of a few-shot item: description + k examples (text, delimiter,
// gold choice), each followed by "\n\n"; identical across runs with one seed.
static void test_fewshot_prompts_deterministic(void **st) {
    (void)st;
    write_file("fs.jsonl", "{\"q\": \"q0\", \"ch\": [\"r0\", \"w0\"], \"g\": 0}\n{\"q\": \"q1\", \"ch\": [\"w1\", \"r1\"], \"g\": 1}\n"
                           "{\"q\": \"q2\", \"ch\": [\"r2\", \"w2\"], \"g\": 0}\n{\"q\": \"q3\", \"ch\": [\"w3\", \"r3\"], \"g\": 1}\n");
    eval_task t;
    load_task("fs.yaml", "task: fs\ndata: fs.jsonl\nnum_fewshot: 2\ndescription: \"About {{q}}.\\n\\n\"\n"
                         "doc_to_text: \"Q: {{q}}\\nA:\"\nchoices: [\"{{ch}}\"]\ngold: \"{{g}}\"\n", &t);
    eval_subset *s;
    int32_t ns;
    assert_int_equal(eval_task_read_data(&t, "/nonexistent", &s, &ns), 0);
    fake_entry tab[8];
    const char *conts[8] = {" r0", " w0", " w1", " r1", " r2", " w2", " w3", " r3"};
    for (int i = 0; i < 8; i++) tab[i] = (fake_entry){conts[i], -1};
    char *first[4] = {0};
    for (int run = 0; run < 3; run++) {
        fake f = {.table = tab, .n = 8};
        eval_options o = eval_options_default();
        if (run == 2) o.seed = 99;
        cJSON *res = cJSON_CreateObject(), *nshot = cJSON_CreateObject(), *nsamp = cJSON_CreateObject();
        assert_int_equal(eval_run_mc(&t, s, ns, &o, fake_loglik, &f, res, nshot, nsamp, NULL), 0);
        assert_int_equal(f.n_seen, 8);
        for (int i = 0; i < 4; i++) {
            const char *ctx = f.ctx[2 * i];
            char want_head[64], want_tail[64];
            snprintf(want_head, sizeof want_head, "About q%d.\n\nQ: ", i);
            snprintf(want_tail, sizeof want_tail, "Q: q%d\nA:", i);
            assert_true(!strncmp(ctx, want_head, strlen(want_head)));
            assert_string_equal(ctx + strlen(ctx) - strlen(want_tail), want_tail);
            // Two examples, each "Q: qk\nA: rk\n\n", none of them the item.
            int n_ex = 0;
            for (const char *p = strstr(ctx, "\nA: "); p; p = strstr(p + 1, "\nA: ")) n_ex++;
            assert_int_equal(n_ex, 2);
            char self[32];
            snprintf(self, sizeof self, "A: r%d\n\n", i);
            assert_null(strstr(ctx, self));
            if (run == 0) first[i] = as_strdup(ctx);
            else if (run == 1) assert_string_equal(ctx, first[i]);
        }
        bool differs = false;
        if (run == 2)
            for (int i = 0; i < 4; i++) differs |= strcmp(f.ctx[2 * i], first[i]) != 0;
        if (run == 2) assert_true(differs);
        assert_int_equal((int)cJSON_GetObjectItem(nshot, "fs")->valueint, 2);
        fake_free(&f);
        cJSON_Delete(res), cJSON_Delete(nshot), cJSON_Delete(nsamp);
    }
    // Shards (--offset S --limit K): item i gets the prompt the full run gave it.
    const int64_t shard[][2] = {{0, 1}, {1, 2}, {3, 5}, {2, 0}};
    for (size_t r = 0; r < sizeof shard / sizeof *shard; r++) {
        fake f = {.table = tab, .n = 8};
        eval_options o = eval_options_default();
        o.offset = shard[r][0], o.limit = shard[r][1];
        cJSON *res = cJSON_CreateObject(), *nshot = cJSON_CreateObject(), *nsamp = cJSON_CreateObject();
        assert_int_equal(eval_run_mc(&t, s, ns, &o, fake_loglik, &f, res, nshot, nsamp, NULL), 0);
        const int64_t want = AS_MAX((int64_t)0, (o.limit ? AS_MIN(4 - o.offset, o.limit) : 4 - o.offset));
        assert_int_equal(f.n_seen, 2 * want);
        assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(nsamp, "fs"), "effective")->valueint, want);
        for (int64_t i = 0; i < want; i++) assert_string_equal(f.ctx[2 * i], first[o.offset + i]);
        fake_free(&f);
        cJSON_Delete(res), cJSON_Delete(nshot), cJSON_Delete(nsamp);
    }
    { // past the end: an error, not an empty result
        fake f = {.table = tab, .n = 8};
        eval_options o = eval_options_default();
        o.offset = 4;
        cJSON *res = cJSON_CreateObject(), *nshot = cJSON_CreateObject(), *nsamp = cJSON_CreateObject();
        assert_int_not_equal(eval_run_mc(&t, s, ns, &o, fake_loglik, &f, res, nshot, nsamp, NULL), 0);
        assert_non_null(strstr(as_last_error(), "--offset 4 is past the last item"));
        cJSON_Delete(res), cJSON_Delete(nshot), cJSON_Delete(nsamp);
    }
    for (int i = 0; i < 4; i++) free(first[i]);
    eval_subsets_free(s, ns);
    eval_task_free(&t);
}

// Winogrande's partial scoring: per-choice contexts, one shared continuation.
static void test_partial_scoring(void **st) {
    (void)st;
    write_file("wg.jsonl", "{\"context_options\": [\"Ann beat Bo so Ann\", \"Ann beat Bo so Bo\"], \"continuation\": \"won.\", \"gold\": 0}\n");
    eval_task t;
    load_task("wg.yaml", "task: wg\ndata: wg.jsonl\ncontexts: \"{{context_options}}\"\ncontinuation: \"{{continuation}}\"\ngold: \"{{gold}}\"\n", &t);
    eval_subset *s;
    int32_t ns;
    assert_int_equal(eval_task_read_data(&t, "/nonexistent", &s, &ns), 0);
    fake_entry tab[] = {{" won.", -1}};
    fake f = {.table = tab, .n = 1};
    eval_options o = eval_options_default();
    cJSON *res = cJSON_CreateObject(), *nshot = cJSON_CreateObject(), *nsamp = cJSON_CreateObject();
    assert_int_equal(eval_run_mc(&t, s, ns, &o, fake_loglik, &f, res, nshot, nsamp, NULL), 0);
    assert_string_equal(f.ctx[0], "Ann beat Bo so Ann");
    assert_string_equal(f.ctx[1], "Ann beat Bo so Bo");
    assert_string_equal(f.cont[1], " won.");
    assert_near(num(res, "wg", "acc,none"), 1, 0); // tie: the first
    fake_free(&f);
    cJSON_Delete(res), cJSON_Delete(nshot), cJSON_Delete(nsamp);
    eval_subsets_free(s, ns);
    eval_task_free(&t);
}

// TruthfulQA's CSV layout: "; "-separated answer lists, mc1 and mc2.
static void test_truthfulqa_csv(void **st) {
    (void)st;
    write_file("TruthfulQA.csv", "Type,Category,Question,Best Answer,Correct Answers,Incorrect Answers,Source\n"
                                 "Adversarial,Misc,\"Is the sky, at noon, \"\"green\"\"?\",No,\"No; It is blue\",\"Yes; It is\ngreen\",x\n");
    char y1[4096], y2[4096];
    snprintf(y1, sizeof y1, "task: tq1\ndata: %s/TruthfulQA.csv\nformat: csv\nsplit_lists: {\"Correct Answers\": \"; \", \"Incorrect Answers\": \"; \"}\n"
                            "description: \"Q: primer?\\nA: yes.\\n\\n\"\ndoc_to_text: \"Q: {{Question}}\\nA:\"\n"
                            "true_choices: [\"{{Best Answer}}\"]\nfalse_choices: [\"{{Incorrect Answers}}\"]\n", g_dir);
    snprintf(y2, sizeof y2, "task: tq2\ndata: TruthfulQA.csv\nformat: csv\nsplit_lists: {\"Correct Answers\": \"; \", \"Incorrect Answers\": \"; \"}\n"
                            "doc_to_text: \"Q: {{Question}}\\nA:\"\ntrue_choices: [\"{{Correct Answers}}\"]\n"
                            "false_choices: [\"{{Incorrect Answers}}\"]\nmetrics: [mc2]\n");
    fake_entry tab[] = {{" No", log(0.4)}, {" It is blue", log(0.1)}, {" Yes", log(0.3)}, {" It is\ngreen", log(0.2)}};
    for (int k = 0; k < 2; k++) {
        eval_task t;
        load_task(k ? "tq2.yaml" : "tq1.yaml", k ? y2 : y1, &t);
        eval_subset *s;
        int32_t ns;
        assert_int_equal(eval_task_read_data(&t, "/nonexistent", &s, &ns), 0);
        fake f = {.table = tab, .n = 4};
        eval_options o = eval_options_default();
        cJSON *res = cJSON_CreateObject(), *nshot = cJSON_CreateObject(), *nsamp = cJSON_CreateObject();
        assert_int_equal(eval_run_mc(&t, s, ns, &o, fake_loglik, &f, res, nshot, nsamp, NULL), 0);
        if (k == 0) {
            assert_int_equal(f.n_seen, 3); // best + 2 incorrect
            assert_string_equal(f.ctx[0], "Q: primer?\nA: yes.\n\nQ: Is the sky, at noon, \"green\"?\nA:");
            assert_near(num(res, "tq1", "acc,none"), 1, 0);
        } else {
            assert_int_equal(f.n_seen, 4);
            assert_near(num(res, "tq2", "acc,none"), 0.5, 1e-12); // (0.4 + 0.1) / 1.0
        }
        fake_free(&f);
        cJSON_Delete(res), cJSON_Delete(nshot), cJSON_Delete(nsamp);
        eval_subsets_free(s, ns);
        eval_task_free(&t);
    }
}

// MMLU's layout: one CSV per subject and split; mean of the subjects.
static void test_subjects_mean(void **st) {
    (void)st;
    char p[512];
    snprintf(p, sizeof p, "%s/mm", g_dir), mkdir(p, 0755);
    write_file("mm/alpha_beta_test.csv", "question,choice0,choice1,choice2,choice3,answer\n\" What?\",w,x,y,z,0\nHow?,w,x,y,z,1\n");
    write_file("mm/gamma_test.csv", "question,choice0,choice1,choice2,choice3,answer\nWhy?,w,x,y,z,0\n");
    write_file("mm/alpha_beta_dev.csv", "question,choice0,choice1,choice2,choice3,answer\nD1?,a,b,c,d,2\nD2?,a,b,c,d,3\n");
    write_file("mm/gamma_dev.csv", "question,choice0,choice1,choice2,choice3,answer\nG1?,a,b,c,d,1\n");
    eval_task t;
    load_task("mm.yaml", "task: mm\ndata: mm/{subject}_test.csv\nfewshot_data: mm/{subject}_dev.csv\nformat: csv\nnum_fewshot: 1\n"
                         "fewshot_sampler: first_n\ndescription: \"The following are multiple choice questions (with answers) about {{subject}}.\\n\\n\"\n"
                         "doc_to_text: \"{{question|trim}}\\nA. {{choice0}}\\nB. {{choice1}}\\nC. {{choice2}}\\nD. {{choice3}}\\nAnswer:\"\n"
                         "choices: [A, B, C, D]\ngold: \"{{answer}}\"\n", &t);
    eval_subset *s;
    int32_t ns;
    assert_int_equal(eval_task_read_data(&t, "/nonexistent", &s, &ns), 0);
    assert_int_equal(ns, 2);
    assert_string_equal(s[0].name, "alpha_beta");
    fake_entry tab[] = {{" A", -1}, {" B", -2}, {" C", -3}, {" D", -4}};
    fake f = {.table = tab, .n = 4};
    eval_options o = eval_options_default();
    cJSON *res = cJSON_CreateObject(), *nshot = cJSON_CreateObject(), *nsamp = cJSON_CreateObject();
    assert_int_equal(eval_run_mc(&t, s, ns, &o, fake_loglik, &f, res, nshot, nsamp, NULL), 0);
    assert_string_equal(f.ctx[0], "The following are multiple choice questions (with answers) about alpha beta.\n\n"
                                  "D1?\nA. a\nB. b\nC. c\nD. d\nAnswer: C\n\nWhat?\nA. w\nB. x\nC. y\nD. z\nAnswer:");
    // Subject alpha_beta: 1/2, gamma: 1/1; the task: the unweighted mean 0.75 (not 2/3).
    assert_near(num(res, "mm_alpha_beta", "acc,none"), 0.5, 1e-12);
    assert_near(num(res, "mm_gamma", "acc,none"), 1, 1e-12);
    assert_near(num(res, "mm", "acc,none"), 0.75, 1e-12);
    // --limit 1: the first item of each subject.
    fake_free(&f);
    cJSON_Delete(res), cJSON_Delete(nshot), cJSON_Delete(nsamp);
    res = cJSON_CreateObject(), nshot = cJSON_CreateObject(), nsamp = cJSON_CreateObject();
    o.limit = 1;
    assert_int_equal(eval_run_mc(&t, s, ns, &o, fake_loglik, &f, res, nshot, nsamp, NULL), 0);
    assert_near(num(res, "mm", "acc,none"), 1, 1e-12);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(nsamp, "mm"), "effective")->valueint, 2);
    fake_free(&f);
    // --offset 1: alpha_beta's second item only (wrong: acc 0); gamma has no
    // item left and drops out of the mean instead of making it NaN.
    cJSON_Delete(res), cJSON_Delete(nshot), cJSON_Delete(nsamp);
    res = cJSON_CreateObject(), nshot = cJSON_CreateObject(), nsamp = cJSON_CreateObject();
    o.limit = 0, o.offset = 1;
    assert_int_equal(eval_run_mc(&t, s, ns, &o, fake_loglik, &f, res, nshot, nsamp, NULL), 0);
    assert_near(num(res, "mm", "acc,none"), 0, 1e-12);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(nsamp, "mm"), "effective")->valueint, 1);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(res, "mm"), "n_subsets")->valueint, 1);
    fake_free(&f);
    cJSON_Delete(res), cJSON_Delete(nshot), cJSON_Delete(nsamp);
    eval_subsets_free(s, ns);
    eval_task_free(&t);
}

// The HellaSwag text layout and lm-eval's preprocessing.
static void test_hellaswag_layout(void **st) {
    (void)st;
    write_file("hs.txt", "Making tea: A man boils water [header] in a kettle.  he\n2\n pours milk.\nsits.\nadds the tea [title] Done.\nleaves.\n"
                         "Cats: A cat sits. it\n0\njumps.\nruns.\nsleeps.\neats.\n");
    eval_task t;
    load_task("hs.yaml", "task: hs\ndata: hs.txt\nformat: hellaswag\ndoc_to_text: \"{{query}}\"\nchoices: [\"{{choices}}\"]\ngold: \"{{gold}}\"\n", &t);
    eval_subset *s;
    int32_t ns;
    assert_int_equal(eval_task_read_data(&t, "/nonexistent", &s, &ns), 0);
    assert_int_equal(cJSON_GetArraySize(s[0].docs), 2);
    const cJSON *d0 = cJSON_GetArrayItem(s[0].docs, 0);
    assert_string_equal(cJSON_GetObjectItem(d0, "query")->valuestring, "Making tea: A man boils water in a kettle. He");
    assert_string_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(d0, "choices"), 0)->valuestring, "pours milk.");
    assert_string_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(d0, "choices"), 2)->valuestring, "adds the tea. Done.");
    assert_int_equal(cJSON_GetObjectItem(d0, "gold")->valueint, 2);
    // ctx_b capitalised, as lm-eval's ctx_b.capitalize().
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(s[0].docs, 1), "query")->valuestring, "Cats: A cat sits. It");
    eval_subsets_free(s, ns);
    // A truncated file names the item's line.
    write_file("hs_bad.txt", "A: b\n1\nx\ny\n");
    eval_task_free(&t);
    load_task("hsb.yaml", "task: hs\ndata: hs_bad.txt\nformat: hellaswag\ndoc_to_text: \"{{query}}\"\nchoices: [\"{{choices}}\"]\ngold: \"{{gold}}\"\n", &t);
    assert_int_equal(eval_task_read_data(&t, "/nonexistent", &s, &ns), -1);
    assert_non_null(strstr(as_last_error(), "hs_bad.txt:1: incomplete item"));
    eval_task_free(&t);
}

static void expect_task_error(const char *yaml, const char *needle) {
    eval_task t;
    assert_int_equal(eval_task_parse(yaml, strlen(yaml), "x.yaml", &t), -1);
    if (!strstr(as_last_error(), needle)) fail_msg("error '%s' lacks '%s'", as_last_error(), needle);
}

static void test_task_file_errors(void **st) {
    (void)st;
    expect_task_error("task: a\ndata: d\ndoc_to_text: x\nchoices: [a, b]\ngold: '0'\nbogus: 1\n", "x.yaml: bogus: unknown field");
    expect_task_error("data: d\n", "x.yaml: task: missing");
    expect_task_error("task: a\n", "x.yaml: data: missing");
    expect_task_error("task: a\ndata: d\ntype: essay\n", "type: expected");
    expect_task_error("task: a\ndata: d\ndoc_to_text: x\nchoices: [a, b]\n", "gold: missing");
    expect_task_error("task: a\ndata: d\ndoc_to_text: x\nchoices: [a, b]\ngold: '0'\nnum_fewshot: -1\n", "num_fewshot");
    expect_task_error("task: a\ndata: d\ndoc_to_text: x\nchoices: [a, b]\ngold: '0'\nmetrics: [f1]\n", "unknown metric 'f1'");
    expect_task_error("task: a\ntask: b\n", "x.yaml:2: duplicate key 'task'");
    expect_task_error("task: [a\n", "x.yaml:");
    expect_task_error("a: &x 1\nb: *x\n", "not supported");
    expect_task_error("task: a\ndata: d\ntype: generate_until\ndoc_to_text: x\n", "gold are required");
    // Every built-in task file parses.
    const char *names[] = {"arc_easy", "arc_challenge", "hellaswag", "winogrande", "mmlu", "truthfulqa_mc1",
                           "truthfulqa_mc2", "gsm8k", "mt_bench", "lambada_openai"};
    for (size_t i = 0; i < AS_ARRAY_LEN(names); i++) {
        eval_task t;
        if (eval_task_load(names[i], AS_TASKS_DIR, &t)) fail_msg("%s", as_last_error());
        assert_string_equal(t.name, names[i]);
        eval_task_free(&t);
    }
    eval_task t;
    assert_int_equal(eval_task_load("nope", AS_TASKS_DIR, &t), -1);
    assert_non_null(strstr(as_last_error(), "no built-in task 'nope'"));
}

static void test_templates(void **st) {
    (void)st;
    cJSON *doc = cJSON_Parse("{\"a\": \" x \", \"n\": 3, \"l\": [\"p\", \"q\"], \"b c\": \"sp\"}");
    char *s = eval_render("<{{a}}|{{ a | trim }}|{{n}}|{{l[1]}}|{{b c}}>", doc, "t");
    assert_string_equal(s, "< x |x|3|q|sp>");
    free(s);
    // Templates are Jinja2 (jinja.h): fields can be rewritten.
    s = eval_render("{{ a|trim|upper }}/{{ l|join(',') }}/{{ 'Passage: ' ~ a.strip() }}/{{ n + 1 }}/{{ 'yes' if n > 2 else 'no' }}", doc, "t");
    assert_string_equal(s, "X/p,q/Passage: x/4/yes");
    free(s);
    assert_null(eval_render("Q: {{nope}}", doc, "t.yaml: item 0: doc_to_text"));
    assert_non_null(strstr(as_last_error(), "t.yaml: item 0: field 'nope' missing (doc_to_text, position 6)"));
    assert_null(eval_render("{{l[2]}}", doc, "t"));
    assert_non_null(strstr(as_last_error(), "t: position 4: list object has no element 2"));
    assert_null(eval_render("{{a|nofilter}}", doc, "t"));
    assert_non_null(strstr(as_last_error(), "t: position 5: no filter named 'nofilter'"));
    assert_null(eval_render("{{a", doc, "t"));
    cJSON_Delete(doc);
}

static void test_answer_extraction(void **st) {
    (void)st;
    struct { const char *text; bool strict; const char *want; } cases[] = {
        {"She pays 3*2 = 6.\n#### 1,234", true, "1234"},
        {"so #### -5.", true, "-5"},
        {"The answer is 72.", true, NULL},
        {"The answer is 72.", false, "72"},
        {"It costs $1,200 in total, then 18 more", false, "18"},
        {"It costs $1,200.", false, "1200"},
        {"no numbers here", false, NULL},
        {"#### 42\nQuestion: 7", false, "42"},
    };
    for (size_t i = 0; i < AS_ARRAY_LEN(cases); i++) {
        char *a = eval_extract_answer(cases[i].text, cases[i].strict);
        if (!cases[i].want) assert_null(a);
        else {
            assert_non_null(a);
            assert_string_equal(a, cases[i].want);
        }
        free(a);
    }
    assert_near(eval_parse_rating("Good. Rating: [[7]]"), 7, 0);
    assert_near(eval_parse_rating("[[8.5]] then [[2]]"), 8.5, 0);
    assert_near(eval_parse_rating("Rating: [6]"), 6, 0);
    assert_near(eval_parse_rating("no rating [[x]]"), -1, 0);
}

// lm-eval's filters (regex with findall/group_select/fallback, take_first,
// remove_whitespace, lowercase, map) and HF evaluate's exact_match options.
static void test_filters_and_exact_match(void **st) {
    (void)st;
    cJSON *root;
    const char *y = "filter_list:\n"
                    "  - name: strict-match\n    filter:\n      - function: regex\n        regex_pattern: \"#### (\\\\-?[0-9\\\\.\\\\,]+)\"\n      - function: take_first\n"
                    "  - name: flexible-extract\n    filter:\n      - function: regex\n        group_select: -1\n        regex_pattern: \"(-?[$0-9.,]{2,})|(-?[0-9]+)\"\n      - function: take_first\n"
                    "  - name: words\n    filter:\n      - function: remove_whitespace\n      - function: lowercase\n"
                    "  - name: first\n    filter:\n      - function: regex\n        regex_pattern: \"[A-D]\"\n        fallback: none\n"
                    "  - name: mapped\n    filter:\n      - function: strip\n      - function: map\n        mapping_dict: {\"yes\": \"1\", \"no\": \"0\"}\n        default_value: \"-1\"\n";
    assert_int_equal(yaml_to_json(y, strlen(y), "f.yaml", &root), 0);
    eval_filter *fs;
    int32_t nf;
    if (eval_filters_parse(cJSON_GetObjectItem(root, "filter_list"), "f.yaml", &fs, &nf)) fail_msg("%s", as_last_error());
    assert_int_equal(nf, 5);
    struct { int f; const char *in, *want; } cases[] = {
        {0, "so 3 + 4 = 7\n#### 1,234 and #### 9", "1,234"},
        {0, "The answer is 7.", "[invalid]"},
        {1, "It costs $1,200 in total, then 18 more.", "18"},
        {1, "x = 12.", "12."},
        {1, "nothing", "[invalid]"},
        {2, "  \n Paris Is", "paris is"},
        {3, "I pick C, not A", "C"},
        {3, "I pick c", "none"},
        {4, " yes\n", "1"},
        {4, "maybe", "-1"},
    };
    for (size_t i = 0; i < AS_ARRAY_LEN(cases); i++) {
        char *got = eval_filter_apply(&fs[cases[i].f], cases[i].in);
        if (strcmp(got, cases[i].want)) fail_msg("filter case %zu: '%s', want '%s'", i, got, cases[i].want);
        free(got);
    }
    eval_filters_free(fs, nf);
    cJSON_Delete(root);
    // exact_match as lm-eval's gsm8k configures it: regexes removed from both, case ignored.
    const char *m = "metric: exact_match\naggregation: mean\nhigher_is_better: true\nignore_case: true\n"
                    "ignore_punctuation: false\nregexes_to_ignore: [\",\", \"\\\\$\", \"(?s).*#### \", \"\\\\.$\"]\n";
    assert_int_equal(yaml_to_json(m, strlen(m), "m.yaml", &root), 0);
    eval_exact_match em;
    if (eval_exact_match_parse(root, "m.yaml", &em)) fail_msg("%s", as_last_error());
    assert_true(eval_exact_match_equal(&em, "$1,234.", "Half of it...\n#### 1234"));
    assert_false(eval_exact_match_equal(&em, "1235", "#### 1234"));
    char *norm = eval_exact_match_normalise(&em, "Step 1\nStep 2\n#### 5,000");
    assert_string_equal(norm, "5000");
    free(norm);
    eval_exact_match_free(&em);
    cJSON_Delete(root);
    eval_exact_match p = {.ignore_punctuation = true, .ignore_numbers = true};
    assert_true(eval_exact_match_equal(&p, "Paris!", "Pa-ris2"));
    assert_false(eval_exact_match_equal(&p, "paris", "Paris"));
    // Bad filters and options name the file and the key.
    const char *bad[][2] = {
        {"filter_list:\n  - name: a\n    filter:\n      - function: majority_vote\n", "f.yaml: filter_list: a: function 'majority_vote'"},
        {"filter_list:\n  - name: a\n    filter:\n      - function: regex\n        regex_pattern: \"(\"\n", "f.yaml: filter_list: a: regex: regex_pattern: bad regular expression"},
        {"filter_list:\n  - name: a\n    filter:\n      - function: regex\n        group: 1\n", "unknown or malformed argument 'group'"},
        {"filter_list: []\n", "expected a non-empty list"},
    };
    for (size_t i = 0; i < AS_ARRAY_LEN(bad); i++) {
        assert_int_equal(yaml_to_json(bad[i][0], strlen(bad[i][0]), "f.yaml", &root), 0);
        assert_int_equal(eval_filters_parse(cJSON_GetObjectItem(root, "filter_list"), "f.yaml", &fs, &nf), -1);
        if (!strstr(as_last_error(), bad[i][1])) fail_msg("'%s' lacks '%s'", as_last_error(), bad[i][1]);
        cJSON_Delete(root);
    }
    expect_task_error("task: a\ndata: d\ntype: generate_until\ndoc_to_text: x\ngold: y\nmetric_list:\n  - metric: exact_match\n    ignore_spaces: true\n",
                      "x.yaml: metric_list: exact_match: unknown option 'ignore_spaces'");
    expect_task_error("task: a\ndata: d\ntype: generate_until\ndoc_to_text: x\ngold: y\nmatch: words\n", "match: expected number or string");
    expect_task_error("task: a\ndata: d\ndoc_to_text: x\nchoices: [a, b]\ngold: '0'\nfilter_list: []\n", "only generate_until tasks take filters");
}

// TruthfulQA: the CSV's answer cells split as TruthfulQA's split_multi_answer
// (on ";", with or without a space; each answer closed with "."), and the
// multiple-choice JSON layout read instead when it is there.
static void test_truthfulqa_layouts(void **st) {
    (void)st;
    cJSON *a = eval_truthfulqa_split("No; It is blue;It is;  ; green. ");
    const char *want[] = {"No.", "It is blue.", "It is.", "green."};
    assert_int_equal(cJSON_GetArraySize(a), 4);
    for (int i = 0; i < 4; i++) assert_string_equal(cJSON_GetArrayItem(a, i)->valuestring, want[i]);
    cJSON_Delete(a);
    char dir[600];
    snprintf(dir, sizeof dir, "%s/truthfulqa", g_dir);
    mkdir(dir, 0755);
    write_file("truthfulqa/TruthfulQA.csv", "Type,Category,Question,Best Answer,Correct Answers,Incorrect Answers,Source\n"
                                            "Adversarial,Misc,Is the sky green?,No,\"No; It is blue;Never\",\"Yes;It is green; Sometimes\",x\n");
    fake_entry tab[] = {{" No.", log(0.4)}, {" It is blue.", log(0.1)}, {" Never.", log(0.05)}, {" Yes.", log(0.3)},
                        {" It is green.", log(0.1)}, {" Sometimes.", log(0.05)}, {" Blue.", log(0.5)}, {" Green.", log(0.25)},
                        {" Red.", log(0.25)}};
    for (int layout = 0; layout < 2; layout++) {
        if (layout == 1)
            write_file("truthfulqa/truthfulqa_mc.jsonl",
                       "{\"question\": \"Is the sky green?\", \"mc1_targets\": {\"choices\": [\"Blue.\", \"Green.\", \"Red.\"], \"labels\": [1, 0, 0]},"
                       " \"mc2_targets\": {\"choices\": [\"Green.\", \"Blue.\", \"Red.\"], \"labels\": [0, 1, 0]}}\n");
        for (int k = 1; k <= 2; k++) {
            eval_task t;
            if (eval_task_load(k == 1 ? "truthfulqa_mc1" : "truthfulqa_mc2", AS_TASKS_DIR, &t)) fail_msg("%s", as_last_error());
            eval_subset *s;
            int32_t ns;
            if (eval_task_read_data(&t, g_dir, &s, &ns)) fail_msg("%s", as_last_error());
            fake f = {.table = tab, .n = 9};
            eval_options o = eval_options_default();
            cJSON *res = cJSON_CreateObject(), *nshot = cJSON_CreateObject(), *nsamp = cJSON_CreateObject();
            assert_int_equal(eval_run_mc(&t, s, ns, &o, fake_loglik, &f, res, nshot, nsamp, NULL), 0);
            assert_non_null(strstr(f.ctx[0], "Q: Is the sky green?\nA:"));
            if (layout == 0 && k == 1) { // best answer against the incorrect ones, split on ";"
                assert_int_equal(f.n_seen, 4);
                assert_string_equal(f.cont[0], " No.");
                assert_string_equal(f.cont[2], " It is green.");
                assert_near(num(res, "truthfulqa_mc1", "acc,none"), 1, 0);
            } else if (layout == 0) { // (0.4 + 0.1 + 0.05) / (0.55 + 0.45)
                assert_int_equal(f.n_seen, 6);
                assert_near(num(res, "truthfulqa_mc2", "acc,none"), 0.55, 1e-12);
            } else if (k == 1) {
                assert_int_equal(f.n_seen, 3);
                assert_string_equal(f.cont[0], " Blue.");
                assert_near(num(res, "truthfulqa_mc1", "acc,none"), 1, 0);
            } else {
                assert_int_equal(f.n_seen, 3);
                assert_near(num(res, "truthfulqa_mc2", "acc,none"), 0.5, 1e-12);
            }
            fake_free(&f);
            cJSON_Delete(res), cJSON_Delete(nshot), cJSON_Delete(nsamp);
            eval_subsets_free(s, ns);
            eval_task_free(&t);
        }
    }
    // A malformed layout names the file and the item.
    write_file("truthfulqa/truthfulqa_mc.jsonl", "{\"question\": \"q\", \"mc1_targets\": {\"choices\": [\"a\"], \"labels\": [1, 0]}}\n");
    eval_task t;
    assert_int_equal(eval_task_load("truthfulqa_mc1", AS_TASKS_DIR, &t), 0);
    eval_subset *s;
    int32_t ns;
    assert_int_equal(eval_task_read_data(&t, g_dir, &s, &ns), -1);
    assert_non_null(strstr(as_last_error(), "truthfulqa_mc.jsonl: item 0: mc1_targets: expected {choices"));
    eval_task_free(&t);
}

// Task data in JSON Lines goes through util/jsonl.h: blank lines (spaces, a
// CR, a form feed) skipped but counted, and a bad line's error names the file
// and the line, for every layout that reads JSONL (jsonl, truthfulqa, and
// lm-eval files' auto: JSON Lines unless the file is one JSON array).
static void test_jsonl_data(void **st) {
    (void)st;
    write_file("jl.jsonl", "{\"q\": \"a\", \"ch\": [\"x\", \"y\"], \"g\": 0}\r\n\n \f \n{\"q\": \"b\", \"ch\": [\"x\", \"y\"], \"g\": 1}\n");
    eval_task t;
    load_task("jl.yaml", "task: jl\ndata: jl.jsonl\ndoc_to_text: \"{{q}}\"\nchoices: [\"{{ch}}\"]\ngold: \"{{g}}\"\n", &t);
    eval_subset *s;
    int32_t ns;
    if (eval_task_read_data(&t, "/nonexistent", &s, &ns)) fail_msg("%s", as_last_error());
    assert_int_equal(cJSON_GetArraySize(s[0].docs), 2);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(s[0].docs, 1), "q")->valuestring, "b");
    eval_subsets_free(s, ns);
    eval_task_free(&t);
    static const char *const bad[][2] = {
        {"{\"q\": \"a\"}\n\n{\"q\": \n", "jl.jsonl:3: not valid JSON (column 6)"},
        {"{\"q\": \"a\"}\n[1]\n", "jl.jsonl:2: not a JSON object (an array)"},
        {"{\"q\": \"a\"} x\n", "jl.jsonl:1: text after the JSON object (column 12)"},
        {"{\"q\": \"a\"}\n{\"q\": \"b", "jl.jsonl:2: cut off: the last line has no newline"},
    };
    for (size_t i = 0; i < AS_ARRAY_LEN(bad); i++) {
        write_file("jl.jsonl", bad[i][0]);
        load_task("jl.yaml", "task: jl\ndata: jl.jsonl\ndoc_to_text: \"{{q}}\"\nchoices: [\"{{ch}}\"]\ngold: \"{{g}}\"\n", &t);
        assert_int_equal(eval_task_read_data(&t, "/nonexistent", &s, &ns), -1);
        if (!strstr(as_last_error(), bad[i][1])) fail_msg("'%s' lacks '%s'", as_last_error(), bad[i][1]);
        eval_task_free(&t);
    }
    // TruthfulQA's multiple-choice JSONL.
    char dir[600];
    snprintf(dir, sizeof dir, "%s/tq", g_dir);
    mkdir(dir, 0755);
    snprintf(dir, sizeof dir, "%s/tq/truthfulqa", g_dir);
    mkdir(dir, 0755);
    write_file("tq/truthfulqa/truthfulqa_mc.jsonl", "\n{\"question\": \"q\"\n");
    assert_int_equal(eval_task_load("truthfulqa_mc1", AS_TASKS_DIR, &t), 0);
    snprintf(dir, sizeof dir, "%s/tq", g_dir);
    assert_int_equal(eval_task_read_data(&t, dir, &s, &ns), -1);
    if (!strstr(as_last_error(), "truthfulqa_mc.jsonl:2: not valid JSON (column 16)")) fail_msg("got '%s'", as_last_error());
    eval_task_free(&t);
    // lm-eval's local data: JSON Lines when not one array.
    const char *lm = "task: lj\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: lj.jsonl\n"
                     "output_type: multiple_choice\ntest_split: test\ndoc_to_text: q\ndoc_to_choice: ch\ndoc_to_target: g\n";
    write_file("lj.jsonl", "\n{\"q\": \"a\", \"ch\": [\"x\", \"y\"], \"g\": 0}\n{\"q\": \"b\", \"ch\": [\"x\", \"y\"], \"g\": 1}\n");
    load_task("lj.yaml", lm, &t);
    if (eval_task_read_data(&t, "/nonexistent", &s, &ns)) fail_msg("%s", as_last_error());
    assert_int_equal(cJSON_GetArraySize(s[0].docs), 2);
    eval_subsets_free(s, ns);
    eval_task_free(&t);
    write_file("lj.jsonl", "{\"q\": \"a\", \"ch\": [\"x\", \"y\"], \"g\": 0}\n\"b\"\n");
    load_task("lj.yaml", lm, &t);
    assert_int_equal(eval_task_read_data(&t, "/nonexistent", &s, &ns), -1);
    if (!strstr(as_last_error(), "lj.jsonl:2: not a JSON object (a string)")) fail_msg("got '%s'", as_last_error());
    eval_task_free(&t);
}

static int setup(void **st) {
    (void)st;
    char *d = as_test_tmpdir();
    if (!d) return -1;
    snprintf(g_dir, sizeof g_dir, "%s", d);
    return 0;
}

static int teardown(void **st) {
    (void)st;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_acc_and_acc_norm),
        cmocka_unit_test(test_metrics_ties_and_utf8),
        cmocka_unit_test(test_fewshot_sampling),
        cmocka_unit_test(test_fewshot_prompts_deterministic),
        cmocka_unit_test(test_partial_scoring),
        cmocka_unit_test(test_truthfulqa_csv),
        cmocka_unit_test(test_subjects_mean),
        cmocka_unit_test(test_hellaswag_layout),
        cmocka_unit_test(test_task_file_errors),
        cmocka_unit_test(test_templates),
        cmocka_unit_test(test_answer_extraction),
        cmocka_unit_test(test_filters_and_exact_match),
        cmocka_unit_test(test_truthfulqa_layouts),
        cmocka_unit_test(test_jsonl_data),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
