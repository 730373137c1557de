// lm-evaluation-harness's own task files for ARC-Easy, PIQA, OpenBookQA, BoolQ
// and Winogrande (tests/eval/fixtures/lm_eval, unchanged from lm-eval 0.4.8)
// score exactly what alphaspin's built-in tasks score on the same items: the
// test writes a few items per data set in the Hugging Face layout the lm-eval
// file reads (<dataset_path>/<dataset_name>/<split>.jsonl under the data
// folder) and in the layout of the built-in task (tasks/arc_easy.yaml and
// tasks/winogrande.yaml, as ../shared/data has them; for PIQA, OpenBookQA and
// BoolQ, which have no built-in task, a task file in the built-in style over
// {query, choices, gold} the test computes itself), runs both through eval_run
// on the tiny llama, 0-shot and 2-shot (the built-in file given the train
// split as fewshot_data), and compares per item the requests (context and
// continuation), the log-likelihoods, acc and acc_norm, and the task's scores:
// all exactly equal.
#include "tiny_scorer.h"

#include "eval/eval.h"

static char g_data[512];

static void write_file(const char *dir, const char *rel, const char *text) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, rel);
    char *slash = strrchr(p, '/');
    *slash = 0;
    assert_int_equal(as_mkdir_p(p), 0);
    *slash = '/';
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

// Items as JSON Lines.
typedef struct lines { as_sbuf b; } lines;
static void add_line(lines *l, cJSON *o) {
    char *s = cJSON_PrintUnformatted(o);
    as_sb_printf(&l->b, "%s\n", s);
    free(s);
    cJSON_Delete(o);
}
static void flush_lines(lines *l, const char *rel) {
    write_file(g_data, rel, l->b.s ? l->b.s : "");
    free(l->b.s);
    l->b.s = NULL, l->b.len = l->b.cap = 0;
}

static cJSON *strs(const char *const *s, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateString(s[i]));
    return a;
}

// The built-in layout {query, choices, gold}.
static cJSON *builtin_item(const char *query, cJSON *choices, int gold) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "query", query);
    cJSON_AddItemToObject(o, "choices", choices);
    cJSON_AddNumberToObject(o, "gold", gold);
    return o;
}

// ---- the data sets: the first N_TEST items are the evaluated split, the rest train ----

enum { N_TEST = 6, N_ALL = 9 };

static const struct { const char *q, *c[4], *labels; int n, gold; } ARC[N_ALL] = {
    {"Which is a renewable resource?", {"coal", "wind", "oil", "natural gas"}, "ABCD", 4, 1},
    {"What do plants need to make food?", {"sunlight", "sand", "salt"}, "123", 3, 0},
    {"Which tool measures mass?", {"a ruler", "a balance", "a thermometer", "a clock"}, "ABCD", 4, 1},
    {"What is the boiling point of water at sea level?", {"50 C", "75 C", "100 C", "150 C"}, "ABCD", 4, 2},
    {"Which planet is closest to the Sun?", {"Venus", "Earth", "Mars", "Mercury"}, "ABCD", 4, 3},
    {"A student's \"best\" guess is a", {"hypothesis", "law", "theory", "fact"}, "ABCD", 4, 0},
    {"Which is a mammal?", {"shark", "whale", "trout", "eel"}, "ABCD", 4, 1},
    {"What causes day and night?", {"Earth's rotation", "the Moon", "clouds"}, "ABC", 3, 0},
    {"Ice is water in which state?", {"gas", "liquid", "solid", "plasma"}, "ABCD", 4, 2},
};

