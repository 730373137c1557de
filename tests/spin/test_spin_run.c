// The self-play loop on a tiny random llama written by the test:
//  - cached references (scored once, in other batches) give the same loss and
//    gradients as references computed on the fly inside the training batch;
//  - a run writes the run folder of docs/RUN_FOLDER.md, with the documented
//    pairs per iterate (sample and concat mixing, tau = 2);
//  - killed (SIGKILL) after any phase and rerun, the run ends with iterates,
//    pairs and metrics byte-identical to an uninterrupted run.
#include "test_common.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "generate/tiny_llama.h"
#include "spin/config.h"
#include "spin/run.h"
#include "tokenizer/chat.h"
#include "train/train.h"
#include "util/common.h"

static char dir[256], model_path[512], data_path[512];

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int setup(void **state) {
    (void)state;
    const char *t = as_test_tmpdir();
    assert_non_null(t);
    snprintf(dir, sizeof dir, "%s", t);
    snprintf(model_path, sizeof model_path, "%s/tiny.gguf", dir);
    snprintf(data_path, sizeof data_path, "%s/data.jsonl", dir);
    tiny_llama_cfg tc = tiny_llama_default();
    tc.n_ctx = 512;
    if (tiny_llama_write(model_path, &tc, NULL)) fail_msg("%s", as_last_error());
    // 14 examples in the three layouts, one multi-turn conversation.
    char text[8192] = "";
    for (int i = 0; i < 12; i++)
        snprintf(text + strlen(text), sizeof text - strlen(text), "{\"question\": \"What is %d+%d?\", \"answer\": \"It is %d.\"}\n", i, i + 1, 2 * i + 1);
    strcat(text, "{\"prompt\": \"Say hello\", \"response\": \"Hello the king\"}\n");
    strcat(text, "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": \"Hello\"},"
                 " {\"role\": \"user\", \"content\": \"And?\"}, {\"role\": \"assistant\", \"content\": \"and the end\"}]}\n");
    write_file(data_path, text);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void tiny_config(spin_config *c) {
    spin_config_default(c);
    const char *sets[] = {"iterations=3", "prompts=5", "alpha=0.1", "tau=2", "lora.rank=2", "lora.dropout=0.1", "train.epochs=2",
                          "train.batch_size=2", "train.grad_accum=2", "train.max_answer_len=16", "generation.max_new_tokens=12",
                          "generation.batch=3", "eval.heldout=3", "threads=1", "optimizer.lr=0.01", "model.chat_template=chatml"};
    for (size_t i = 0; i < AS_ARRAY_LEN(sets); i++)
        if (spin_config_set(c, sets[i])) fail_msg("%s", as_last_error());
    free(c->model_path), free(c->train_path);
    c->model_path = as_strdup(model_path);
    c->train_path = as_strdup(data_path);
}

static void run_or_fail(const spin_config *c, const char *out) {
    spin_run_options o = {.out_dir = out, .quiet = true};
    if (spin_run(c, &o)) {
        fprintf(stderr, "spin_run %s: %s\n", out, as_last_error());
        fail();
    }
}

static char *slurp(const char *path, size_t *n) {
    char *s;
    if (as_read_file(path, &s, n)) fail_msg("%s", as_last_error());
    return s;
}

static bool exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static int64_t count_lines(const char *path, int32_t iterate, int64_t *with_iterate) {
    size_t n;
    char *s = slurp(path, &n);
    int64_t lines = 0;
    *with_iterate = 0;
    for (char *p = s, *nl; (nl = strchr(p, '\n')); p = nl + 1) {
        lines++;
        cJSON *o = cJSON_ParseWithLength(p, (size_t)(nl - p));
        assert_non_null(o);
        const cJSON *it = cJSON_GetObjectItem(o, "iterate");
        if (cJSON_IsNumber(it) && it->valueint == iterate) (*with_iterate)++;
        cJSON_Delete(o);
    }
    free(s);
    return lines;
}

// ---- the folder and the counts ----

static void test_run_folder(void **state) {
    (void)state;
    spin_config c;
    tiny_config(&c);
    char run[512], path[700];
    snprintf(run, sizeof run, "%s/run_a", dir);
    run_or_fail(&c, run);
    snprintf(path, sizeof path, "%s/config.yaml", run);
    assert_true(exists(path));
    for (int k = 0; k <= 3; k++) {
        snprintf(path, sizeof path, "%s/iter_%d/summary.json", run, k);
        size_t n;
        char *s = slurp(path, &n);
        cJSON *o = cJSON_Parse(s);
        assert_non_null(o);
        assert_string_equal(cJSON_GetObjectItem(o, "variant")->valuestring, "run_a");
        assert_int_equal(cJSON_GetObjectItem(o, "iteration")->valueint, k);
        const cJSON *h = cJSON_GetObjectItem(o, "heldout");
        assert_true(cJSON_IsNumber(cJSON_GetObjectItem(h, "nll_per_token")));
        assert_true(cJSON_IsNumber(cJSON_GetObjectItem(h, "kl_to_base")));
        assert_true(cJSON_IsNumber(cJSON_GetObjectItem(h, "answer_len_mean")));
        assert_true(cJSON_IsNumber(cJSON_GetObjectItem(h, "task_accuracy"))); // the answers "It is n." state numbers
        if (k == 0) assert_true(cJSON_GetObjectItem(h, "kl_to_base")->valuedouble == 0.0);
        else assert_true(fabs(cJSON_GetObjectItem(h, "kl_to_base")->valuedouble) > 0.0);
        const cJSON *t = cJSON_GetObjectItem(o, "timing_s");
        assert_true(cJSON_IsNumber(cJSON_GetObjectItem(t, "total")));
        if (k > 0) {
            const cJSON *tr = cJSON_GetObjectItem(o, "train");
            assert_true(cJSON_IsNumber(cJSON_GetObjectItem(tr, "rewards/margins")));
            assert_true(cJSON_IsNumber(cJSON_GetObjectItem(tr, "loss")));
            snprintf(path, sizeof path, "%s/iter_%d/adapter/adapter_model.safetensors", run, k);
            assert_true(exists(path));
            snprintf(path, sizeof path, "%s/iter_%d/train_state.safetensors", run, k);
            assert_false(exists(path)); // removed once the iteration is complete
            // 5 pairs -> 2 steps per epoch (4 pairs per step), 2 epochs: 4 metric lines.
            int64_t dummy;
            snprintf(path, sizeof path, "%s/iter_%d/metrics.jsonl", run, k);
            assert_int_equal(count_lines(path, -1, &dummy), 4);
            snprintf(path, sizeof path, "%s/iter_%d/pairs.jsonl", run, k);
            assert_int_equal(count_lines(path, -1, &dummy), 5);
        }
        cJSON_Delete(o);
        free(s);
    }
    // Iteration 1: pi_t is pi_0, scored once for both references.
    {
        size_t n1;
        snprintf(path, sizeof path, "%s/iter_1/pairs_trl.jsonl", run);
        char *s1 = slurp(path, &n1);
        cJSON *o1 = cJSON_ParseWithLength(s1, strcspn(s1, "\n"));
        assert_true(cJSON_GetObjectItem(o1, "ref_t_rejected_logps")->valuedouble == cJSON_GetObjectItem(o1, "ref_0_rejected_logps")->valuedouble);
        cJSON_Delete(o1);
        free(s1);
    }
    // sample, tau = 2: iteration 1 (t = 0) all from pi_0; iteration 3 (t = 2) window {1, 2}: 2 and 3 pairs.
    int64_t w;
    snprintf(path, sizeof path, "%s/iter_1/pairs_trl.jsonl", run);
    count_lines(path, 0, &w);
    assert_int_equal(w, 5);
    snprintf(path, sizeof path, "%s/iter_3/pairs_trl.jsonl", run);
    count_lines(path, 1, &w);
    assert_int_equal(w, 2);
    count_lines(path, 2, &w);
    assert_int_equal(w, 3);
    count_lines(path, 0, &w);
    assert_int_equal(w, 0);
    // alpha = 0.1: both references are cached, and the TRL reference column is their geometric mixture.
    size_t n;
    char *s = slurp(path, &n);
    cJSON *o = cJSON_ParseWithLength(s, strcspn(s, "\n"));
    const double rt = cJSON_GetObjectItem(o, "ref_t_chosen_logps")->valuedouble, r0 = cJSON_GetObjectItem(o, "ref_0_chosen_logps")->valuedouble;
    assert_true(fabs(cJSON_GetObjectItem(o, "reference_chosen_logps")->valuedouble - (0.9 * rt + 0.1 * r0)) < 1e-4);
    assert_true(rt != r0); // pi_2 is not pi_0
    cJSON_Delete(o);
    free(s);
    // The same configuration again: a complete run is left as it is.
    run_or_fail(&c, run);
    // Another configuration in the same folder is refused.
    spin_config_set(&c, "alpha=0.2");
    spin_run_options ro = {.out_dir = run, .quiet = true};
    assert_int_equal(spin_run(&c, &ro), -1);
    assert_non_null(strstr(as_last_error(), "another configuration"));
    spin_config_free(&c);
}

// The phase hook (spin_run_options.on_phase, the resume tests' kill switch) sees every
// phase of every iteration in the order of docs/RUN_FOLDER.md, after its files exist.
typedef struct phase_log {
    char text[1024];
    const char *run;
} phase_log;

static void record_phase(void *user, int32_t k, const char *phase) {
    phase_log *l = user;
    snprintf(l->text + strlen(l->text), sizeof l->text - strlen(l->text), "%s%d:%s", l->text[0] ? " " : "", k, phase);
    static const struct { const char *phase, *file; } written[] = {
        {"generate", ""}, {"references", "pairs_trl.jsonl"}, {"epoch", "train_state.safetensors"}, {"train", "metrics.jsonl"},
        {"checkpoint", "adapter/adapter_model.safetensors"}, {"evaluate", "adapter/adapter_model.safetensors"}, {"summary", "summary.json"}};
    for (size_t i = 0; i < AS_ARRAY_LEN(written); i++) {
        if (strncmp(phase, written[i].phase, strlen(written[i].phase)) != 0) continue;
        char path[700];
        snprintf(path, sizeof path, "%s/iter_%d/%s", l->run, k, written[i].file);
        if (access(path, F_OK) != 0) fail_msg("after %d:%s, %s is missing", k, phase, path);
    }
}

static void test_phase_hook(void **state) {
    (void)state;
    spin_config c;
    tiny_config(&c);
    spin_config_set(&c, "iterations=2");
    char run[512];
    snprintf(run, sizeof run, "%s/run_phases", dir);
    phase_log l = {.run = run};
    spin_run_options o = {.out_dir = run, .quiet = true, .on_phase = record_phase, .user = &l};
    if (spin_run(&c, &o)) fail_msg("%s", as_last_error());
    assert_string_equal(l.text, "1:generate 1:references 1:epoch1 1:epoch2 1:train 1:checkpoint 1:evaluate 1:summary "
                                "2:generate 2:references 2:epoch1 2:epoch2 2:train 2:checkpoint 2:evaluate 2:summary");
    // A complete run has no phases left to run.
    l.text[0] = 0;
    if (spin_run(&c, &o)) fail_msg("%s", as_last_error());
    assert_string_equal(l.text, "");
    spin_config_free(&c);
}

static void test_concat_alpha0(void **state) {
    (void)state;
    spin_config c;
    tiny_config(&c);
    spin_config_set(&c, "mixing=concat");
    spin_config_set(&c, "alpha=0");
    spin_config_set(&c, "iterations=2");
    spin_config_set(&c, "train.epochs=1");
    char run[512], path[700];
    snprintf(run, sizeof run, "%s/run_concat", dir);
    run_or_fail(&c, run);
    // Iteration 2 (t = 1, tau = 2): the 5 pairs pi_0 made in iteration 1 plus 5 new ones from pi_1.
    int64_t w;
    snprintf(path, sizeof path, "%s/iter_2/pairs_trl.jsonl", run);
    assert_int_equal(count_lines(path, 0, &w), 10);
    assert_int_equal(w, 5);
    count_lines(path, 1, &w);
    assert_int_equal(w, 5);
    // alpha = 0: pi_0 is never run for the references (null in the file).
    size_t n;
    char *s = slurp(path, &n);
    assert_non_null(strstr(s, "\"ref_0_chosen_logps\":null"));
    assert_null(strstr(s, "\"ref_t_chosen_logps\":null"));
    free(s);
    spin_config_free(&c);
}

// ---- resume ----

// The killed runs are separate processes of the command line (a forked copy of
// this process would inherit OpenMP's and OpenBLAS's thread pools half-alive).
static void write_tiny_yaml(const char *path) {
    char y[2048];
    snprintf(y, sizeof y,
             "model: {path: \"%s\", chat_template: chatml}\n"
             "data: {train: \"%s\"}\n"
             "iterations: 3\nprompts: 5\nalpha: 0.1\ntau: 2\n"
             "lora: {rank: 2, dropout: 0.1}\n"
             "train: {epochs: 2, batch_size: 2, grad_accum: 2, max_answer_len: 16}\n"
             "generation: {max_new_tokens: 12, batch: 3}\n"
             "eval: {heldout: 3}\nthreads: 1\noptimizer: {lr: 0.01}\n",
             model_path, data_path);
    write_file(path, y);
}

static int run_cli(const char *yaml, const char *run, const char *abort_after) {
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (abort_after) setenv("ALPHASPIN_TEST_ABORT_AFTER", abort_after, 1);
        else unsetenv("ALPHASPIN_TEST_ABORT_AFTER");
        execl(AS_BINARY_DIR "/alphaspin", "alphaspin", "run", "--config", yaml, "--out", run, "--quiet", (char *)NULL);
        _exit(127);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    return st;
}

static void run_killed_after(const char *yaml, const char *run, const char *phase) {
    int st = run_cli(yaml, run, phase);
    if (!(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL)) fail_msg("%s: the run was not killed at this phase (status %d)", phase, st);
}

static void compare_files(const char *a_run, const char *b_run, const char *rel) {
    char pa[700], pb[700];
    snprintf(pa, sizeof pa, "%s/%s", a_run, rel);
    snprintf(pb, sizeof pb, "%s/%s", b_run, rel);
    size_t na, nb;
    char *a = slurp(pa, &na), *b = slurp(pb, &nb);
    if (na != nb || memcmp(a, b, na) != 0) fail_msg("%s differs after resuming", rel);
    free(a), free(b);
}

static void test_resume_bitwise(void **state) {
    (void)state;
    spin_config c;
    tiny_config(&c);
    char a[512], b[512];
    snprintf(a, sizeof a, "%s/run_a", dir); // written by test_run_folder
    snprintf(b, sizeof b, "%s/run_a_resumed", dir);
    // The run is killed repeatedly, each time after a later phase; the reruns resume.
    const char *phases[] = {"1:generate", "1:references", "1:epoch1", "1:epoch2", "1:train", "2:checkpoint", "2:evaluate",
                            "3:references", "3:epoch1", "3:summary"};
    char yaml[600];
    snprintf(yaml, sizeof yaml, "%s/tiny.yaml", dir);
    write_tiny_yaml(yaml);
    for (size_t i = 0; i < AS_ARRAY_LEN(phases); i++) run_killed_after(yaml, b, phases[i]);
    int st = run_cli(yaml, b, NULL);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    // Names differ (the variant defaults to the folder's basename); compare the bytes that must agree.
    for (int k = 1; k <= 3; k++) {
        char rel[128];
        snprintf(rel, sizeof rel, "iter_%d/adapter/adapter_model.safetensors", k);
        compare_files(a, b, rel);
        snprintf(rel, sizeof rel, "iter_%d/pairs_trl.jsonl", k);
        compare_files(a, b, rel);
        snprintf(rel, sizeof rel, "iter_%d/pairs.jsonl", k);
        compare_files(a, b, rel);
        snprintf(rel, sizeof rel, "iter_%d/metrics.jsonl", k);
        compare_files(a, b, rel);
    }
    // kill -9 at arbitrary moments (not only between phases): a process is killed after
    // a growing delay until one run completes; the result is the same again.
    char r[512];
    snprintf(r, sizeof r, "%s/run_a_killed", dir);
    int runs = 0;
    for (useconds_t delay = 30000;; delay += delay / 2 + 20000) {
        fflush(NULL);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            unsetenv("ALPHASPIN_TEST_ABORT_AFTER");
            execl(AS_BINARY_DIR "/alphaspin", "alphaspin", "run", "--config", yaml, "--out", r, "--quiet", (char *)NULL);
            _exit(127);
        }
        usleep(delay);
        kill(pid, SIGKILL);
        int st2;
        assert_int_equal(waitpid(pid, &st2, 0), pid);
        runs++;
        if (WIFEXITED(st2)) {
            assert_int_equal(WEXITSTATUS(st2), 0);
            break;
        }
    }
    fprintf(stderr, "  (random kills: %d processes)\n", runs);
    for (int k = 1; k <= 3; k++) {
        char rel[128];
        snprintf(rel, sizeof rel, "iter_%d/adapter/adapter_model.safetensors", k);
        compare_files(a, r, rel);
        snprintf(rel, sizeof rel, "iter_%d/pairs_trl.jsonl", k);
        compare_files(a, r, rel);
        snprintf(rel, sizeof rel, "iter_%d/metrics.jsonl", k);
        compare_files(a, r, rel);
    }
    spin_config_free(&c);
}

