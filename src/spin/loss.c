// The preference losses of loss.h, in double precision per pair.
#include "spin/loss.h"

#include <math.h>
#include <string.h>

void spin_loss_config_default(spin_loss_config *c) {
    memset(c, 0, sizeof *c);
    c->kind = SPIN_LOSS_SIGMOID;
    c->beta = 0.1;
    c->delta = 1.0;
    c->lambda = 0.1;
    c->ref = SPIN_REF_GEOMETRIC;
}

static const char *const LOSS_NAMES[] = {"sigmoid", "hinge", "ipo", "slic"};
static const char *const REF_NAMES[] = {"geometric", "arithmetic"};

const char *spin_loss_kind_name(spin_loss_kind k) { return (unsigned)k < 4 ? LOSS_NAMES[k] : "?"; }
const char *spin_ref_mode_name(spin_ref_mode m) { return (unsigned)m < 2 ? REF_NAMES[m] : "?"; }

int spin_loss_kind_parse(const char *s, spin_loss_kind *out) {
    for (int i = 0; i < 4; i++)
        if (strcmp(s, LOSS_NAMES[i]) == 0) { *out = (spin_loss_kind)i; return 0; }
    return -1;
}

int spin_ref_mode_parse(const char *s, spin_ref_mode *out) {
    for (int i = 0; i < 2; i++)
        if (strcmp(s, REF_NAMES[i]) == 0) { *out = (spin_ref_mode)i; return 0; }
    return -1;
}

int spin_ref_needs_t(double alpha) { return alpha < 1.0; }
int spin_ref_needs_0(double alpha) { return alpha > 0.0; }

double spin_ref_logp(spin_ref_mode mode, double alpha, double logp_t, double logp_0) {
    if (alpha <= 0.0) return logp_t;
    if (alpha >= 1.0) return logp_0;
    // (1-alpha) lt + alpha l0, written so that lt == l0 gives lt exactly.
    if (mode == SPIN_REF_GEOMETRIC) return logp_t + alpha * (logp_0 - logp_t);
    // log((1-a) e^lt + a e^l0) = m + log((1-a) e^(lt-m) + a e^(l0-m)), m = max: sequence
    // log-probs are in the hundreds below zero, so the exponentials are taken relative to m.
    double a = log1p(-alpha) + logp_t, b = log(alpha) + logp_0;
    double m = a > b ? a : b;
    return m + log1p(exp((a > b ? b : a) - m));
}

// log sigmoid(z) without overflow: -log(1 + e^-z).
static double log_sigmoid(double z) { return z >= 0 ? -log1p(exp(-z)) : z - log1p(exp(z)); }
static double sigmoid(double z) {
    if (z >= 0) return 1.0 / (1.0 + exp(-z));
    double e = exp(z);
    return e / (1.0 + e);
}

void spin_loss_pair(const spin_loss_config *c, const spin_pair_logps *p, spin_pair_loss *out) {
    double pw = p->pol_w, pl = p->pol_l, rw = p->ref_w, rl = p->ref_l;
    double sw = 1.0, sl = 1.0; // d(normalised log-prob)/d(summed log-prob)
    if (c->kind == SPIN_LOSS_IPO) {
        // TRL averages every log-prob over its completion's tokens for IPO.
        sw = 1.0 / (p->n_w > 0 ? p->n_w : 1);
        sl = 1.0 / (p->n_l > 0 ? p->n_l : 1);
        pw *= sw; rw *= sw; pl *= sl; rl *= sl;
    }
    double h = (pw - rw) - (pl - rl);
    double beta = c->beta;
    double loss = 0, dh = 0; // dL/dh
    out->dpol_w = out->dpol_l = 0;
    switch (c->kind) {
    case SPIN_LOSS_SIGMOID: {
        double eps = c->label_smoothing, z = beta * h;
        loss = -(1.0 - eps) * log_sigmoid(z) - eps * log_sigmoid(-z);
        // d/dz -log sigmoid(z) = -sigmoid(-z);  d/dz -log sigmoid(-z) = sigmoid(z)
        dh = beta * (-(1.0 - eps) * sigmoid(-z) + eps * sigmoid(z));
        break;
    }
    case SPIN_LOSS_HINGE: {
        double v = 1.0 - beta * h;
        loss = v > 0 ? v : 0;
        dh = v > 0 ? -beta : 0;
        break;
    }
    case SPIN_LOSS_IPO: {
        double v = h - 1.0 / (2.0 * beta);
        loss = v * v;
        dh = 2.0 * v;
        break;
    }
    case SPIN_LOSS_SLIC: {
        double v = c->delta - p->pol_w + p->pol_l;
        loss = (v > 0 ? v : 0) - c->lambda * p->pol_w;
        out->dpol_w = (v > 0 ? -1.0 : 0.0) - c->lambda;
        out->dpol_l = v > 0 ? 1.0 : 0.0;
        break;
    }
    }
    if (c->kind != SPIN_LOSS_SLIC) {
        out->dpol_w = dh * sw;
        out->dpol_l = -dh * sl;
    }
    out->loss = loss;
    out->reward_w = beta * (pw - rw);
    out->reward_l = beta * (pl - rl);
}

double spin_loss_batch(const spin_loss_config *c, const spin_pair_logps *p, int64_t n, double scale, float *dpol_w,
                       float *dpol_l, spin_loss_metrics *m) {
    spin_loss_metrics acc = {0};
    for (int64_t i = 0; i < n; i++) {
        spin_pair_loss r;
        spin_loss_pair(c, &p[i], &r);
        if (dpol_w) dpol_w[i] = (float)(scale * r.dpol_w / (double)n);
        if (dpol_l) dpol_l[i] = (float)(scale * r.dpol_l / (double)n);
        acc.loss += r.loss;
        acc.rewards_real += r.reward_w;
        acc.rewards_generated += r.reward_l;
        acc.rewards_margins += r.reward_w - r.reward_l;
        acc.rewards_accuracies += r.reward_w > r.reward_l ? 1.0 : 0.0;
        acc.logps_real += p[i].pol_w;
        acc.logps_generated += p[i].pol_l;
    }
    if (n > 0) {
        double inv = 1.0 / (double)n;
        acc.loss *= inv; acc.rewards_real *= inv; acc.rewards_generated *= inv; acc.rewards_margins *= inv;
        acc.rewards_accuracies *= inv; acc.logps_real *= inv; acc.logps_generated *= inv;
    }
    acc.n = n;
    if (m) *m = acc;
    return acc.loss;
}