static void write_arc(void) {
    lines hf[2] = {0}, bi[2] = {0};
    for (int i = 0; i < N_ALL; i++) {
        const int s = i >= N_TEST;
        cJSON *o = cJSON_CreateObject();
        char id[32], key[2] = {ARC[i].labels[ARC[i].gold], 0};
        snprintf(id, sizeof id, "Mercury_%d", 7000 + i);
        cJSON_AddStringToObject(o, "id", id);
        cJSON_AddStringToObject(o, "question", ARC[i].q);
        cJSON *ch = cJSON_AddObjectToObject(o, "choices");
        cJSON_AddItemToObject(ch, "text", strs(ARC[i].c, ARC[i].n));
        cJSON *lab = cJSON_AddArrayToObject(ch, "label");
        for (int c = 0; c < ARC[i].n; c++) {
            char l[2] = {ARC[i].labels[c], 0};
            cJSON_AddItemToArray(lab, cJSON_CreateString(l));
        }
        cJSON_AddStringToObject(o, "answerKey", key);
        add_line(&hf[s], o);
        char query[256];
        snprintf(query, sizeof query, "Question: %s", ARC[i].q);
        add_line(&bi[s], builtin_item(query, strs(ARC[i].c, ARC[i].n), ARC[i].gold));
    }
    flush_lines(&hf[0], "allenai/ai2_arc/ARC-Easy/test.jsonl"), flush_lines(&hf[1], "allenai/ai2_arc/ARC-Easy/train.jsonl");
    flush_lines(&bi[0], "arc/arc_easy_test.jsonl"), flush_lines(&bi[1], "arc/arc_easy_train.jsonl");
}

static const struct { const char *goal, *sol1, *sol2; int label; } PIQA[N_ALL] = {
    {"To open a jar", "twist the lid", "paint the lid", 0},
    {"Dry wet shoes", "put them in the freezer", "stuff them with newspaper", 1},
    {"How to boil an egg", "place it in boiling water", "place it in cold sand", 0},
    {"Keep bread fresh", "leave it in the sun", "store it in a sealed bag", 1},
    {"Make a paper plane", "fold a sheet of paper", "crumple a sheet of paper", 0},
    {"Clean a window", "wipe it with a damp cloth", "wipe it with mud", 0},
    {"Cool a hot drink", "add ice", "add boiling water", 0},
    {"Light a dark room", "close the curtains", "turn on a lamp", 1},
    {"Sharpen a pencil", "use a sharpener", "use a spoon", 0},
};

static void write_piqa(void) {
    lines hf[2] = {0}, bi[2] = {0};
    for (int i = 0; i < N_ALL; i++) {
        const int s = i >= N_TEST;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "goal", PIQA[i].goal);
        cJSON_AddStringToObject(o, "sol1", PIQA[i].sol1);
        cJSON_AddStringToObject(o, "sol2", PIQA[i].sol2);
        cJSON_AddNumberToObject(o, "label", PIQA[i].label);
        add_line(&hf[s], o);
        char query[256];
        snprintf(query, sizeof query, "Question: %s\nAnswer:", PIQA[i].goal);
        const char *c[2] = {PIQA[i].sol1, PIQA[i].sol2};
        add_line(&bi[s], builtin_item(query, strs(c, 2), PIQA[i].label));
    }
    // lm-eval's piqa.yaml evaluates the validation split.
    flush_lines(&hf[0], "piqa/validation.jsonl"), flush_lines(&hf[1], "piqa/train.jsonl");
    flush_lines(&bi[0], "builtin/piqa_test.jsonl"), flush_lines(&bi[1], "builtin/piqa_train.jsonl");
}

static const struct { const char *stem, *c[4]; const char *key; int gold; } OBQA[N_ALL] = {
    {"The sun is responsible for", {"puppies learning new tricks", "children growing up", "flowers wilting in a vase", "plants sprouting"}, "D", 3},
    {"When standing miles away from Mount Rushmore", {"the mountains seem very close", "the mountains are boring", "the mountains look small", "the mountains seem taller"}, " C", 2},
    {"Which would be used to measure rainfall?", {"a rain gauge", "a scale", "a compass", "a barometer"}, "A", 0},
    {"Frogs are", {"reptiles", "amphibians", "insects", "birds"}, "B", 1},
    {"A magnet attracts", {"wood", "plastic", "iron", "glass"}, "C", 2},
    {"Seeds are spread by", {"rocks", "wind", "stones", "metal"}, "B", 1},
    {"Ice melts when", {"it is heated", "it is frozen", "it is dark", "it is quiet"}, "A", 0},
    {"An example of a conductor is", {"rubber", "copper", "wood", "cloth"}, "B", 1},
    {"Bats navigate with", {"echolocation", "magnets", "smell only", "maps"}, "A", 0},
};

