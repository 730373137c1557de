// Preference pairs: encoding through the chat template and the two JSONL layouts.
#include "spin/pairs.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <string.h>

#include "train/sft.h"
#include "util/common.h"
#include "util/json.h"
#include "util/jsonl.h"

static void pair_free(spin_pair *p);

static void copy_msgs(chat_message **dst, const chat_message *src, int32_t n) {
    *dst = as_calloc((size_t)(n > 0 ? n : 1), sizeof **dst);
    for (int32_t i = 0; i < n; i++) (*dst)[i].role = as_strdup(src[i].role), (*dst)[i].content = as_strdup(src[i].content);
}

spin_pair *spin_pairs_add(spin_pairs *ps, const chat_message *prompt, int32_t n_prompt, const char *chosen, const char *rejected,
                          int32_t iterate) {
    if (ps->n == ps->cap) {
        ps->cap = ps->cap ? 2 * ps->cap : 64;
        ps->p = as_realloc(ps->p, sizeof *ps->p * (size_t)ps->cap);
    }
    spin_pair *p = &ps->p[ps->n++];
    memset(p, 0, sizeof *p);
    copy_msgs(&p->prompt, prompt, n_prompt);
    p->n_prompt = n_prompt;
    p->chosen = as_strdup(chosen);
    p->rejected = as_strdup(rejected);
    p->iterate = iterate;
    p->ref_t_w = p->ref_t_l = p->ref_0_w = p->ref_0_l = NAN;
    return p;
}

void spin_seq_free(spin_seq *s) {
    free(s->tokens), free(s->mask);
    memset(s, 0, sizeof *s);
}

void spin_pairs_free(spin_pairs *ps) {
    for (int64_t i = 0; i < ps->n; i++) pair_free(&ps->p[i]);
    free(ps->p);
    memset(ps, 0, sizeof *ps);
}

int spin_encode_answer(const tokenizer *tok, const chat_template *tpl, const chat_message *prompt, int32_t n_prompt,
                       const char *answer, int32_t max_answer, spin_seq *out, int32_t *prompt_len) {
    memset(out, 0, sizeof *out);
    chat_message *msgs = as_malloc(sizeof *msgs * (size_t)(n_prompt + 1));
    memcpy(msgs, prompt, sizeof *msgs * (size_t)n_prompt);
    msgs[n_prompt] = (chat_message){"assistant", answer};
    sft_example ex = {msgs, (size_t)n_prompt + 1};
    int rc = sft_encode(tok, tpl, &ex, 0, &out->tokens, &out->mask, &out->len);
    free(msgs);
    if (rc) return AS_FAIL;
    // The prompt: its rendering with the generation prompt is a prefix of the
    // conversation's tokens (sft_encode checked it for this turn).
    char *pr = chat_render(tpl, prompt, (size_t)n_prompt, true);
    int32_t *ids = NULL;
    size_t pn = 0;
    if (!pr || tokenizer_encode(tok, pr, strlen(pr), false, true, &ids, &pn)) {
        free(pr);
        spin_seq_free(out);
        return AS_FAIL;
    }
    free(pr), free(ids);
    // Earlier assistant turns are context, not the answer being compared.
    for (size_t i = 0; i < pn && i < (size_t)out->len; i++) out->mask[i] = 0;
    if (max_answer > 0 && (int64_t)pn + max_answer < out->len) out->len = (int32_t)pn + max_answer;
    out->n_scored = 0;
    for (int32_t i = 0; i < out->len; i++) out->n_scored += out->mask[i];
    if (prompt_len) *prompt_len = (int32_t)pn;
    if (out->n_scored == 0) {
        spin_seq_free(out);
        return as_error("the answer has no tokens to score");
    }
    return AS_OK;
}

