// Proof, on a model small enough to enumerate, that the self-play loop does
// what the theory says (issue 4, item 9).
//
// The language: tokens END, a, b, c; a prompt is one token; an answer is 0..3
// symbols of {a, b, c} followed by END, or exactly 3 symbols (the length cap:
// the sequence stops without END).  Every branch point of the prefix tree
// below the cap is a softmax over all four tokens, so the 40 answers of a
// prompt carry probability exactly 1 and log pi(y|x) is the answer's summed
// token log-probability, train.h's logp_sum.  All 120 (prompt, answer)
// sequences go through train_forward at once: pi_theta, pi_t and pi_0 are
// known EXACTLY, with no sampling.
//
// SPIN's population loss at iteration t (ALPHA_SPIN.md), with winners from
// p_data and losers from pi_t, is computed exactly over the enumeration:
//   L(theta) = mean_x  sum_y sum_y'  p_data(y|x) pi_t(y'|x)  l(beta h(y, y'))
// with h = [log pi_theta(y) - log pi_ref(y)] - [log pi_theta(y') - log pi_ref(y')],
// l and its gradients from src/spin/loss.h, and pi_ref the geometric mixture
// pi_t^(1-alpha) pi_0^alpha.  Minimised by AdamW on every weight of a small
// transformer (train.h), it gives pi_{t+1}.
//
// The pairwise logistic loss is minimised where beta h(u) - beta h(v) =
// log(p(u)/pi_t(u)) - log(p(v)/pi_t(v)) for all u, v, i.e.
//   log pi_{t+1} = (1-alpha) log pi_t + alpha log pi_0 + (1/beta)(log p - log pi_t) + const,
// a contraction with factor |1 - alpha - 1/beta| whose fixed point is
//   alpha = 0:  pi* = p_data                              (SPIN's theorem)
//   alpha > 0:  pi* proportional to (pi_0^(alpha beta) p_data)^(1/(1 + alpha beta))
// (a geometric mixture that stays closer to pi_0).  The test checks, exactly:
//  1. alpha = 0: TV(pi_t, p_data) decreases at every iteration and ends far
//     below TV(pi_0, p_data);
//  2. alpha > 0: pi_T stays closer to pi_0 than alpha = 0's pi_T (TV and KL),
//     and is closer to its own predicted fixed point than to p_data.
// beta = 2 makes the contraction factor 1/2 for alpha = 0 (the iterates
// approach p_data geometrically; beta < 1/2 would overshoot at the optimum).
#include "test_common.h"

#include <math.h>
#include <stdbool.h>

#include "spin/loss.h"
#include "train/optim.h"
#include "train/train.h"
#include "util/common.h"
#include "util/rng.h"

enum { END = 0, V = 4, N_PROMPT = 3, MAX_SYM = 3, N_ANS = 40, N_SEQ = N_PROMPT * N_ANS, N_CTX = 2 + MAX_SYM + 1 };

typedef struct world {
    int32_t tokens[N_SEQ * N_CTX];
    int32_t len[N_SEQ], prompt_len[N_SEQ], n_tok[N_SEQ];
    double p_data[N_SEQ];      // p_data(y|x), each prompt's block of N_ANS sums to 1
} world;

// Answer j of a prompt: lengths 0, 1, 2, 3 in order, symbols in base 3.
static void build_world(world *w) {
    memset(w, 0, sizeof *w);
    for (int x = 0; x < N_PROMPT; x++) {
        int j = 0;
        for (int k = 0; k <= MAX_SYM; k++) {
            int count = 1;
            for (int i = 0; i < k; i++) count *= 3;
            for (int code = 0; code < count; code++, j++) {
                const int s = x * N_ANS + j;
                int32_t *t = &w->tokens[s * N_CTX];
                t[0] = END, t[1] = 1 + x; // the prompt: END as BOS, then one symbol
                int c = code;
                for (int i = k - 1; i >= 0; i--) t[2 + i] = 1 + c % 3, c /= 3;
                int n = 2 + k;
                if (k < MAX_SYM) t[n++] = END;
                w->len[s] = n;
                w->prompt_len[s] = 2;
                w->n_tok[s] = n - 2;
            }
        }
        assert_int_equal(j, N_ANS);
    }
}