// ---- cached vs on-the-fly references ----

static void test_cached_references(void **state) {
    (void)state;
    model *inf;
    tokenizer *tok;
    chat_template tpl;
    train_model *m;
    if (model_load(&inf, model_path) || tokenizer_load(&tok, inf->file) || chat_template_init(&tpl, inf->file, "chatml") ||
        train_model_from_model(&m, inf))
        fail_msg("%s", as_last_error());
    train_set_threads(m, 1);
    train_lora_config lc = {.rank = 2, .alpha = 4, .dropout = 0, .targets = 0, .seed = 5};
    assert_int_equal(train_lora_attach(m, &lc), 0);
    // pi_t: adapters with random B (not the base), kept aside as the reference.
    as_rng r;
    as_rng_seed(&r, 9);
    for (int t = 0; t < TRAIN_LORA_N_TARGETS; t++)
        if (m->lora->b[t]) tiny_fill(m->lora->b[t], (size_t)m->lora->out[t] * 2 * (size_t)m->lora->n_layer, 0.05, 0, &r);
    train_lora *ref = train_lora_new(&m->cfg, &lc);
    train_lora_copy(ref, m->lora);
    spin_pairs ps = {0};
    const char *answers[][2] = {{"It is 3.", "no"}, {"Hello the king", "Hello Hello"}, {"and the end", "the"}, {"It is 7.", "It is 8."},
                                {"ok", "not ok at all"}};
    for (int i = 0; i < 5; i++) {
        chat_message q = {"user", i % 2 ? "Say hello" : "What is 1+2?"};
        spin_pairs_add(&ps, &q, 1, answers[i][0], answers[i][1], 0);
    }
    assert_int_equal(spin_pairs_encode(&ps, tok, &tpl, 16), 0);
    const double alphas[] = {0.0, 0.1, 1.0};
    for (int mode = 0; mode < 2; mode++)
        for (int ai = 0; ai < 3; ai++) {
            const double alpha = alphas[ai];
            // Cached: scored once for all pairs, in batches of 3 sequences.
            train_lora_copy(m->lora, ref);
            assert_int_equal(spin_score_references(m, NULL, &ps, alpha, 3), 0);
            if (alpha == 0) assert_true(isnan(ps.p[0].ref_0_w) && !isnan(ps.p[0].ref_t_w));
            if (alpha == 1) assert_true(isnan(ps.p[0].ref_t_w) && !isnan(ps.p[0].ref_0_w));
            // The policy moves away from pi_t (as after some training steps).
            for (int t = 0; t < TRAIN_LORA_N_TARGETS; t++)
                if (m->lora->a[t]) m->lora->a[t][0] += 0.3f, m->lora->b[t][1] -= 0.02f;
            spin_loss_config lcf;
            spin_loss_config_default(&lcf);
            lcf.ref = (spin_ref_mode)mode;
            lcf.alpha = alpha;
            lcf.beta = 0.5;
            spin_pair *mb[2] = {&ps.p[3], &ps.p[1]};
            float *params, *grads;
            const optim_segment *segs;
            int ns;
            const size_t np = train_trainable(m, &params, &grads, &segs, &ns);
            train_zero_grad(m);
            spin_loss_metrics ma, mb_;
            assert_int_equal(spin_train_microbatch(m, &lcf, mb, 2, 1.0, &ma), 0);
            float *ga = malloc(np * sizeof *ga);
            memcpy(ga, grads, np * sizeof *ga);
            // On the fly: the references of this micro-batch alone, computed now with pi_t swapped in.
            spin_pairs fly = {0};
            for (int i = 0; i < 2; i++) {
                spin_pair *p = spin_pairs_add(&fly, mb[i]->prompt, mb[i]->n_prompt, mb[i]->chosen, mb[i]->rejected, 0);
                (void)p;
            }
            assert_int_equal(spin_pairs_encode(&fly, tok, &tpl, 16), 0);
            train_lora *cur = train_lora_new(&m->cfg, &lc);
            train_lora_copy(cur, m->lora);
            train_lora_copy(m->lora, ref);
            assert_int_equal(spin_score_references(m, NULL, &fly, alpha, 4), 0);
            train_lora_copy(m->lora, cur);
            train_lora_free(cur);
            spin_pair *fp[2] = {&fly.p[0], &fly.p[1]};
            train_zero_grad(m);
            assert_int_equal(spin_train_microbatch(m, &lcf, fp, 2, 1.0, &mb_), 0);
            // Same references to the bit, hence the same loss and gradients.
            for (int i = 0; i < 2; i++) {
                assert_memory_equal(&fly.p[i].ref_t_w, &mb[i]->ref_t_w, sizeof(float) * 4);
            }
            assert_true(ma.loss == mb_.loss && ma.rewards_margins == mb_.rewards_margins);
            assert_memory_equal(ga, grads, np * sizeof *ga);
            double gn = 0;
            for (size_t i = 0; i < np; i++) gn += (double)ga[i] * ga[i];
            assert_true(gn > 0); // a real gradient was compared
            free(ga);
            spin_pairs_free(&fly);
        }
    spin_pairs_free(&ps);
    train_lora_free(ref);
    train_model_free(m);
    chat_template_free(&tpl);
    tokenizer_free(tok);
    model_free(inf);
}

