// The run configuration: YAML values land in the right fields, errors name
// the file, line and key, --set overrides, the resolved YAML reads back to the
// same configuration, and configs/alphaspin.yaml documents every key.
#include "test_common.h"

#include <math.h>

#include "spin/config.h"
#include "util/common.h"

static int parse(spin_config *c, const char *yaml) { return spin_config_parse(c, yaml, strlen(yaml), "t.yaml"); }

static void test_values(void **state) {
    (void)state;
    spin_config c;
    spin_config_default(&c);
    const char *y = "name: exp1\n"
                    "model: {path: m.gguf}\n"
                    "data:\n  train: d.jsonl\n  layout: messages\n"
                    "iterations: 4\nprompts: 64\nalpha: 0.25\ntau: 2\nmixing: concat\nreference: arithmetic\n"
                    "loss:\n  type: ipo\n  beta: 0.5\n"
                    "lora:\n  enabled: false\n  rank: 8\n  targets: [q, v]\n"
                    "optimizer: {type: rmsprop, lr: 1e-4, schedule: cosine, warmup_ratio: 0.05}\n"
                    "train: {epochs: 1, batch_size: 2, grad_accum: 3, max_prompt_len: 100, max_answer_len: 50, precision: bf16}\n"
                    "generation: {temperature: 0.7, top_p: 0.9, top_k: 20, max_new_tokens: 40, batch: 4, precision: f32}\n"
                    "eval: {tasks: [arc_easy, gsm8k], limit: 10, shots: 0, heldout: 5, precision: bf16}\n"
                    "seed: 7\nthreads: 2\n";
    assert_int_equal(parse(&c, y), 0);
    assert_string_equal(c.name, "exp1");
    assert_string_equal(c.model_path, "m.gguf");
    assert_string_equal(c.train_path, "d.jsonl");
    assert_string_equal(c.layout, "messages");
    assert_int_equal(c.iterations, 4);
    assert_int_equal(c.prompts, 64);
    assert_true(c.loss.alpha == 0.25);
    assert_int_equal(c.tau, 2);
    assert_int_equal(c.mixing, SPIN_MIX_CONCAT);
    assert_int_equal(c.loss.ref, SPIN_REF_ARITHMETIC);
    assert_int_equal(c.loss.kind, SPIN_LOSS_IPO);
    assert_true(c.loss.beta == 0.5);
    assert_false(c.lora);
    assert_int_equal(c.lora_cfg.rank, 8);
    assert_int_equal(c.lora_cfg.targets, (1u << TRAIN_LORA_Q) | (1u << TRAIN_LORA_V));
    assert_int_equal(c.optim.kind, OPTIM_RMSPROP);
    assert_true(c.optim.lr == 1e-4f);
    assert_int_equal(c.optim.schedule, OPTIM_SCHEDULE_COSINE);
    assert_int_equal(c.grad_accum, 3);
    assert_int_equal(c.max_answer_len, 50);
    assert_int_equal(c.train_prec, TRAIN_PRECISION_BF16);
    assert_true(c.gen_top_p == 0.9f);
    assert_int_equal(c.gen_top_k, 20);
    assert_int_equal(c.gen_precision, KERNEL_PRECISION_F32);
    assert_int_equal(c.eval_precision, KERNEL_PRECISION_BF16);
    assert_int_equal(c.n_eval_tasks, 2);
    assert_string_equal(c.eval_tasks[1], "gsm8k");
    assert_int_equal(c.eval_shots, 0);
    assert_int_equal(c.heldout_size, 5);
    assert_int_equal(c.seed, 7);
    // tau: inf
    assert_int_equal(parse(&c, "tau: inf\n"), 0);
    assert_int_equal(c.tau, SPIN_TAU_INF);
    // The resolved YAML reads back to the same YAML.
    char *y1 = spin_config_to_yaml(&c);
    spin_config d;
    spin_config_default(&d);
    assert_int_equal(parse(&d, y1), 0);
    char *y2 = spin_config_to_yaml(&d);
    assert_string_equal(y1, y2);
    free(y1), free(y2);
    spin_config_free(&d);
    spin_config_free(&c);
}

static void expect_error(const char *yaml, const char *needle) {
    spin_config c;
    spin_config_default(&c);
    as_clear_error();
    if (parse(&c, yaml) == 0) fail_msg("accepted: %s", yaml);
    if (!strstr(as_last_error(), needle)) fail_msg("error '%s' lacks '%s'", as_last_error(), needle);
    spin_config_free(&c);
}