static void write_obqa(void) {
    lines hf[2] = {0}, bi[2] = {0};
    static const char *const LABELS[4] = {"A", "B", "C", "D"};
    for (int i = 0; i < N_ALL; i++) {
        const int s = i >= N_TEST;
        cJSON *o = cJSON_CreateObject();
        char id[16];
        snprintf(id, sizeof id, "7-%d", 100 + i);
        cJSON_AddStringToObject(o, "id", id);
        cJSON_AddStringToObject(o, "question_stem", OBQA[i].stem);
        cJSON *ch = cJSON_AddObjectToObject(o, "choices");
        cJSON_AddItemToObject(ch, "text", strs(OBQA[i].c, 4));
        cJSON_AddItemToObject(ch, "label", strs(LABELS, 4));
        cJSON_AddStringToObject(o, "answerKey", OBQA[i].key);
        add_line(&hf[s], o);
        add_line(&bi[s], builtin_item(OBQA[i].stem, strs(OBQA[i].c, 4), OBQA[i].gold));
    }
    flush_lines(&hf[0], "openbookqa/main/test.jsonl"), flush_lines(&hf[1], "openbookqa/main/train.jsonl");
    flush_lines(&bi[0], "builtin/obqa_test.jsonl"), flush_lines(&bi[1], "builtin/obqa_train.jsonl");
}

static const struct { const char *q, *p; int label; } BOOLQ[N_ALL] = {
    {"is the sky blue", "The sky looks blue by day because air scatters blue light.", 1},
    {"do fish fly", "Fish swim in water; a few glide briefly above it.", 0},
    {"is ice cold", "Ice is frozen water, colder than 0 degrees.", 1},
    {"can penguins fly", "Penguins are birds that swim but cannot fly.", 0},
    {"is the earth round", "The Earth is an oblate spheroid.", 1},
    {"is a tomato a vegetable", "Botanically, a tomato is a fruit.", 0},
    {"is water wet", "Water makes things wet.", 1},
    {"is the moon a star", "The Moon is a natural satellite.", 0},
    {"do cats purr", "Cats purr when content.", 1},
};

static void write_boolq(void) {
    lines hf[2] = {0}, bi[2] = {0};
    static const char *const NY[2] = {"no", "yes"};
    for (int i = 0; i < N_ALL; i++) {
        const int s = i >= N_TEST;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "question", BOOLQ[i].q);
        cJSON_AddStringToObject(o, "passage", BOOLQ[i].p);
        cJSON_AddNumberToObject(o, "idx", i);
        cJSON_AddNumberToObject(o, "label", BOOLQ[i].label);
        add_line(&hf[s], o);
        char query[512];
        snprintf(query, sizeof query, "%s\nQuestion: %s?\nAnswer:", BOOLQ[i].p, BOOLQ[i].q);
        add_line(&bi[s], builtin_item(query, strs(NY, 2), BOOLQ[i].label));
    }
    flush_lines(&hf[0], "super_glue/boolq/validation.jsonl"), flush_lines(&hf[1], "super_glue/boolq/train.jsonl");
    flush_lines(&bi[0], "builtin/boolq_test.jsonl"), flush_lines(&bi[1], "builtin/boolq_train.jsonl");
}

static const struct { const char *s, *o1, *o2, *answer; } WINO[N_ALL] = {
    {"Sarah was a much better surgeon than Maria so _ always got the harder cases.", "Sarah", "Maria", "1"},
    {"Sarah was a much better surgeon than Maria so _ always got the easier cases.", "Sarah", "Maria", "2"},
    {"The trophy didn't fit into the suitcase because _ was too large.", "the trophy", "the suitcase", "1"},
    {"The trophy didn't fit into the suitcase because _ was too small.  ", "the trophy", "the suitcase", "2"},
    {"Ian volunteered to eat Dennis's menudo after already having a bowl because _ despised eating intestine.", "Ian", "Dennis", "2"},
    {"He never comes to my home, but I always go to his house because the _ is smaller.", "home", "house", "1"},
    {"Kyle doesn't wear leg warmers to bed, while Logan almost always does. _ is more likely to live in a colder climate.", "Kyle", "Logan", "2"},
    {"The cat caught the mouse because _ was fast.", "the cat", "the mouse", "1"},
    {"Anna gave Beth a gift because _ was kind.", "Anna", "Beth", "1"},
};

