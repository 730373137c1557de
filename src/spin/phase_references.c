// Phase 2 of iteration k: the references, scored once.  Every pair's winner
// and loser under pi_t and pi_0 (summed answer log-probs, fp32, dropout off),
// cached in the pair files so that training, and a resumed run, never run the
// reference models again.
#include <math.h>
#include <stdio.h>

#include "spin/run_internal.h"
#include "util/common.h"

// t_is_base: pi_t IS pi_0 (iteration 1): one pass of the base serves both references.
static int score_references(train_model *m, train_model *m0, spin_pairs *ps, double alpha, int32_t micro, bool t_is_base,
                            const spin_ctx *x, int32_t k) {
    const char *phase = x ? "references" : NULL;
    const int64_t n = ps->n;
    spin_seq **seqs = as_malloc(sizeof *seqs * (size_t)(2 * n + 1));
    float *lp = as_malloc(sizeof(float) * (size_t)(2 * n + 1));
    for (int64_t i = 0; i < n; i++) {
        seqs[2 * i] = &ps->p[i].w, seqs[2 * i + 1] = &ps->p[i].l;
        ps->p[i].ref_t_w = ps->p[i].ref_t_l = ps->p[i].ref_0_w = ps->p[i].ref_0_l = NAN;
    }
    int rc = AS_OK;
    // Only the models the reference needs: pi_t unless alpha = 1, pi_0 unless alpha = 0.
    if (spin_ref_needs_t(alpha) && !t_is_base) {
        rc = spin_score_seqs(m, seqs, 2 * n, micro, lp, x, k, phase);
        for (int64_t i = 0; i < n && rc == AS_OK; i++) ps->p[i].ref_t_w = lp[2 * i], ps->p[i].ref_t_l = lp[2 * i + 1];
    }
    if (rc == AS_OK && (spin_ref_needs_0(alpha) || t_is_base)) {
        if (m0) {
            rc = spin_score_seqs(m0, seqs, 2 * n, micro, lp, x, k, phase);
        } else { // LoRA: pi_0 is the base, the adapters off
            const bool was = m->adapters_on;
            train_set_adapters(m, false);
            rc = spin_score_seqs(m, seqs, 2 * n, micro, lp, x, k, phase);
            train_set_adapters(m, was);
        }
        for (int64_t i = 0; i < n && rc == AS_OK; i++) {
            if (spin_ref_needs_0(alpha)) ps->p[i].ref_0_w = lp[2 * i], ps->p[i].ref_0_l = lp[2 * i + 1];
            if (t_is_base && spin_ref_needs_t(alpha)) ps->p[i].ref_t_w = lp[2 * i], ps->p[i].ref_t_l = lp[2 * i + 1];
        }
    }
    free(seqs), free(lp);
    return rc;
}

int spin_score_references(train_model *m, train_model *m0, spin_pairs *ps, double alpha, int32_t micro) {
    return score_references(m, m0, ps, alpha, micro, false, NULL, 0);
}

// The training model holds pi_t (spin_iterate_policy); pi_0 is the same model
// with its adapters off, or (full fine-tuning) the frozen copy tm0.
int spin_phase_references(spin_ctx *x, int32_t k, spin_pairs *ps, const char *spin_path, const char *trl_path) {
    const spin_config *c = x->c;
    const int64_t dropped = spin_pairs_encode_or_drop(ps, x->tok, &x->tpl, c->max_answer_len);
    if (dropped && !x->quiet)
        fprintf(stderr, "alphaspin run: iter %d: %lld generated answers could not be encoded; their pairs are left out\n", k, (long long)dropped);
    if (score_references(x->tm, c->lora ? NULL : x->tm0, ps, c->loss.alpha, x->micro, k == 1, x, k)) return AS_FAIL;
    return spin_pairs_write(ps, c->loss.ref, c->loss.alpha, spin_path, trl_path);
}