// Full fine-tuning: each iterate is an F32 model.gguf, generated from by loading it; pi_0 is a
// second, frozen copy of the base.
static void test_full_finetuning(void **state) {
    (void)state;
    spin_config c;
    tiny_config(&c);
    spin_config_set(&c, "lora.enabled=false");
    spin_config_set(&c, "iterations=2");
    spin_config_set(&c, "train.epochs=1");
    spin_config_set(&c, "optimizer.lr=0.001");
    char run[512], path[700];
    snprintf(run, sizeof run, "%s/run_full", dir);
    run_or_fail(&c, run);
    for (int k = 1; k <= 2; k++) {
        snprintf(path, sizeof path, "%s/iter_%d/model.gguf", run, k);
        assert_true(exists(path));
        snprintf(path, sizeof path, "%s/iter_%d/adapter", run, k);
        assert_false(exists(path));
    }
    // pi_1 moved away from pi_0: its references in iteration 2 differ from pi_0's.
    snprintf(path, sizeof path, "%s/iter_2/pairs_trl.jsonl", run);
    size_t n;
    char *s = slurp(path, &n);
    cJSON *o = cJSON_ParseWithLength(s, strcspn(s, "\n"));
    assert_non_null(o);
    assert_true(cJSON_GetObjectItem(o, "ref_t_chosen_logps")->valuedouble != cJSON_GetObjectItem(o, "ref_0_chosen_logps")->valuedouble);
    cJSON_Delete(o);
    free(s);
    spin_config_free(&c);
}

