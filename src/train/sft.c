// SFT data layouts and chat-template encoding with answer-only loss masks.
#include "train/sft.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dist/dist.h"
#include "util/common.h"
#include "util/json.h"
#include "util/jsonl.h"

static void example_free(sft_example *e) {
    for (size_t i = 0; i < e->n_msgs; i++) free((char *)e->msgs[i].role), free((char *)e->msgs[i].content);
    free(e->msgs);
}

void sft_data_free(sft_data *d) {
    if (!d) return;
    for (int64_t i = 0; i < d->n; i++) example_free(&d->ex[i]);
    free(d->ex);
    free(d);
}

static void add_msg(sft_example *e, const char *role, const char *content) {
    e->msgs = as_realloc(e->msgs, sizeof *e->msgs * (e->n_msgs + 1));
    e->msgs[e->n_msgs].role = as_strdup(role);
    e->msgs[e->n_msgs].content = as_strdup(content);
    e->n_msgs++;
}

static const char *str_field(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItem(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

// One JSON line into e; -1 + as_error naming path:line.
static int parse_line(const as_jsonl *r, const cJSON *o, sft_example *e) {
    const cJSON *msgs = cJSON_GetObjectItem(o, "messages");
    if (msgs) {
        if (!cJSON_IsArray(msgs) || cJSON_GetArraySize(msgs) == 0) return as_jsonl_error(r, "messages: expected a non-empty list");
        const cJSON *m;
        int i = 0;
        bool has_answer = false;
        cJSON_ArrayForEach(m, msgs) {
            const char *role = str_field(m, "role"), *content = str_field(m, "content");
            if (!role || !content) return as_jsonl_error(r, "messages[%d]: expected string fields role and content", i);
            if (strcmp(role, "system") && strcmp(role, "user") && strcmp(role, "assistant"))
                return as_jsonl_error(r, "messages[%d]: role '%s' (expected system, user or assistant)", i, role);
            has_answer |= !strcmp(role, "assistant");
            add_msg(e, role, content);
            i++;
        }
        if (!has_answer) return as_jsonl_error(r, "messages: no assistant turn to train on");
    } else {
        const char *q = str_field(o, "prompt"), *a = str_field(o, "response");
        if (!q || !a) q = str_field(o, "question"), a = str_field(o, "answer");
        if (!q || !a) return as_jsonl_error(r, "expected {messages}, {prompt, response} or {question, answer} with string values");
        add_msg(e, "user", q);
        add_msg(e, "assistant", a);
    }
    return AS_OK;
}

int sft_data_load(sft_data **out, const char *path) {
    *out = NULL;
    as_jsonl r;
    if (as_jsonl_open(&r, path)) return AS_FAIL;
    sft_data *d = as_calloc(1, sizeof *d);
    int64_t cap = 0;
    cJSON *o;
    int got;
    while ((got = as_jsonl_next(&r, &o)) > 0) {
        if (d->n == cap) {
            cap = cap ? 2 * cap : 256;
            d->ex = as_realloc(d->ex, sizeof *d->ex * (size_t)cap);
        }
        sft_example *e = &d->ex[d->n];
        memset(e, 0, sizeof *e);
        if (parse_line(&r, o, e)) got = AS_FAIL, example_free(e);
        else d->n++;
        cJSON_Delete(o);
        if (got < 0) break;
    }
    as_jsonl_close(&r);
    if (got < 0) {
        sft_data_free(d);
        return AS_FAIL;
    }
    if (d->n == 0) {
        sft_data_free(d);
        return as_error("%s: no examples", path);
    }
    *out = d;
    return AS_OK;
}

static int encode_text(const tokenizer *tok, const char *s, int32_t **ids, size_t *n) {
    return tokenizer_encode(tok, s, strlen(s), false, true, ids, n);
}

// For assistant turn k the scored tokens run from the end of the rendered
// prefix (turns before k plus the generation prompt) through the end-of-turn
// token after the answer: exactly what the model emits when it answers.
int sft_encode(const tokenizer *tok, const chat_template *tpl, const sft_example *ex, int32_t max_len, int32_t **tokens,
               uint8_t **mask, int32_t *len) {
    *tokens = NULL, *mask = NULL, *len = 0;
    char *full = chat_render(tpl, ex->msgs, ex->n_msgs, false);
    if (!full) return AS_FAIL;
    int32_t *ids = NULL, *pids = NULL;
    size_t n = 0, pn = 0;
    uint8_t *m = NULL;
    int rc = AS_FAIL;
    if (encode_text(tok, full, &ids, &n)) goto done;
    m = as_calloc(AS_MAX(n, (size_t)1), 1);
    for (size_t k = 0; k < ex->n_msgs; k++) {
        if (strcmp(ex->msgs[k].role, "assistant")) continue;
        // Prefix with the generation prompt, then the same plus the answer text.
        char *prefix = chat_render(tpl, ex->msgs, k, true);
        if (!prefix) goto done;
        const size_t pl = strlen(prefix), cl = strlen(ex->msgs[k].content);
        char *with = as_malloc(pl + cl + 1);
        memcpy(with, prefix, pl);
        memcpy(with + pl, ex->msgs[k].content, cl + 1);
        size_t n_prefix;
        int bad = encode_text(tok, prefix, &pids, &n_prefix);
        free(pids), pids = NULL;
        if (!bad) bad = encode_text(tok, with, &pids, &pn);
        free(prefix), free(with);
        if (bad) goto done;
        // The conversation's tokens must start with these (templates put special
        // tokens at turn boundaries, so tokenisation does not merge across them).
        if (pn >= n || memcmp(pids, ids, sizeof(int32_t) * pn) != 0) {
            as_error("sft_encode: turn %zu: the rendered conversation does not tokenize as its prefix plus the answer", k);
            goto done;
        }
        if (!tokenizer_is_end(tok, ids[pn])) {
            as_error("sft_encode: turn %zu: the answer is not followed by an end-of-turn token (found id %d)", k, ids[pn]);
            goto done;
        }
        for (size_t i = n_prefix; i <= pn; i++) m[i] = 1;
        free(pids), pids = NULL;
    }
    if (max_len > 0 && n > (size_t)max_len) n = (size_t)max_len;
    m[0] = 0; // the first token has no prediction
    *tokens = ids, *mask = m, *len = (int32_t)n;
    ids = NULL, m = NULL;
    rc = AS_OK;
done:
    free(full), free(ids), free(pids), free(m);
    return rc;
}

// ---- the training run ----

#include <math.h>

#include "model/model.h"
#include "train/checkpoint.h"
#include "train/export.h"
#include "train/loop.h"

void sft_config_default(sft_config *c) {
    memset(c, 0, sizeof *c);
    c->lora = true;
    c->lora_cfg = TRAIN_LORA_CONFIG_DEFAULT;
    optim_config_finetune(&c->optim, 2e-4f);
    c->epochs = 1;
    c->batch_size = 8;
    c->micro_batch = 4;
    c->max_len = 1024;
    c->eval_fraction = 0.05;
    c->seed = 42;
    c->precision = TRAIN_PRECISION_F32;
}

typedef struct encoded {
    int32_t *tokens;
    uint8_t *mask;
    int32_t len, n_scored;
} encoded;

// Sum of answer log-probs and scored-token count over sequences idx[0..n),
// micro-batch by micro-batch; with grad, backpropagates dL/dlogp = scale.
// lp (may be NULL) receives each sequence's sum.
static int run_sequences(train_model *m, const encoded *enc, const int64_t *idx, int64_t n, int32_t micro, bool grad, float scale,
                         double *sum_logp, int64_t *n_tok, float *lp_out) {
    for (int64_t i0 = 0; i0 < n; i0 += micro) {
        const int32_t B = (int32_t)AS_MIN((int64_t)micro, n - i0);
        int32_t T = 1;
        for (int32_t b = 0; b < B; b++) T = AS_MAX(T, enc[idx[i0 + b]].len);
        int32_t *tok = as_calloc((size_t)B * (size_t)T, sizeof(int32_t)), len[B > 0 ? B : 1];
        uint8_t *mask = as_calloc((size_t)B * (size_t)T, 1);
        for (int32_t b = 0; b < B; b++) {
            const encoded *e = &enc[idx[i0 + b]];
            memcpy(tok + (int64_t)b * T, e->tokens, sizeof(int32_t) * (size_t)e->len);
            memcpy(mask + (int64_t)b * T, e->mask, (size_t)e->len);
            len[b] = e->len;
        }
        train_batch batch = {.n_seq = B, .n_ctx = T, .tokens = tok, .len = len, .loss_mask = mask, .backward = grad};
        float lp[B > 0 ? B : 1], up[B > 0 ? B : 1];
        int32_t cnt[B > 0 ? B : 1];
        int rc = train_forward(m, &batch, lp, cnt);
        for (int32_t b = 0; b < B && !rc; b++) *sum_logp += lp[b], *n_tok += cnt[b], up[b] = scale;
        if (lp_out && !rc) memcpy(lp_out + i0, lp, sizeof(float) * (size_t)B);
        if (!rc && grad) rc = train_backward(m, up);
        free(tok), free(mask);
        if (rc) return AS_FAIL;
    }
    return AS_OK;
}

static double eval_loss(train_model *m, const encoded *enc, const int64_t *idx, int64_t n, int32_t micro) {
    if (n == 0) return NAN;
    const bool was = m->training;
    train_set_training(m, false);
    double s = 0;
    int64_t t = 0;
    const int rc = run_sequences(m, enc, idx, n, micro, false, 0.0f, &s, &t, NULL);
    train_set_training(m, was);
    return rc || t == 0 ? NAN : -s / (double)t;
}

// What the training loop's callbacks need.
typedef struct sft_run {
    const sft_config *c;
    train_model *m;
    const encoded *enc;
    const int64_t *train_idx, *eval_idx; // the split: indices into enc
    int64_t n_eval;
    FILE *log;
    sft_result *res;
    double sum;                          // the step's summed answer log-probs ...
    int64_t got;                         // ... over this many answer tokens
    int64_t seen;                        // tokens through the model since this process started (throughput)
} sft_run;

// What a micro-batch reports (the training loop gathers them from every
// process, train/loop.h): its sequences' answer log-probs (the step's sum
// adds them in order), answer tokens and tokens; lp holds micro_batch floats.
typedef struct sft_record {
    int32_t n;
    int64_t got, seen;
    float lp[];
} sft_record;
// Whole records, 8-byte aligned one after another.
static size_t sft_record_size(const sft_config *c) { return (sizeof(sft_record) + sizeof(float) * (size_t)c->micro_batch + 7) & ~(size_t)7; }

// loss = -(sum of answer log-probs) / (answer tokens of the step): every
// sequence of the step gets dL/dlogp = -1 / (the step's answer tokens).
static int sft_micro(void *user, const train_loop_step *s, const int64_t *items, int32_t n) {
    sft_run *r = user;
    sft_record *rec = s->record;
    int64_t step_tok = 0;
    for (int64_t i = 0; i < s->n_items; i++) step_tok += r->enc[r->train_idx[s->items[i]]].n_scored;
    int64_t *idx = as_malloc(sizeof(int64_t) * (size_t)n);
    rec->n = n, rec->got = rec->seen = 0;
    for (int32_t i = 0; i < n; i++) idx[i] = r->train_idx[items[i]], rec->seen += r->enc[idx[i]].len;
    double sum = 0;
    const int rc = run_sequences(r->m, r->enc, idx, n, n, true, -1.0f / (float)step_tok, &sum, &rec->got, rec->lp);
    free(idx);
    return rc;
}

static void sft_combine(void *user, const train_loop_step *s, const void *records, int32_t n_micro) {
    sft_run *r = user;
    const size_t rs = sft_record_size(r->c);
    for (int32_t i = 0; i < n_micro; i++) {
        const sft_record *rec = (const sft_record *)((const char *)records + (size_t)i * rs);
        for (int32_t b = 0; b < rec->n; b++) r->sum += rec->lp[b];
        r->got += rec->got, r->seen += rec->seen;
    }
    (void)s;
}

// The log line of the step (and the evaluation loss every eval_every steps and at the end), the progress line.
static int sft_step_done(void *user, const train_loop_step *s) {
    sft_run *r = user;
    const sft_config *c = r->c;
    const double loss = -r->sum / (double)r->got;
    if (s->step - 1 == s->first_step) r->res->first_loss = loss;
    r->res->last_loss = loss;
    r->res->tokens_trained += r->got;
    // Throughput counts every token through the model (prompt and answer), as trainers report it.
    const double tps = (double)r->seen / fmax(s->elapsed_s, 1e-9);
    double ev = NAN;
    if ((c->eval_every > 0 && s->step % c->eval_every == 0) || s->step == s->total) ev = eval_loss(r->m, r->enc, r->eval_idx, r->n_eval, c->micro_batch);
    // A diverged step's NaN loss or norm is written as null (valid JSON).
    as_sbuf line = {0};
    as_sb_printf(&line, "{\"step\": %lld, \"epoch\": %d, \"loss\": ", (long long)s->step, s->epoch);
    as_sb_json_num(&line, 7, loss);
    as_sb_puts(&line, ", \"learning_rate\": ");
    as_sb_json_num(&line, 6, s->lr);
    as_sb_puts(&line, ", \"grad_norm\": ");
    as_sb_json_num(&line, 7, s->grad_norm);
    as_sb_printf(&line, ", \"tokens\": %lld, \"tokens_per_s\": %.1f, \"elapsed_s\": %.2f", (long long)r->got, tps, s->elapsed_s);
    if (!isnan(ev)) {
        as_sb_puts(&line, ", \"eval_loss\": ");
        as_sb_json_num(&line, 7, ev);
        r->res->eval_loss = ev;
    }
    fprintf(r->log, "%s}\n", line.s);
    free(line.s);
    fflush(r->log);
    if (!c->quiet && as_files_writer())
        fprintf(stderr, "\rsft: step %lld/%lld  loss %.4f  lr %.2e  %.0f tok/s  ETA %.0fs%s", (long long)s->step, (long long)s->total, loss,
                s->lr, tps, s->eta_s, s->step == s->total ? "\n" : "");
    r->sum = 0, r->got = 0;
    return AS_OK;
}

// The adapters (PEFT folder) or the model, which the training state goes with.
static int sft_save(void *user, const train_loop_step *s) {
    const sft_run *r = user;
    const sft_config *c = r->c;
    (void)s;
    if (c->lora) return train_lora_save_peft(r->m, c->out_dir, c->model_path);
    char path[4096];
    snprintf(path, sizeof path, "%s/model.gguf", c->out_dir);
    return train_export_gguf(r->m, c->model_path, path, GGML_TYPE_F32);
}

static void sft_saved(void *user, const train_loop_step *s) {
    const sft_run *r = user;
    if (r->c->on_saved) r->c->on_saved(r->c->user, s->step);
}

int sft_train(const sft_config *c, sft_result *res) {
    memset(res, 0, sizeof *res);
    res->eval_loss = NAN;
    if (c->batch_size < 1 || c->micro_batch < 1 || c->epochs < 1 || c->max_len < 2 || !(c->eval_fraction >= 0 && c->eval_fraction < 1))
        return as_error("sft: batch_size, micro_batch, epochs must be >= 1, max_len >= 2 and eval_fraction in [0, 1)");
    model *inf = NULL;
    tokenizer *tok = NULL;
    chat_template tpl = {0};
    sft_data *data = NULL;
    train_model *m = NULL;
    train_loop loop = {0};
    encoded *enc = NULL;
    int64_t *order = NULL, *train_idx = NULL, *eval_idx = NULL, n_enc = 0;
    FILE *log = NULL;
    int rc = AS_FAIL;
    char path[4096];
    // Under mpirun, device cuda is the GPU of each process's local rank, and
    // the gradients' exchange goes GPU to GPU over NCCL (dist/dist.h).
    const as_backend *be = dist_open_device(c->device ? c->device : "cpu");
    // The training model takes the inference model's backend (train_model_from_model).
    if (!be || dist_use_transport(be) || model_load(&inf, c->model_path) || model_use_backend(inf, be) || tokenizer_load(&tok, inf->file) ||
        chat_template_init(&tpl, inf->file, c->chat_template) || sft_data_load(&data, c->data_path) || train_model_from_model(&m, inf))
        goto done;
    train_set_threads(m, c->threads > 0 ? c->threads : kernel_get_threads());
    train_set_checkpointing(m, c->checkpointing);
    train_set_precision(m, c->precision);
    // Encode every example; those whose answers were cut away entirely are dropped.
    enc = as_calloc((size_t)data->n, sizeof *enc);
    for (int64_t i = 0; i < data->n; i++) {
        encoded *e = &enc[n_enc];
        if (sft_encode(tok, &tpl, &data->ex[i], c->max_len, &e->tokens, &e->mask, &e->len)) {
            char why[512];
            snprintf(why, sizeof why, "%s", as_last_error());
            as_error("%s: example %lld: %s", c->data_path, (long long)i + 1, why);
            goto done;
        }
        for (int32_t t = 0; t < e->len; t++) e->n_scored += e->mask[t];
        if (e->n_scored > 0) n_enc++;
        else free(e->tokens), free(e->mask);
    }
    if (n_enc == 0) {
        as_error("%s: no example has answer tokens within max_len %d", c->data_path, c->max_len);
        goto done;
    }
    // Held-out split from a seeded permutation.
    as_rng rng;
    as_rng_seed(&rng, c->seed);
    order = as_malloc(sizeof(int64_t) * (size_t)n_enc);
    train_shuffle(order, n_enc, &rng);
    int64_t n_eval = (int64_t)llround(c->eval_fraction * (double)n_enc);
    if (c->eval_fraction > 0 && n_eval == 0 && n_enc > 1) n_eval = 1;
    const int64_t n_train = n_enc - n_eval;
    eval_idx = order, train_idx = order + n_eval;
    res->train_examples = n_train, res->eval_examples = n_eval;
    if (n_train == 0) {
        as_error("%s: nothing left to train on after the held-out split", c->data_path);
        goto done;
    }
    if (c->lora) {
        train_lora_config lc = c->lora_cfg;
        lc.seed = c->seed ^ 0x5EEDu;
        if (train_lora_attach(m, &lc)) goto done;
    }
    as_rng_seed(&m->rng, c->seed + 1);
    // The training loop; resuming, the trainable weights, optimizer moments,
    // step and both RNG streams come back (the data-order stream as it was when
    // the epoch of that step began).
    snprintf(path, sizeof path, "%s/train_state.safetensors", c->out_dir);
    const train_loop_config loop_cfg = {.n_items = n_train, .epochs = c->epochs, .max_steps = c->max_steps, .step_items = c->batch_size,
                                        .micro_items = c->micro_batch, .optim = c->optim, .state_path = path, .resume = c->resume,
                                        .save_every = c->save_every};
    if (train_loop_init(&loop, m, &loop_cfg, &rng) || as_mkdir_p(c->out_dir)) goto done;
    char log_path[4096];
    snprintf(log_path, sizeof log_path, "%s/log.jsonl", c->out_dir);
    if (c->resume && as_keep_lines(log_path, loop.step)) goto done;
    // Under mpirun rank 0 alone writes (dist/dist.h).
    if (!(log = fopen(as_files_writer() ? log_path : "/dev/null", c->resume ? "a" : "w"))) {
        as_error("%s: cannot open for writing", log_path);
        goto done;
    }
    sft_run run = {.c = c, .m = m, .enc = enc, .train_idx = train_idx, .eval_idx = eval_idx, .n_eval = n_eval, .log = log, .res = res};
    const train_loop_fns fns = {.micro = sft_micro, .record_size = sft_record_size(c),
                                .combine = sft_combine, .step_done = sft_step_done, .save = sft_save, .saved = sft_saved, .user = &run};
    if (train_loop_run(&loop, &fns)) goto done;
    res->steps = loop.step;
    rc = AS_OK;
done:
    if (log) fclose(log);
    train_loop_free(&loop);
    for (int64_t i = 0; enc && i < n_enc; i++) free(enc[i].tokens), free(enc[i].mask);
    free(enc), free(order);
    train_model_free(m);
    sft_data_free(data);
    chat_template_free(&tpl);
    tokenizer_free(tok);
    model_free(inf);
    return rc;
}
