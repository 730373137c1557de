// `alphaspin run` with the geometric-mixture loser samplers (sampler:
// token-geometric | sir | gflownet, src/mixture/losers.h) on a tiny random
// llama with a ChatML vocabulary: the run completes, every iteration has one
// pair per drawn prompt whose loser is attributed to pi_t, and
// iter_k/sampler.json records the sampler (SIR's ESS within [1, K]; the
// GFlowNet's training, its adapters saved in iter_k/gfn_sampler).
#include "test_common.h"

#include <cjson/cJSON.h>
#include <math.h>

#include "generate/tiny_llama.h"
#include "spin/config.h"
#include "spin/run.h"
#include "util/common.h"

static char dir[256], model_path[512], data_path[512];

static int setup(void **state) {
    (void)state;
    snprintf(dir, sizeof dir, "%s", as_test_tmpdir());
    snprintf(model_path, sizeof model_path, "%s/tiny.gguf", dir);
    snprintf(data_path, sizeof data_path, "%s/data.jsonl", dir);
    tiny_llama_cfg tc = tiny_llama_default();
    tc.n_ctx = 512;
    if (tiny_llama_write(model_path, &tc, NULL)) fail_msg("%s", as_last_error());
    FILE *f = fopen(data_path, "w");
    assert_non_null(f);
    for (int i = 0; i < 8; i++) fprintf(f, "{\"question\": \"What is %d+%d?\", \"answer\": \"It is %d.\"}\n", i, i + 1, 2 * i + 1);
    fclose(f);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static cJSON *read_json(const char *path) {
    char *text;
    if (as_read_file(path, &text, NULL)) fail_msg("%s", as_last_error());
    cJSON *o = cJSON_Parse(text);
    free(text);
    assert_non_null(o);
    return o;
}

static void run_sampler(const char *sampler) {
    spin_config c;
    spin_config_default(&c);
    char sset[64];
    snprintf(sset, sizeof sset, "sampler=%s", sampler);
    const char *sets[] = {"iterations=2", "prompts=4", "alpha=0.3", "tau=1", "lora.rank=2", "train.epochs=1", "train.batch_size=2",
                          "train.max_answer_len=16", "generation.max_new_tokens=8", "generation.batch=4", "eval.heldout=2",
                          "threads=1", "optimizer.lr=0.05", "model.chat_template=chatml", "sir.k=3", "gflownet.steps=3",
                          "gflownet.rank=2", "gflownet.samples_per_prompt=2", "gflownet.lr=0.01", sset};
    for (size_t i = 0; i < AS_ARRAY_LEN(sets); i++)
        if (spin_config_set(&c, sets[i])) fail_msg("%s", as_last_error());
    free(c.model_path), free(c.train_path);
    c.model_path = as_strdup(model_path);
    c.train_path = as_strdup(data_path);
    assert_int_equal(spin_config_check(&c), AS_OK);
    char out[600], path[700];
    snprintf(out, sizeof out, "%s/run_%s", dir, sampler);
    spin_run_options o = {.out_dir = out, .quiet = true};
    if (spin_run(&c, &o)) fail_msg("sampler %s: %s", sampler, as_last_error());
    for (int k = 1; k <= 2; k++) {
        snprintf(path, sizeof path, "%s/iter_%d/sampler.json", out, k);
        cJSON *s = read_json(path);
        assert_string_equal(cJSON_GetObjectItem(s, "sampler")->valuestring, sampler);
        assert_int_equal((int)cJSON_GetObjectItem(s, "losers")->valuedouble, 4);
        if (!strcmp(sampler, "sir")) {
            const double em = cJSON_GetObjectItem(s, "ess_mean")->valuedouble, en = cJSON_GetObjectItem(s, "ess_min")->valuedouble;
            assert_true(en >= 1 - 1e-9 && en <= em + 1e-12 && em <= 3 + 1e-9);
            if (k == 1) assert_true(fabs(em - 3) < 1e-6); // t = 0: pi_t = pi_0, every weight is 1
        }
        if (!strcmp(sampler, "gflownet")) {
            assert_true(isfinite(cJSON_GetObjectItem(s, "gfn_last_loss")->valuedouble));
            snprintf(path, sizeof path, "%s/iter_%d/gfn_sampler/adapter_config.json", out, k);
            assert_int_equal(access(path, R_OK), 0);
        }
        cJSON_Delete(s);
        // One pair per prompt, the loser attributed to pi_t (t = k - 1).
        snprintf(path, sizeof path, "%s/iter_%d/pairs.jsonl", out, k);
        char *text;
        if (as_read_file(path, &text, NULL)) fail_msg("%s", as_last_error());
        int lines = 0;
        for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"), lines++) {
            cJSON *p = cJSON_Parse(line);
            assert_non_null(p);
            assert_int_equal((int)cJSON_GetObjectItem(p, "iterate")->valuedouble, k - 1);
            cJSON_Delete(p);
        }
        free(text);
        assert_int_equal(lines, 4);
        snprintf(path, sizeof path, "%s/iter_%d/summary.json", out, k);
        assert_int_equal(access(path, R_OK), 0);
    }
    spin_config_free(&c);
}

static void test_run_token_geometric(void **state) {
    (void)state;
    run_sampler("token-geometric");
}
static void test_run_sir(void **state) {
    (void)state;
    run_sampler("sir");
}
static void test_run_gflownet(void **state) {
    (void)state;
    run_sampler("gflownet");
}

// Full fine-tuning has no adapters to tell pi_t from pi_0 over one base: refused up front.
static void test_needs_lora(void **state) {
    (void)state;
    spin_config c;
    spin_config_default(&c);
    assert_int_equal(spin_config_set(&c, "sampler=sir"), AS_OK);
    assert_int_equal(spin_config_set(&c, "lora.enabled=false"), AS_OK);
    free(c.train_path);
    c.train_path = as_strdup(data_path);
    assert_int_equal(spin_config_check(&c), AS_FAIL);
    assert_non_null(strstr(as_last_error(), "needs lora.enabled"));
    spin_config_free(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_run_token_geometric), cmocka_unit_test(test_run_sir),
                                       cmocka_unit_test(test_run_gflownet), cmocka_unit_test(test_needs_lora)};
    return cmocka_run_group_tests(tests, setup, teardown);
}