static void write_winogrande(void) {
    lines hf[2] = {0}, bi[2] = {0};
    for (int i = 0; i < N_ALL; i++) {
        const int s = i >= N_TEST;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "sentence", WINO[i].s);
        cJSON_AddStringToObject(o, "option1", WINO[i].o1);
        cJSON_AddStringToObject(o, "option2", WINO[i].o2);
        cJSON_AddStringToObject(o, "answer", WINO[i].answer);
        add_line(&hf[s], o);
        // The built-in layout: the sentence up to the blank with each option,
        // the rest after it (spaces stripped), the gold index.
        const char *blank = strchr(WINO[i].s, '_');
        char ctx[2][256], cont[256];
        snprintf(ctx[0], sizeof ctx[0], "%.*s%s", (int)(blank - WINO[i].s), WINO[i].s, WINO[i].o1);
        snprintf(ctx[1], sizeof ctx[1], "%.*s%s", (int)(blank - WINO[i].s), WINO[i].s, WINO[i].o2);
        const char *a = blank + 1;
        while (*a == ' ') a++;
        size_t n = strlen(a);
        while (n && a[n - 1] == ' ') n--;
        snprintf(cont, sizeof cont, "%.*s", (int)n, a);
        cJSON *b = cJSON_CreateObject();
        const char *c[2] = {ctx[0], ctx[1]};
        cJSON_AddItemToObject(b, "context_options", strs(c, 2));
        cJSON_AddStringToObject(b, "continuation", cont);
        cJSON_AddNumberToObject(b, "gold", WINO[i].answer[0] - '1');
        add_line(&bi[s], b);
    }
    flush_lines(&hf[0], "winogrande/winogrande_xl/validation.jsonl"), flush_lines(&hf[1], "winogrande/winogrande_xl/train.jsonl");
    flush_lines(&bi[0], "winogrande/winogrande_dev.jsonl"), flush_lines(&bi[1], "winogrande/winogrande_train.jsonl");
}

// ---- runs ----

typedef struct run_out { cJSON *results, *samples; } run_out;

static run_out run(const char *task_file, int32_t shots) {
    eval_options o = eval_options_default();
    o.tasks = task_file;
    o.data_dir = g_data;
    o.tasks_dir = "/nonexistent";
    o.shots = shots;
    o.progress = false;
    char samples[600];
    snprintf(samples, sizeof samples, "%s/samples.jsonl", g_dir);
    o.log_samples = samples;
    run_out r = {0};
    if (eval_run(g_model, g_tok, &o, &r.results)) fail_msg("%s: %s", task_file, as_last_error());
    char *text;
    size_t len;
    assert_int_equal(as_read_file(samples, &text, &len), 0);
    r.samples = cJSON_CreateArray();
    for (char *p = text, *nl; (nl = strchr(p, '\n')); p = nl + 1) {
        cJSON *line = cJSON_ParseWithLength(p, (size_t)(nl - p));
        assert_non_null(line);
        cJSON_AddItemToArray(r.samples, line);
    }
    free(text);
    return r;
}

static const cJSON *field(const cJSON *o, const char *a, const char *b) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(o, a), b);
    if (!x) fail_msg("no %s / %s", a, b);
    return x;
}

