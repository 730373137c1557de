// AdamW, RMSprop, SGD (torch.optim's update rules), schedules and clipping.
#include "train/optim.h"

#include <math.h>
#include <string.h>

#include "util/common.h"

void optim_config_default(optim_config *c, optim_kind kind) {
    memset(c, 0, sizeof *c);
    c->kind = kind;
    c->lr = kind == OPTIM_RMSPROP ? 1e-2f : 1e-3f;
    c->beta1 = 0.9f;
    c->beta2 = 0.999f;
    c->eps = 1e-8f;
    c->alpha = 0.99f;
    c->weight_decay = kind == OPTIM_ADAMW ? 1e-2f : 0.0f;
    c->schedule = OPTIM_SCHEDULE_CONSTANT;
}

void optim_config_finetune(optim_config *c, float lr) {
    optim_config_default(c, OPTIM_ADAMW);
    c->lr = lr;
    c->weight_decay = 0.0f;
    c->schedule = OPTIM_SCHEDULE_LINEAR;
    c->warmup_ratio = 0.1;
    c->max_grad_norm = 1.0f;
}

// n zeroed floats of be's buf_alloc memory.
static float *moments_new(const as_backend *be, size_t n) {
    float *p = be->buf_alloc(sizeof(float) * AS_MAX(n, (size_t)1));
    memset(p, 0, sizeof(float) * AS_MAX(n, (size_t)1));
    return p;
}

int optim_init(optim **out, const optim_config *c, size_t n_params) {
    *out = NULL;
    if (c->kind != OPTIM_ADAMW && c->kind != OPTIM_RMSPROP && c->kind != OPTIM_SGD)
        return as_error("optimizer: unknown kind %d", (int)c->kind);
    if (!(c->lr >= 0.0f) || !isfinite(c->lr)) return as_error("optimizer: learning rate %g: expected a finite value >= 0", (double)c->lr);
    if (!(c->beta1 >= 0.0f && c->beta1 < 1.0f) || !(c->beta2 >= 0.0f && c->beta2 < 1.0f))
        return as_error("optimizer: betas (%g, %g): expected values in [0, 1)", (double)c->beta1, (double)c->beta2);
    if (!(c->alpha >= 0.0f && c->alpha < 1.0f)) return as_error("optimizer: RMSprop alpha %g: expected a value in [0, 1)", (double)c->alpha);
    if (!(c->eps > 0.0f) && c->kind != OPTIM_SGD) return as_error("optimizer: eps %g: expected a value > 0", (double)c->eps);
    if (!(c->momentum >= 0.0f && c->momentum < 1.0f)) return as_error("optimizer: momentum %g: expected a value in [0, 1)", (double)c->momentum);
    if (!(c->weight_decay >= 0.0f) || !isfinite(c->weight_decay))
        return as_error("optimizer: weight decay %g: expected a finite value >= 0", (double)c->weight_decay);
    if (!(c->warmup_ratio >= 0.0 && c->warmup_ratio <= 1.0))
        return as_error("optimizer: warm-up ratio %g: expected a value in [0, 1]", c->warmup_ratio);
    if (c->schedule != OPTIM_SCHEDULE_CONSTANT && c->schedule != OPTIM_SCHEDULE_LINEAR && c->schedule != OPTIM_SCHEDULE_COSINE)
        return as_error("optimizer: unknown schedule %d", (int)c->schedule);
    if ((c->schedule != OPTIM_SCHEDULE_CONSTANT || c->warmup_ratio > 0.0) && c->total_steps < 1)
        return as_error("optimizer: schedule needs total_steps >= 1, found %lld", (long long)c->total_steps);
    if (!(c->max_grad_norm >= 0.0f)) return as_error("optimizer: max_grad_norm %g: expected a value >= 0", (double)c->max_grad_norm);
    optim *o = as_calloc(1, sizeof *o);
    o->cfg = *c;
    o->be = o->mem = &as_backend_cpu;
    o->n = n_params;
    const bool need_m = c->kind == OPTIM_ADAMW || (c->kind == OPTIM_SGD && c->momentum > 0.0f);
    const bool need_v = c->kind == OPTIM_ADAMW || c->kind == OPTIM_RMSPROP;
    if (need_m) o->m = moments_new(o->mem, n_params);
    if (need_v) o->v = moments_new(o->mem, n_params);
    *out = o;
    return AS_OK;
}