int spin_pairs_encode(spin_pairs *ps, const tokenizer *tok, const chat_template *tpl, int32_t max_answer) {
    for (int64_t i = 0; i < ps->n; i++) {
        spin_pair *p = &ps->p[i];
        spin_seq_free(&p->w), spin_seq_free(&p->l);
        if (spin_encode_answer(tok, tpl, p->prompt, p->n_prompt, p->chosen, max_answer, &p->w, NULL) ||
            spin_encode_answer(tok, tpl, p->prompt, p->n_prompt, p->rejected, max_answer, &p->l, NULL)) {
            char why[512];
            snprintf(why, sizeof why, "%s", as_last_error());
            return as_error("pair %lld: %s", (long long)i + 1, why);
        }
    }
    return AS_OK;
}

static void pair_free(spin_pair *p) {
    for (int32_t j = 0; j < p->n_prompt; j++) free((char *)p->prompt[j].role), free((char *)p->prompt[j].content);
    free(p->prompt), free(p->chosen), free(p->rejected);
    spin_seq_free(&p->w), spin_seq_free(&p->l);
}

int64_t spin_pairs_encode_or_drop(spin_pairs *ps, const tokenizer *tok, const chat_template *tpl, int32_t max_answer) {
    int64_t kept = 0, dropped = 0;
    for (int64_t i = 0; i < ps->n; i++) {
        spin_pair *p = &ps->p[i];
        spin_seq_free(&p->w), spin_seq_free(&p->l);
        if (spin_encode_answer(tok, tpl, p->prompt, p->n_prompt, p->chosen, max_answer, &p->w, NULL) ||
            spin_encode_answer(tok, tpl, p->prompt, p->n_prompt, p->rejected, max_answer, &p->l, NULL)) {
            pair_free(p);
            dropped++;
            continue;
        }
        ps->p[kept++] = *p;
    }
    ps->n = kept;
    return dropped;
}

// ---- files ----

static cJSON *msgs_json(const chat_message *m, int32_t n, const char *answer) {
    cJSON *a = cJSON_CreateArray();
    for (int32_t i = 0; i <= n; i++) {
        if (i == n && !answer) break;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "role", i < n ? m[i].role : "assistant");
        cJSON_AddStringToObject(o, "content", i < n ? m[i].content : answer);
        cJSON_AddItemToArray(a, o);
    }
    return a;
}

static void add_num(cJSON *o, const char *key, double v) {
    if (isfinite(v)) cJSON_AddNumberToObject(o, key, v);
    else cJSON_AddNullToObject(o, key);
}

static int write_line(as_atomic_file *af, cJSON *o) {
    char *s = as_json_print(o, false);
    cJSON_Delete(o);
    int bad = fputs(s, af->fp) < 0 || fputc('\n', af->fp) == EOF;
    free(s);
    return bad ? as_error("%s: write failed", af->path) : 0;
}