// Everything scored equal, item by item; returns the number of items.
static int compare(const char *what, const run_out *lm, const char *lm_task, const run_out *bi, const char *bi_task, bool norm) {
    const cJSON *rl = field(lm->results, "results", lm_task), *rb = field(bi->results, "results", bi_task);
    const int n = cJSON_GetArraySize(lm->samples);
    if (n != N_TEST || cJSON_GetArraySize(bi->samples) != n) fail_msg("%s: %d and %d items", what, n, cJSON_GetArraySize(bi->samples));
    for (int i = 0; i < n; i++) {
        const cJSON *a = cJSON_GetArrayItem(lm->samples, i), *b = cJSON_GetArrayItem(bi->samples, i);
        // The requests: each choice's context and continuation, the same text.
        char *ja = cJSON_PrintUnformatted(cJSON_GetObjectItem(a, "arguments")), *jb = cJSON_PrintUnformatted(cJSON_GetObjectItem(b, "arguments"));
        if (strcmp(ja, jb)) fail_msg("%s: item %d: requests differ:\n  lm-eval file: %s\n  built-in:     %s", what, i, ja, jb);
        free(ja), free(jb);
        const cJSON *la = cJSON_GetObjectItem(a, "ll"), *lb = cJSON_GetObjectItem(b, "ll");
        assert_int_equal(cJSON_GetArraySize(la), cJSON_GetArraySize(lb));
        for (int c = 0; c < cJSON_GetArraySize(la); c++)
            if (cJSON_GetArrayItem(la, c)->valuedouble != cJSON_GetArrayItem(lb, c)->valuedouble)
                fail_msg("%s: item %d choice %d: ll %.17g vs %.17g", what, i, c, cJSON_GetArrayItem(la, c)->valuedouble,
                         cJSON_GetArrayItem(lb, c)->valuedouble);
        assert_true(cJSON_GetObjectItem(a, "acc")->valuedouble == cJSON_GetObjectItem(b, "acc")->valuedouble);
        if (norm) assert_true(cJSON_GetObjectItem(a, "acc_norm")->valuedouble == cJSON_GetObjectItem(b, "acc_norm")->valuedouble);
        assert_true(cJSON_Compare(cJSON_GetObjectItem(a, "target"), cJSON_GetObjectItem(b, "target"), true));
    }
    const cJSON *acc_a = cJSON_GetObjectItem(rl, "acc,none"), *acc_b = cJSON_GetObjectItem(rb, "acc,none");
    assert_non_null(acc_a), assert_non_null(acc_b);
    assert_true(acc_a->valuedouble == acc_b->valuedouble);
    if (norm) assert_true(cJSON_GetObjectItem(rl, "acc_norm,none")->valuedouble == cJSON_GetObjectItem(rb, "acc_norm,none")->valuedouble);
    if (getenv("AS_TEST_VERBOSE")) fprintf(stderr, "%s: acc %.4f%s\n", what, acc_a->valuedouble, norm ? " (acc_norm too)" : "");
    return n;
}

static void free_run(run_out *r) { cJSON_Delete(r->results), cJSON_Delete(r->samples); }

static char *path_in(const char *dir, const char *file) {
    static char p[8][1024];
    static int k;
    k = (k + 1) % 8;
    snprintf(p[k], sizeof p[k], "%s/%s", dir, file);
    return p[k];
}

// A built-in task file with `extra` lines appended (the few-shot split).
static char *builtin_copy(const char *name, const char *extra) {
    char *text;
    size_t len;
    assert_int_equal(as_read_file(path_in(AS_TASKS_DIR, name), &text, &len), 0);
    char rel[128];
    snprintf(rel, sizeof rel, "bi_%s", name);
    as_sbuf b = {0};
    as_sb_printf(&b, "%s%s", text, extra);
    write_file(g_dir, rel, b.s);
    free(text), free(b.s);
    return path_in(g_dir, rel);
}

// A task file in the built-in style over {query, choices, gold}.
static char *builtin_style(const char *task, const char *data, bool norm) {
    char rel[128], y[1024];
    snprintf(rel, sizeof rel, "bi_%s.yaml", task);
    snprintf(y, sizeof y, "task: %s_builtin\ndata: builtin/%s_test.jsonl\nfewshot_data: builtin/%s_train.jsonl\n"
                          "doc_to_text: \"{{query}}\"\nchoices: [\"{{choices}}\"]\ngold: \"{{gold}}\"\nmetrics: [acc%s]\n",
             task, data, data, norm ? ", acc_norm" : "");
    write_file(g_dir, rel, y);
    return path_in(g_dir, rel);
}