// Index of the answer spelled by `sym` ("" = END alone; 3 symbols = no END).
static int answer_index(const char *sym) {
    const int k = (int)strlen(sym);
    int base = 0, count = 1;
    for (int i = 0; i < k; i++) base += count, count *= 3;
    int code = 0;
    for (int i = 0; i < k; i++) code = code * 3 + (sym[i] - 'a');
    return base + code;
}

// p_data: per prompt, 85% on a few answers of different lengths and 15%
// spread evenly (full support keeps the optimum finite).
static void set_p_data(world *w) {
    static const struct { int x; const char *ans; double p; } target[] = {
        {0, "b", 0.5}, {0, "ac", 0.3}, {0, "ccc", 0.2}, {1, "", 0.4},
        {1, "bb", 0.6}, {2, "abc", 0.7}, {2, "c", 0.3},
    };
    for (int s = 0; s < N_SEQ; s++) w->p_data[s] = 0.15 / N_ANS;
    for (size_t i = 0; i < AS_ARRAY_LEN(target); i++) w->p_data[target[i].x * N_ANS + answer_index(target[i].ans)] += 0.85 * target[i].p;
}

static train_model *tiny_model(uint64_t seed) {
    model_config c;
    memset(&c, 0, sizeof c);
    c.arch = MODEL_ARCH_LLAMA;
    snprintf(c.arch_name, sizeof c.arch_name, "llama");
    c.n_vocab = V, c.n_embd = 16, c.n_layer = 1, c.n_head = 2, c.n_head_kv = 2, c.head_dim = 8, c.n_ff = 32;
    c.n_ctx_train = 16, c.n_rot = 8, c.rms_eps = 1e-5f, c.rope_theta = 10000.0f, c.emb_scale = 1.0f;
    train_model *m;
    assert_int_equal(train_model_init(&m, &c), AS_OK);
    // Small random weights (sd 0.1; norms 1): pi_0 is near uniform per token.
    as_rng r;
    as_rng_seed(&r, seed);
    float **slots = (float **)&m->params;
    for (int i = 0; i < TRAIN_N_PARAMS; i++) {
        if (!slots[i]) continue;
        const bool norm = strstr(TRAIN_PARAM_NAMES[i], "norm") != NULL;
        for (size_t j = 0; j < m->param_sizes[i]; j++) {
            const double u1 = as_rng_uniform(&r) + 1e-300, u2 = as_rng_uniform(&r);
            slots[i][j] = norm ? 1.0f : (float)(0.1 * sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
        }
    }
    train_set_threads(m, 1);
    return m;
}

// log pi(y|x) of every sequence (and keeps the activations for backward).
static void log_probs(train_model *m, const world *w, double *logp) {
    const train_batch b = {.n_seq = N_SEQ, .n_ctx = N_CTX, .tokens = w->tokens, .len = w->len, .prompt_len = w->prompt_len};
    float lp[N_SEQ];
    assert_int_equal(train_forward(m, &b, lp, NULL), AS_OK);
    for (int s = 0; s < N_SEQ; s++) logp[s] = lp[s];
}

// Mean over prompts of TV and KL(a || b).
static double tv(const double *la, const double *lb) {
    double t = 0.0;
    for (int s = 0; s < N_SEQ; s++) t += 0.5 * fabs(exp(la[s]) - exp(lb[s]));
    return t / N_PROMPT;
}
static double kl(const double *la, const double *lb) {
    double k = 0.0;
    for (int s = 0; s < N_SEQ; s++) k += exp(la[s]) * (la[s] - lb[s]);
    return k / N_PROMPT;
}
static void log_of(const double *p, double *l) {
    for (int s = 0; s < N_SEQ; s++) l[s] = log(p[s]);
}

typedef struct loop_config {
    double alpha, beta;
    int iterations, steps;
    float lr;
} loop_config;

// Runs the loop from a fresh pi_0 (same seed every time); lp_iter[t] receives
// log pi_t for t = 0 .. iterations.
static void run_loop(const world *w, const loop_config *lc, double (*lp_iter)[N_SEQ]) {
    train_model *m = tiny_model(11);
    spin_loss_config sc;
    spin_loss_config_default(&sc);
    sc.kind = SPIN_LOSS_SIGMOID, sc.beta = lc->beta, sc.alpha = lc->alpha, sc.ref = SPIN_REF_GEOMETRIC;
    double lp_ref[N_SEQ], lp[N_SEQ];
    float up[N_SEQ];
    log_probs(m, w, lp_iter[0]);
    for (int t = 0; t < lc->iterations; t++) {
        const double *lp_t = lp_iter[t], *lp_0 = lp_iter[0];
        // References once per iteration (pi_t and pi_0 are frozen).
        for (int s = 0; s < N_SEQ; s++) lp_ref[s] = spin_ref_logp(sc.ref, sc.alpha, lp_t[s], lp_0[s]);
        float *params, *grads;
        const optim_segment *segs;
        int ns;
        const size_t n = train_trainable(m, &params, &grads, &segs, &ns);
        optim_config oc;
        optim_config_default(&oc, OPTIM_ADAMW);
        oc.lr = lc->lr, oc.weight_decay = 0.0f, oc.total_steps = lc->steps;
        optim *o;
        assert_int_equal(optim_init(&o, &oc, n), AS_OK);
        for (int step = 0; step < lc->steps; step++) {
            train_zero_grad(m);
            log_probs(m, w, lp);
            // d L / d log pi_theta of every sequence: a winner in the pairs
            // (y, .) weighted p_data(y) pi_t(y'), a loser in (., y').
            double g[N_SEQ] = {0};
            for (int x = 0; x < N_PROMPT; x++) {
                for (int i = 0; i < N_ANS; i++) {
                    const int u = x * N_ANS + i;
                    for (int j = 0; j < N_ANS; j++) {
                        const int v = x * N_ANS + j;
                        const double weight = w->p_data[u] * exp(lp_t[v]) / N_PROMPT;
                        const spin_pair_logps pl = {.pol_w = lp[u], .pol_l = lp[v], .ref_w = lp_ref[u], .ref_l = lp_ref[v],
                                                    .n_w = w->n_tok[u], .n_l = w->n_tok[v]};
                        spin_pair_loss out;
                        spin_loss_pair(&sc, &pl, &out);
                        g[u] += weight * out.dpol_w;
                        g[v] += weight * out.dpol_l;
                    }
                }
            }
            for (int s = 0; s < N_SEQ; s++) up[s] = (float)g[s];
            assert_int_equal(train_backward(m, up), AS_OK);
            train_optim_step(m, o, NULL, NULL);
        }
        optim_free(o);
        log_probs(m, w, lp_iter[t + 1]);
    }
    train_model_free(m);
}

enum { T_ITER = 5 };

static void test_enumeration_is_a_distribution(void **state) {
    (void)state;
    world w;
    build_world(&w);
    set_p_data(&w);
    train_model *m = tiny_model(11);
    double lp[N_SEQ];
    log_probs(m, &w, lp);
    for (int x = 0; x < N_PROMPT; x++) {
        double z = 0.0, zp = 0.0;
        for (int i = 0; i < N_ANS; i++) z += exp(lp[x * N_ANS + i]), zp += w.p_data[x * N_ANS + i];
        assert_float_equal(z, 1.0, 1e-5);   // the 40 answers are all of pi's mass
        assert_float_equal(zp, 1.0, 1e-12);
    }
    train_model_free(m);
}

static void test_spin_converges_to_p_data_and_alpha_stays_near_pi0(void **state) {
    (void)state;
    world w;
    build_world(&w);
    set_p_data(&w);
    double lp_data[N_SEQ];
    log_of(w.p_data, lp_data);
    enum { N_ALPHA = 3 };
    static const double alphas[N_ALPHA] = {0.0, 0.1, 0.5};
    static double it[N_ALPHA][T_ITER + 1][N_SEQ];
    static double lp_star[N_ALPHA][N_SEQ];
    const double beta = 2.0;
    for (int a = 0; a < N_ALPHA; a++) {
        const loop_config lc = {.alpha = alphas[a], .beta = beta, .iterations = T_ITER, .steps = 200, .lr = 0.005f};
        run_loop(&w, &lc, it[a]);
        // The fixed point (pi_0^(alpha beta) p_data)^(1/(1 + alpha beta)), normalised per prompt.
        const double ab = alphas[a] * beta;
        for (int x = 0; x < N_PROMPT; x++) {
            double z = 0.0;
            for (int i = 0; i < N_ANS; i++) {
                const int s = x * N_ANS + i;
                lp_star[a][s] = (ab * it[a][0][s] + lp_data[s]) / (1.0 + ab);
                z += exp(lp_star[a][s]);
            }
            for (int i = 0; i < N_ANS; i++) lp_star[a][x * N_ANS + i] -= log(z);
        }
    }
    for (int a = 0; a < N_ALPHA; a++) {
        printf("  alpha %.1f, beta %.0f:  iter  TV(pi_t, p_data)  TV(pi_t, pi*)  TV(pi_t, pi_0)  KL(pi_t || pi_0)\n", alphas[a], beta);
        for (int t = 0; t <= T_ITER; t++)
            printf("  %20d  %16.4f  %13.4f  %14.4f  %16.4f\n", t, tv(it[a][t], lp_data), tv(it[a][t], lp_star[a]),
                   tv(it[a][t], it[a][0]), kl(it[a][t], it[a][0]));
    }
    // Every run starts from the same pi_0; pi* of alpha = 0 is p_data.
    for (int a = 1; a < N_ALPHA; a++)
        for (int s = 0; s < N_SEQ; s++) assert_float_equal(it[a][0][s], it[0][0][s], 0.0);
    for (int s = 0; s < N_SEQ; s++) assert_float_equal(lp_star[0][s], lp_data[s], 1e-12);

    // 1. SPIN (alpha = 0): TV(pi_t, p_data) decreases at every iteration, at
    //    about the predicted rate (contraction 1/2 in log-probability), to
    //    far below where it started.
    for (int t = 1; t <= T_ITER; t++) {
        const double before = tv(it[0][t - 1], lp_data), after = tv(it[0][t], lp_data);
        if (!(after < 0.7 * before)) fail_msg("alpha = 0: TV(pi_t, p_data) %.5f -> %.5f at iteration %d (expected a decrease by 30%% or more)", before, after, t);
    }
    assert_true(tv(it[0][T_ITER], lp_data) < 0.05 * tv(it[0][0], lp_data));
    // 2. alpha > 0 keeps pi_T measurably closer to pi_0, more so for larger
    //    alpha, in TV and in KL ...
    for (int a = 1; a < N_ALPHA; a++) {
        if (!(tv(it[a][T_ITER], it[a][0]) < 0.95 * tv(it[a - 1][T_ITER], it[a - 1][0])))
            fail_msg("alpha %.1f: TV(pi_T, pi_0) %.4f not below alpha %.1f's %.4f", alphas[a], tv(it[a][T_ITER], it[a][0]), alphas[a - 1],
                     tv(it[a - 1][T_ITER], it[a - 1][0]));
        if (!(kl(it[a][T_ITER], it[a][0]) < 0.9 * kl(it[a - 1][T_ITER], it[a - 1][0])))
            fail_msg("alpha %.1f: KL(pi_T || pi_0) %.4f not below alpha %.1f's %.4f", alphas[a], kl(it[a][T_ITER], it[a][0]), alphas[a - 1],
                     kl(it[a - 1][T_ITER], it[a - 1][0]));
        // ... and goes where the theory says: to its own fixed point, not to p_data.
        assert_true(tv(it[a][T_ITER], lp_star[a]) < 0.03);
        assert_true(tv(it[a][T_ITER], lp_star[a]) < 0.3 * tv(it[a][T_ITER], lp_data));
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_enumeration_is_a_distribution),
        cmocka_unit_test(test_spin_converges_to_p_data_and_alpha_stays_near_pi0),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