int spin_pairs_write(const spin_pairs *ps, spin_ref_mode ref, double alpha, const char *spin_path, const char *trl_path) {
    as_atomic_file a, b;
    if (as_atomic_open(&a, spin_path)) return AS_FAIL;
    if (as_atomic_open(&b, trl_path)) {
        as_atomic_abort(&a);
        return AS_FAIL;
    }
    for (int64_t i = 0; i < ps->n; i++) {
        const spin_pair *p = &ps->p[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToObject(o, "real", msgs_json(p->prompt, p->n_prompt, p->chosen));
        cJSON_AddItemToObject(o, "generated", msgs_json(p->prompt, p->n_prompt, p->rejected));
        cJSON_AddNumberToObject(o, "iterate", p->iterate);
        cJSON *t = cJSON_CreateObject();
        cJSON_AddItemToObject(t, "prompt", msgs_json(p->prompt, p->n_prompt, NULL));
        cJSON_AddItemToObject(t, "chosen", msgs_json(NULL, 0, p->chosen));
        cJSON_AddItemToObject(t, "rejected", msgs_json(NULL, 0, p->rejected));
        add_num(t, "reference_chosen_logps", spin_ref_logp(ref, alpha, p->ref_t_w, p->ref_0_w));
        add_num(t, "reference_rejected_logps", spin_ref_logp(ref, alpha, p->ref_t_l, p->ref_0_l));
        add_num(t, "ref_t_chosen_logps", p->ref_t_w);
        add_num(t, "ref_t_rejected_logps", p->ref_t_l);
        add_num(t, "ref_0_chosen_logps", p->ref_0_w);
        add_num(t, "ref_0_rejected_logps", p->ref_0_l);
        cJSON_AddNumberToObject(t, "iterate", p->iterate);
        if (write_line(&a, o) || write_line(&b, t)) {
            as_atomic_abort(&a), as_atomic_abort(&b);
            return AS_FAIL;
        }
    }
    if (as_atomic_commit(&a)) {
        as_atomic_abort(&b);
        return AS_FAIL;
    }
    return as_atomic_commit(&b);
}

static int read_msgs(const cJSON *a, chat_message **out, int32_t *n) {
    *out = NULL, *n = 0;
    if (!cJSON_IsArray(a)) return -1;
    const int32_t k = cJSON_GetArraySize(a);
    chat_message *m = as_calloc((size_t)(k > 0 ? k : 1), sizeof *m);
    int32_t i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, a) {
        const cJSON *r = cJSON_GetObjectItem(it, "role"), *c = cJSON_GetObjectItem(it, "content");
        if (!cJSON_IsString(r) || !cJSON_IsString(c)) {
            free(m);
            return -1;
        }
        m[i].role = r->valuestring, m[i].content = c->valuestring; // borrowed from the JSON tree
        i++;
    }
    *out = m, *n = k;
    return 0;
}

static float read_num(const cJSON *o, const char *key, int *bad) {
    const cJSON *v = cJSON_GetObjectItem(o, key);
    if (cJSON_IsNull(v)) return NAN;
    if (!cJSON_IsNumber(v)) {
        *bad = 1;
        return NAN;
    }
    return (float)v->valuedouble;
}

int spin_pairs_read_trl(spin_pairs *ps, const char *path, int32_t iterate) {
    as_jsonl r;
    if (as_jsonl_open(&r, path)) return AS_FAIL;
    cJSON *o;
    int got;
    while ((got = as_jsonl_next(&r, &o)) > 0) {
        chat_message *prompt = NULL, *ch = NULL, *rj = NULL;
        int32_t np, nc, nr;
        const cJSON *it = cJSON_GetObjectItem(o, "iterate");
        if (read_msgs(cJSON_GetObjectItem(o, "prompt"), &prompt, &np)) got = as_jsonl_error(&r, "prompt: expected a list of messages");
        else if (read_msgs(cJSON_GetObjectItem(o, "chosen"), &ch, &nc) || nc != 1) got = as_jsonl_error(&r, "chosen: expected one message");
        else if (read_msgs(cJSON_GetObjectItem(o, "rejected"), &rj, &nr) || nr != 1) got = as_jsonl_error(&r, "rejected: expected one message");
        else if (!cJSON_IsNumber(it)) got = as_jsonl_error(&r, "iterate: expected a number");
        else if (iterate < 0 || it->valueint == iterate) {
            int bad = 0;
            spin_pair *p = spin_pairs_add(ps, prompt, np, ch[0].content, rj[0].content, it->valueint);
            p->ref_t_w = read_num(o, "ref_t_chosen_logps", &bad);
            p->ref_t_l = read_num(o, "ref_t_rejected_logps", &bad);
            p->ref_0_w = read_num(o, "ref_0_chosen_logps", &bad);
            p->ref_0_l = read_num(o, "ref_0_rejected_logps", &bad);
            if (bad) got = as_jsonl_error(&r, "ref_*_logps: expected numbers or null");
        }
        free(prompt), free(ch), free(rj);
        cJSON_Delete(o);
        if (got < 0) break;
    }
    as_jsonl_close(&r);
    return got < 0 ? AS_FAIL : AS_OK;
}
