// Phase 5 of iteration k (and iteration 0): the held-out measurements of
// summary.json's "heldout" (docs/RUN_FOLDER.md): NLL per token of the SFT
// answers, KL to the base, answer lengths, and the task accuracy of greedy
// answers when every reference answer states a number.
#include <math.h>
#include <stdio.h>

#include "spin/run_internal.h"
#include "util/common.h"
#ifdef ALPHASPIN_HAVE_DATA
#include "data/arith.h"
#endif

// Held-out measurements of pi_k (tm holds pi_k): answers sampled from pi_k at
// temperature 1 (the same seeds for every k, so iterates are compared on
// common random numbers) give KL(pi_k || pi_0) ~ mean of log pi_k(y) -
// log pi_0(y), their lengths and the task accuracy; the SFT answers give the
// NLL per token.
int spin_phase_measure(spin_ctx *x, int32_t k, spin_heldout *h) {
    const int64_t n = x->n_held;
    h->nll_per_token = h->kl_to_base = h->len_mean = h->len_std = h->task_accuracy = NAN;
    if (n == 0) return AS_OK;
    char **texts = as_calloc((size_t)n, sizeof *texts);
    int32_t *ntok = as_calloc((size_t)n, sizeof *ntok);
    spin_seq *gen = as_calloc((size_t)n, sizeof *gen), *sft = as_calloc((size_t)n, sizeof *sft);
    spin_seq **gp = as_malloc(sizeof *gp * (size_t)n), **sp = as_malloc(sizeof *sp * (size_t)n);
    float *lk = as_malloc(sizeof(float) * (size_t)n), *l0 = as_malloc(sizeof(float) * (size_t)n);
    sampler_params samp = sampler_params_default();
    samp.temperature = 1.0f, samp.top_k = 0, samp.top_p = 1.0f, samp.min_p = 0.0f, samp.repeat_penalty = 1.0f, samp.repeat_last_n = 0;
    // Seeds independent of k: every iterate answers with the same random numbers.
    int rc = spin_generate_answers(x, k, "heldout", k, x->held, x->held_idx, n, &samp, 0, SPIN_SALT_HELDOUT, texts, ntok);
    const bool full = !x->c->lora;
    train_model *mk = x->tm, *m0 = full ? x->tm0 : x->tm;
    for (int64_t i = 0; i < n && rc == AS_OK; i++) {
        const sft_example *e = &x->held->ex[x->held_idx[i]];
        const int32_t a = spin_prompt_turns(e);
        rc = spin_encode_answer(x->tok, &x->tpl, e->msgs, a, texts[i], x->c->max_answer_len, &gen[i], NULL);
        if (rc == AS_OK) rc = spin_encode_answer(x->tok, &x->tpl, e->msgs, a, e->msgs[a].content, x->c->max_answer_len, &sft[i], NULL);
        gp[i] = &gen[i], sp[i] = &sft[i];
    }
    // pi_k: LoRA adapters on (k = 0: off); full fine-tuning: tm holds pi_k.
    const bool lora_on = x->c->lora && k > 0;
    if (x->c->lora) train_set_adapters(mk, lora_on);
    if (rc == AS_OK) rc = spin_score_seqs(mk, sp, n, x->micro, lk, x, k, NULL);
    if (rc == AS_OK) {
        double nll = 0, tok = 0;
        for (int64_t i = 0; i < n; i++) nll -= lk[i], tok += sft[i].n_scored;
        h->nll_per_token = nll / tok;
    }
    if (rc == AS_OK && k > 0) {
        rc = spin_score_seqs(mk, gp, n, x->micro, lk, x, k, NULL);
        if (x->c->lora) train_set_adapters(m0, false);
        if (rc == AS_OK) rc = spin_score_seqs(m0, gp, n, x->micro, l0, x, k, NULL);
        if (rc == AS_OK) {
            double kl = 0;
            for (int64_t i = 0; i < n; i++) kl += (double)lk[i] - (double)l0[i];
            h->kl_to_base = kl / (double)n;
        }
    } else if (rc == AS_OK) {
        h->kl_to_base = 0.0; // pi_0 against itself
    }
    if (x->c->lora) train_set_adapters(mk, true);
    if (rc == AS_OK) {
        double s = 0, s2 = 0;
        for (int64_t i = 0; i < n; i++) s += ntok[i], s2 += (double)ntok[i] * ntok[i];
        h->len_mean = s / (double)n;
        h->len_std = n > 1 ? sqrt(fmax(0.0, (s2 - s * s / (double)n) / (double)(n - 1))) : 0.0;
#ifdef ALPHASPIN_HAVE_DATA
        // Task accuracy when every reference answer states a number (arithmetic, GSM8K):
        // greedy answers (as GSM8K is scored), their number ("#### n" or the last one)
        // against the reference's.
        int64_t scored = 0, right = 0;
        int64_t *want = as_malloc(sizeof(int64_t) * (size_t)n);
        for (int64_t i = 0; i < n; i++) {
            const sft_example *e = &x->held->ex[x->held_idx[i]];
            if (data_arith_extract(e->msgs[spin_prompt_turns(e)].content, 1, &want[i])) break;
            scored++;
        }
        if (scored == n) {
            char **greedy = as_calloc((size_t)n, sizeof *greedy);
            const sampler_params gs = sampler_params_greedy();
            rc = spin_generate_answers(x, k, "accuracy", k, x->held, x->held_idx, n, &gs, 0, SPIN_SALT_HELDOUT, greedy, NULL);
            for (int64_t i = 0; i < n; i++) {
                int64_t got;
                if (rc == AS_OK) right += data_arith_extract(greedy[i], 1, &got) == 0 && got == want[i];
                free(greedy[i]);
            }
            free(greedy);
            if (rc == AS_OK) h->task_accuracy = (double)right / (double)n;
        }
        free(want);
#endif
    }
    for (int64_t i = 0; i < n; i++) free(texts[i]), spin_seq_free(&gen[i]), spin_seq_free(&sft[i]);
    free(texts), free(ntok), free(gen), free(sft), free(gp), free(sp), free(lk), free(l0);
    return rc;
}