void optim_free(optim *o) {
    if (!o) return;
    if (o->m) o->mem->buf_free(o->m);
    if (o->v) o->mem->buf_free(o->v);
    free(o);
}

void optim_set_backend(optim *o, const as_backend *be) {
    if (!be) be = &as_backend_cpu;
    o->be = be;
    const size_t bytes = sizeof(float) * AS_MAX(o->n, (size_t)1);
    o->m = as_buf_move(o->mem, be, o->m, bytes);
    o->v = as_buf_move(o->mem, be, o->v, bytes);
    o->mem = as_backend_mem(be);
}

// transformers.optimization: warm-up steps = ceil(total * ratio); the factor
// for step s (the number of updates already done) is s / warm-up during it,
// then 1 (constant), (total - s) / (total - warm-up) (linear) or
// (1 + cos(pi * progress)) / 2 (cosine), never below 0.
double optim_lr_factor(const optim_config *c, int64_t s) {
    const int64_t total = c->total_steps, warm = (int64_t)ceil((double)total * c->warmup_ratio);
    if (s < warm) return (double)s / (double)AS_MAX(warm, (int64_t)1);
    const double progress = (double)(s - warm) / (double)AS_MAX(total - warm, (int64_t)1);
    switch (c->schedule) {
    case OPTIM_SCHEDULE_LINEAR: return fmax(0.0, (double)(total - s) / (double)AS_MAX(total - warm, (int64_t)1));
    case OPTIM_SCHEDULE_COSINE: return fmax(0.0, 0.5 * (1.0 + cos(M_PI * progress)));
    default: return 1.0;
    }
}

double optim_clip_grad_norm_on(const as_backend *be, float *g, size_t n, float max_norm, int nth) {
    const double norm = sqrt(be->sum_squares(g, n, nth));
    if (max_norm > 0.0f) {
        const double coef = (double)max_norm / (norm + 1e-6);
        if (coef < 1.0) be->grad_scale(g, n, (float)coef, nth);
    }
    return norm;
}

double optim_clip_grad_norm(float *g, size_t n, float max_norm, int nth) { return optim_clip_grad_norm_on(&as_backend_cpu, g, n, max_norm, nth); }

// The update of one segment (the rules: tensor/train_graph.h).
static void update_range(optim *o, float *p, const float *g, size_t off, size_t n, bool decay, float lr, int nth) {
    const optim_config *c = &o->cfg;
    const as_backend *be = o->be;
    const float wd = decay ? c->weight_decay : 0.0f;
    const int64_t t = o->step; // already incremented
    switch (c->kind) {
    case OPTIM_ADAMW: be->adamw_update(p + off, g + off, o->m + off, o->v + off, n, lr, c->beta1, c->beta2, c->eps, wd, t, nth); break;
    case OPTIM_RMSPROP: be->rmsprop_update(p + off, g + off, o->v + off, n, lr, c->alpha, c->eps, wd, nth); break;
    case OPTIM_SGD: be->sgd_update(p + off, g + off, o->m ? o->m + off : NULL, n, lr, c->momentum, wd, t, nth); break;
    }
}

double optim_step(optim *o, float *params, const float *grads, const optim_segment *segs, int n_segs, int nth) {
    const double lr = (double)o->cfg.lr * optim_lr_factor(&o->cfg, o->step);
    o->step++;
    for (int s = 0; s < n_segs; s++) {
        if (segs[s].offset + segs[s].n > o->n) as_die("optim_step: segment %s [%zu, +%zu) outside %zu parameters", segs[s].name, segs[s].offset, segs[s].n, o->n);
        update_range(o, params, grads, segs[s].offset, segs[s].n, segs[s].decay, (float)lr, nth);
    }
    return lr;
}