// Multi-turn: the last assistant turn is the answer; earlier turns are context
// (not scored) and survive the round trip through pairs_trl.jsonl.
static void test_multi_turn(void **state) {
    (void)state;
    model *inf;
    tokenizer *tok;
    chat_template tpl;
    if (model_load(&inf, model_path) || tokenizer_load(&tok, inf->file) || chat_template_init(&tpl, inf->file, "chatml"))
        fail_msg("%s", as_last_error());
    chat_message conv[3] = {{"user", "Hi"}, {"assistant", "Hello"}, {"user", "And?"}};
    spin_seq full, last;
    int32_t pl;
    assert_int_equal(spin_encode_answer(tok, &tpl, conv, 3, "and the end", 0, &full, &pl), 0);
    // Scored: "and the end" (11 one-character-or-word tokens at most) plus <|im_end|>, all after the prompt.
    for (int32_t i = 0; i < pl; i++) assert_int_equal(full.mask[i], 0);
    assert_true(full.n_scored >= 2 && full.n_scored <= 12);
    for (int32_t i = pl; i < pl + full.n_scored; i++) assert_int_equal(full.mask[i], 1);
    // Cut to 3 answer tokens.
    assert_int_equal(spin_encode_answer(tok, &tpl, conv, 3, "and the end", 3, &last, NULL), 0);
    assert_int_equal(last.n_scored, 3);
    assert_int_equal(last.len, pl + 3);
    spin_seq_free(&full), spin_seq_free(&last);
    // Round trip through both layouts.
    spin_pairs ps = {0}, back = {0};
    spin_pair *p = spin_pairs_add(&ps, conv, 3, "and the end", "what \"quoted\"\n", 2);
    p->ref_t_w = -1.25f, p->ref_t_l = -3.5f, p->ref_0_w = -2.0f, p->ref_0_l = -1e-7f;
    char a[700], b[700];
    snprintf(a, sizeof a, "%s/mt_pairs.jsonl", dir);
    snprintf(b, sizeof b, "%s/mt_pairs_trl.jsonl", dir);
    assert_int_equal(spin_pairs_write(&ps, SPIN_REF_GEOMETRIC, 0.5, a, b), 0);
    assert_int_equal(spin_pairs_read_trl(&back, b, -1), 0);
    assert_int_equal(back.n, 1);
    assert_int_equal(back.p[0].n_prompt, 3);
    assert_string_equal(back.p[0].prompt[1].content, "Hello");
    assert_string_equal(back.p[0].rejected, "what \"quoted\"\n");
    assert_int_equal(back.p[0].iterate, 2);
    assert_memory_equal(&back.p[0].ref_t_w, &p->ref_t_w, 4 * sizeof(float));
    size_t n;
    char *s = slurp(a, &n);
    assert_non_null(strstr(s, "\"real\":[{\"role\":\"user\",\"content\":\"Hi\"},{\"role\":\"assistant\",\"content\":\"Hello\"},"
                              "{\"role\":\"user\",\"content\":\"And?\"},{\"role\":\"assistant\",\"content\":\"and the end\"}]"));
    free(s);
    s = slurp(b, &n);
    assert_non_null(strstr(s, "\"reference_chosen_logps\":-1.625")); // 0.5 * -1.25 + 0.5 * -2
    free(s);
    spin_pairs_free(&ps), spin_pairs_free(&back);
    // Encodable pairs are all kept, in order, with their sequences.
    spin_pairs_add(&ps, conv, 3, "and the end", "a b", 0);
    spin_pairs_add(&ps, conv, 1, "Hello", "the", 1);
    assert_int_equal(spin_pairs_encode_or_drop(&ps, tok, &tpl, 16), 0);
    assert_int_equal(ps.n, 2);
    assert_string_equal(ps.p[1].rejected, "the");
    assert_true(ps.p[1].l.n_scored > 0 && ps.p[0].w.n_scored > 0);
    spin_pairs_free(&ps);
    chat_template_free(&tpl);
    tokenizer_free(tok);
    model_free(inf);
}