static void test_errors(void **state) {
    (void)state;
    expect_error("iterations: 3\nloss:\n  beta: 0.1\n  betta: 2\n", "t.yaml:4: loss.betta: not a configuration key");
    expect_error("alpha: 1.5\n", "t.yaml:1: alpha: 1.5 is out of range");
    expect_error("alpha: -0.1\n", "alpha");
    expect_error("tau: 0\n", "t.yaml:1: tau: 0 is out of range");
    expect_error("tau: two\n", "tau: 'two' (expected an integer >= 1 or inf)");
    expect_error("mixing: both\n", "mixing: 'both' (expected sample or concat)");
    expect_error("loss: {type: dpo}\n", "loss.type: 'dpo'");
    expect_error("loss: {beta: 0}\n", "loss.beta: 0 is out of range");
    expect_error("loss: {label_smoothing: 0.5}\n", "loss.label_smoothing");
    expect_error("lora: {targets: [q, x]}\n", "lora.targets: 'x' is not a LoRA target");
    expect_error("lora: {dropout: 1}\n", "lora.dropout");
    expect_error("iterations: 2.5\n", "iterations: '2.5' is not an integer");
    expect_error("iterations: [1, 2]\n", "iterations: expected a single value");
    expect_error("loss: 3\n", "loss: expected a mapping");
    expect_error("alpha:\n  x: 1\n", "alpha: expected a value, not a mapping");
    expect_error("alpha: 0.1\nalpha: 0.2\n", "t.yaml:2: alpha: given twice");
    expect_error("sampler: gibbs\n", "sampler: 'gibbs' (expected one of mixture");
    expect_error("optimizer: {type: adam}\n", "optimizer.type");
    expect_error("generation: {precision: f16}\n", "generation.precision");
    expect_error("train: {precision: q8}\n", "t.yaml:1: train.precision: 'q8' (expected f32 or bf16)");
    expect_error("lora: {enabled: maybe}\n", "lora.enabled: 'maybe' is not a boolean");
    expect_error("- a\n- b\n", "expected a mapping");
    expect_error("a: &x 1\nb: *x\n", "");
    expect_error("alpha: [\n", "t.yaml:");
    expect_error("seed: -1\n", "seed");
    // Stored as a float, 2.1e-74 is 0: not > 0 (found by fuzz_spin_config; the
    // resolved YAML would not have parsed again).
    expect_error("optimizer: {lr: 2.1e-74}\n", "optimizer.lr: 2.1e-74 is 0 as a 32-bit float, out of range");
    expect_error("lora: {alpha: 1e300}\n", "lora.alpha");
    expect_error("x: 1\n---\ny: 2\n", "");
}

static void test_set(void **state) {
    (void)state;
    spin_config c;
    spin_config_default(&c);
    assert_int_equal(spin_config_set(&c, "loss.beta=0.3"), 0);
    assert_true(c.loss.beta == 0.3);
    assert_int_equal(spin_config_set(&c, "tau=inf"), 0);
    assert_int_equal(spin_config_set(&c, "eval.tasks=arc_easy, hellaswag"), 0);
    assert_int_equal(c.n_eval_tasks, 2);
    assert_string_equal(c.eval_tasks[1], "hellaswag");
    assert_int_equal(spin_config_set(&c, "eval.tasks="), 0);
    assert_int_equal(c.n_eval_tasks, 0);
    assert_int_equal(spin_config_set(&c, "lora.targets=q,k,v,o,gate,up,down"), 0);
    assert_int_equal(c.lora_cfg.targets, 0); // all seven = 0
    assert_int_equal(spin_config_set(&c, "loss.bta=1"), -1);
    assert_non_null(strstr(as_last_error(), "--set loss.bta: not a configuration key"));
    assert_int_equal(spin_config_set(&c, "loss=1"), -1);
    assert_non_null(strstr(as_last_error(), "a section"));
    assert_int_equal(spin_config_set(&c, "alpha"), -1);
    assert_int_equal(spin_config_set(&c, "alpha=2"), -1);
    assert_non_null(strstr(as_last_error(), "--set alpha: 2 is out of range"));
    assert_int_equal(c.train_prec, TRAIN_PRECISION_F32);
    assert_int_equal(spin_config_set(&c, "train.precision=bf16"), 0);
    assert_int_equal(c.train_prec, TRAIN_PRECISION_BF16);
    char *y = spin_config_to_yaml(&c);
    assert_non_null(strstr(y, "\ntrain:\n  epochs: 2\n"));
    assert_non_null(strstr(y, "\n  precision: bf16\ngeneration:\n"));
    free(y);
    assert_int_equal(spin_config_set(&c, "train.precision=fp16"), -1);
    assert_non_null(strstr(as_last_error(), "--set train.precision: 'fp16' (expected f32 or bf16)"));
    spin_config_free(&c);
}

static void test_documented(void **state) {
    (void)state;
    const char *path = AS_TEST_VECTORS "/../../configs/alphaspin.yaml";
    char *text;
    size_t len;
    assert_int_equal(as_read_file(path, &text, &len), 0);
    spin_config c;
    spin_config_default(&c);
    if (spin_config_parse(&c, text, len, path)) fail_msg("%s", as_last_error());
    // Every key is set in the documented example, so each was parsed (a key given twice or unknown fails above).
    for (int i = 0; i < spin_config_n_keys(); i++) {
        const char *key = spin_config_key(i), *dot = strchr(key, '.');
        char pat[128];
        snprintf(pat, sizeof pat, "\n%s%s:", dot ? "  " : "", dot ? dot + 1 : key);
        if (!strstr(text, pat)) fail_msg("configs/alphaspin.yaml does not document %s", key);
    }
    // And the documented values are the defaults.
    spin_config d;
    spin_config_default(&d);
    char *a = spin_config_to_yaml(&c), *b = spin_config_to_yaml(&d);
    assert_string_equal(a, b);
    free(a), free(b), free(text);
    spin_config_free(&c), spin_config_free(&d);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values), cmocka_unit_test(test_errors),
        cmocka_unit_test(test_set), cmocka_unit_test(test_documented),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