static void test_fixtures_score_as_builtin_tasks(void **st) {
    (void)st;
    snprintf(g_data, sizeof g_data, "%s/data", g_dir);
    write_arc(), write_piqa(), write_obqa(), write_boolq(), write_winogrande();
    static const struct { const char *fixture, *task; bool norm; } T[] = {
        {"arc_easy.yaml", "arc_easy", true}, {"piqa.yaml", "piqa", true}, {"openbookqa.yaml", "openbookqa", true},
        {"boolq.yaml", "boolq", false}, {"winogrande.yaml", "winogrande", false},
    };
    char *bi[5] = {
        as_strdup(builtin_copy("arc_easy.yaml", "fewshot_data: arc/arc_easy_train.jsonl\n")),
        as_strdup(builtin_style("piqa", "piqa", true)),
        as_strdup(builtin_style("openbookqa", "obqa", true)),
        as_strdup(builtin_style("boolq", "boolq", false)),
        as_strdup(builtin_copy("winogrande.yaml", "fewshot_data: winogrande/winogrande_train.jsonl\n")),
    };
    for (size_t i = 0; i < AS_ARRAY_LEN(T); i++)
        for (int shots = 0; shots <= 2; shots += 2) {
            char what[128], bi_task[64];
            snprintf(what, sizeof what, "%s, %d shots", T[i].fixture, shots);
            snprintf(bi_task, sizeof bi_task, "%s%s", T[i].task, i == 0 || i == 4 ? "" : "_builtin");
            run_out a = run(path_in(AS_LM_EVAL_FIXTURES, T[i].fixture), shots), b = run(bi[i], shots);
            compare(what, &a, T[i].task, &b, bi_task, T[i].norm);
            // The lm-eval file's configs state the split files it read.
            const cJSON *cfg = field(a.results, "configs", T[i].task);
            assert_non_null(strstr(cJSON_GetObjectItem(cfg, "data")->valuestring, g_data));
            if (shots) assert_non_null(strstr(cJSON_GetObjectItem(cfg, "fewshot_split")->valuestring, "train.jsonl"));
            if (i == 0) assert_string_equal(cJSON_GetObjectItem(cfg, "doc_to_choice")->valuestring, "{{choices.text}}");
            if (i == 4)
                assert_string_equal(cJSON_GetObjectItem(cfg, "doc_to_text")->valuestring,
                                    "!function preprocess_winogrande.doc_to_text (alphaspin's built-in equivalent)");
            free_run(&a), free_run(&b);
        }
    for (int i = 0; i < 5; i++) free(bi[i]);
}

// Shots asked of an lm-eval file whose few-shot split is not there: one line
// naming the files looked for.
static void test_missing_fewshot_split(void **st) {
    (void)st;
    char dir[300];
    snprintf(dir, sizeof dir, "%s/only_test", g_dir);
    snprintf(g_data, sizeof g_data, "%s", dir);
    lines l = {{0}};
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "goal", "g"), cJSON_AddStringToObject(o, "sol1", "a"), cJSON_AddStringToObject(o, "sol2", "b");
    cJSON_AddNumberToObject(o, "label", 0);
    add_line(&l, o);
    flush_lines(&l, "piqa/validation.jsonl");
    eval_options opt = eval_options_default();
    opt.tasks = path_in(AS_LM_EVAL_FIXTURES, "piqa.yaml");
    opt.data_dir = dir;
    opt.shots = 1;
    opt.progress = false;
    cJSON *r = NULL;
    assert_int_equal(eval_run(g_model, g_tok, &opt, &r), -1);
    const char *e = as_last_error();
    if (!strstr(e, "piqa.yaml: few-shot split 'train': no local file (looked for piqa/train.jsonl, piqa/train.json or piqa/train.csv"))
        fail_msg("error: %s", e);
    assert_null(strchr(e, '\n'));
    opt.shots = 0; // no shots: no few-shot split needed
    if (eval_run(g_model, g_tok, &opt, &r)) fail_msg("%s", as_last_error());
    cJSON_Delete(r);
}

static int teardown_all(void **st) {
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    int rc = teardown(st);
    return system(cmd) == 0 ? rc : -1;
}

int main(void) {
    (void)loglik_alone;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixtures_score_as_builtin_tasks),
        cmocka_unit_test(test_missing_fewshot_split),
    };
    return cmocka_run_group_tests(tests, setup, teardown_all);
}