// eval.tasks: every iterate (iteration 0 included) is scored through the
// evaluation module; eval.json is written and summary.json carries the scores.
static void test_eval_hook(void **state) {
    (void)state;
    char quiz[700], task[700], run[512], path[700];
    snprintf(quiz, sizeof quiz, "%s/quiz.jsonl", dir);
    snprintf(task, sizeof task, "%s/quiz.yaml", dir);
    write_file(quiz, "{\"question\": \"1+1?\", \"options\": [\"2\", \"3\"], \"label\": 0}\n"
                     "{\"question\": \"Say hi\", \"options\": [\"Hello\", \"the\"], \"label\": 0}\n"
                     "{\"question\": \"2+2?\", \"options\": [\"5\", \"4\"], \"label\": 1}\n");
    char y[1024];
    snprintf(y, sizeof y, "task: quiz\ndata: %s\nnum_fewshot: 0\ndoc_to_text: \"Question: {{question}}\\nAnswer:\"\n"
                          "choices: [\"{{options}}\"]\ngold: \"{{label}}\"\nmetrics: [acc, acc_norm]\n", quiz);
    write_file(task, y);
    spin_config c;
    tiny_config(&c);
    spin_config_set(&c, "iterations=1");
    spin_config_set(&c, "train.epochs=1");
    char set[800];
    snprintf(set, sizeof set, "eval.tasks=%s", task);
    if (spin_config_set(&c, set)) fail_msg("%s", as_last_error());
    snprintf(run, sizeof run, "%s/run_eval", dir);
    run_or_fail(&c, run);
    for (int k = 0; k <= 1; k++) {
        snprintf(path, sizeof path, "%s/iter_%d/eval.json", run, k);
        assert_true(exists(path));
        snprintf(path, sizeof path, "%s/iter_%d/summary.json", run, k);
        size_t n;
        char *s = slurp(path, &n);
        cJSON *o = cJSON_Parse(s);
        const cJSON *q = cJSON_GetObjectItem(cJSON_GetObjectItem(o, "eval"), "quiz");
        if (!cJSON_IsNumber(cJSON_GetObjectItem(q, "acc")) || !cJSON_IsNumber(cJSON_GetObjectItem(q, "acc_stderr")))
            fail_msg("summary.json eval: %s", s);
        cJSON_Delete(o);
        free(s);
    }
    spin_config_free(&c);
}

static void test_errors(void **state) {
    (void)state;
    spin_config c;
    tiny_config(&c);
    char run[512];
    snprintf(run, sizeof run, "%s/run_bad", dir);
    spin_run_options o = {.out_dir = run, .quiet = true};
    free(c.train_path);
    c.train_path = as_strdup("/nonexistent/data.jsonl");
    assert_int_equal(spin_run(&c, &o), -1);
    assert_non_null(strstr(as_last_error(), "/nonexistent/data.jsonl"));
    spin_config_free(&c);
    tiny_config(&c);
    spin_config_set(&c, "data.layout=messages");
    snprintf(run, sizeof run, "%s/run_bad2", dir);
    o.out_dir = run;
    assert_int_equal(spin_run(&c, &o), -1);
    assert_non_null(strstr(as_last_error(), "data.layout is messages"));
    spin_config_free(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cached_references), cmocka_unit_test(test_run_folder), cmocka_unit_test(test_resume_bitwise),
        cmocka_unit_test(test_phase_hook), cmocka_unit_test(test_concat_alpha0), cmocka_unit_test(test_full_finetuning), cmocka_unit_test(test_multi_turn),
        cmocka_unit_test(test_eval_hook), cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
