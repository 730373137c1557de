// configs/paper/*.yaml (the paper's six runs) load with the run's own
// configuration reader, pass its checks, and hold the paper's settings.
#include "test_common.h"

#include <math.h>

#include "spin/config.h"
#include "util/common.h"

static void check_one(const char *variant, double alpha, int32_t tau) {
    char path[1024], name[64];
    snprintf(name, sizeof name, "%s_tau%s", variant, tau == SPIN_TAU_INF ? "inf" : tau == 1 ? "1" : "2");
    snprintf(path, sizeof path, "%s/../../configs/paper/%s.yaml", AS_TEST_VECTORS, name);
    spin_config c;
    spin_config_default(&c);
    if (spin_config_load(&c, path) != AS_OK) fail_msg("%s", as_last_error());
    if (spin_config_check(&c) != AS_OK) fail_msg("%s", as_last_error());
    assert_string_equal(c.name, name);
    assert_true(c.loss.alpha == alpha);
    assert_int_equal(c.tau, tau);
    assert_string_equal(c.model_path, "gemma-2b");
    assert_string_equal(c.layout, "messages");
    assert_int_equal(c.iterations, 3);
    assert_int_equal(c.mixing, SPIN_MIX_SAMPLE);
    assert_int_equal(c.loss.kind, SPIN_LOSS_SIGMOID);
    assert_true(c.loss.beta == 0.1);
    assert_true(c.lora);
    assert_int_equal(c.lora_cfg.rank, 16);
    assert_true(fabsf(c.lora_cfg.dropout - 0.05f) < 1e-7f);
    assert_int_equal(c.epochs, 2);
    assert_int_equal(c.optim.schedule, OPTIM_SCHEDULE_LINEAR);
    assert_true(c.optim.warmup_ratio == 0.1);
    assert_int_equal(c.max_prompt_len, 512);
    assert_int_equal(c.max_prompt_len + c.max_answer_len, 1024);
    assert_int_equal(c.max_new_tokens, 256);
    assert_string_equal(c.device, "cuda");
    spin_config_free(&c);
}

static void test_paper_configs(void **state) {
    (void)state;
    const int32_t taus[3] = {1, 2, SPIN_TAU_INF};
    for (int i = 0; i < 3; i++) {
        check_one("spin", 0.0, taus[i]);
        check_one("alphaspin", 0.1, taus[i]);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_paper_configs)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
