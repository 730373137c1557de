// The geometric-mixture samplers on the default model (SmolLM2-135M-Instruct):
// identities that hold exactly on any model and fail on a wrong wiring.
//   - pi_t = pi_0: the token-level mixture is the model itself, every
//     normaliser Z_s is 1, so SIR's log-weights are 0 and its ESS is K.
//   - GFlowNet: a sampler equal to the base is the exact solution when
//     pi_t = pi_0 = base, so the SubTB loss of its own answers vanishes (f32);
//     with pi_t = base + random adapters it does not.
#include "tiny_mix.h"

#include "mixture/gfn.h"
#include "mixture/mixture.h"
#include "tokenizer/chat.h"
#include "tokenizer/tokenizer.h"

static void test_default_identities(void **state) {
    (void)state;
    model *m;
    tokenizer *tok;
    chat_template ct;
    if (model_load(&m, as_test_default_model()) || tokenizer_load(&tok, m->file) || chat_template_init(&ct, m->file, NULL))
        fail_msg("%s", as_last_error());
    const chat_message msg = {"user", "What is 2+3? Answer briefly."};
    char *text = chat_render(&ct, &msg, 1, true);
    int32_t *prompt, end;
    size_t np;
    assert_int_equal(tokenizer_encode(tok, text, strlen(text), false, true, &prompt, &np), AS_OK);
    {
        int32_t *e;
        size_t ne;
        const char *te = chat_turn_end(&ct);
        assert_int_equal(tokenizer_encode(tok, te, strlen(te), false, true, &e, &ne), AS_OK);
        end = e[0];
        free(e);
        assert_true(tokenizer_is_end(tok, end));
    }
    const int32_t K = 4;
    const int32_t *pr[1] = {prompt};
    const int64_t npr[1] = {(int64_t)np};
    mixture_config c = {.alpha = 0.3f, .max_new_tokens = 12, .end_ids = &end, .n_end_ids = 1, .batch_size = 8, .seed = 1};
    mixture_sample s;
    double ess;
    if (mixture_sample_sir(m, NULL, NULL, &c, K, pr, npr, 1, &s, &ess)) fail_msg("%s", as_last_error());
    printf("  pi_t = pi_0: SIR ESS %.6f of %d; kept answer log w %.2e, %lld tokens\n", ess, K, s.log_w, (long long)s.n_ids);
    assert_true(fabs(ess - K) < 1e-3 && fabs(s.log_w) < 1e-3);
    assert_true(fabs(s.logq - s.logp_t) < 1e-3 && fabs(s.logp_t - s.logp_0) < 1e-6);
    mixture_sample_free(&s);

    // GFlowNet loss of the base's own answers.
    train_model *tm;
    if (train_model_from_model(&tm, m)) fail_msg("%s", as_last_error());
    train_lora_config lc = {.rank = 4, .alpha = 8, .seed = 2};
    assert_int_equal(train_lora_attach(tm, &lc), AS_OK); // B = 0: the sampler is the base
    train_set_training(tm, false);
    mixture_sample a[2];
    const int32_t *pr2[2] = {prompt, prompt};
    const int64_t npr2[2] = {(int64_t)np, (int64_t)np};
    assert_int_equal(mixture_sample_policy(m, NULL, 1.0f, &c, pr2, npr2, 2, a), AS_OK);
    gfn_traj t[2];
    for (int i = 0; i < 2; i++)
        t[i] = (gfn_traj){.prompt = prompt, .n_prompt = (int64_t)np, .ids = a[i].ids, .m = (int32_t)(a[i].ended ? a[i].n_ids - 1 : a[i].n_ids),
                          .truncated = !a[i].ended};
    double *logr[2], loss_same, loss_diff;
    assert_int_equal(gfn_prefix_rewards(m, KERNEL_PRECISION_F32, NULL, NULL, 0.3f, end, t, 2, logr), AS_OK);
    for (int i = 0; i < 2; i++) t[i].logr = logr[i];
    assert_int_equal(gfn_loss(tm, t, 2, end, 1.0, 1.0, 2, false, &loss_same), AS_OK);
    for (int i = 0; i < 2; i++) free(logr[i]);
    train_lora *lt = mix_random_lora(&m->cfg, 4, 0.05, 3);
    model_lora vt;
    train_lora_view(lt, &vt);
    assert_int_equal(gfn_prefix_rewards(m, KERNEL_PRECISION_F32, &vt, NULL, 0.3f, end, t, 2, logr), AS_OK);
    for (int i = 0; i < 2; i++) t[i].logr = logr[i];
    assert_int_equal(gfn_loss(tm, t, 2, end, 1.0, 1.0, 2, false, &loss_diff), AS_OK);
    printf("  SubTB loss of the base's answers: %.2e with pi_t = pi_0 = base, %.3f with pi_t = base + random adapters\n", loss_same,
           loss_diff);
    assert_true(loss_same < 1e-4);
    assert_true(loss_diff > 1e-2);
    for (int i = 0; i < 2; i++) free(logr[i]), mixture_sample_free(&a[i]);
    train_lora_free(lt);
    train_model_free(tm);
    free(prompt), free(text);
    chat_template_free(&ct);
    tokenizer_free(tok);
    model_free(m);
}

int main(void) {
    AS_REQUIRE_DEFAULT_MODEL();
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_default_identities)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
