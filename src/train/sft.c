// SFT data layouts and chat-template encoding with answer-only loss masks.
#include "train/sft.h"

#include <cjson/cJSON.h>
#include <string.h>

#include "util/common.h"

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
static int parse_line(const char *path, int64_t line, const char *text, size_t len, sft_example *e) {
    cJSON *o = cJSON_ParseWithLength(text, len);
    int rc = AS_FAIL;
    if (!o || !cJSON_IsObject(o)) {
        as_error("%s:%lld: not a JSON object", path, (long long)line);
        goto done;
    }
    const cJSON *msgs = cJSON_GetObjectItem(o, "messages");
    if (msgs) {
        if (!cJSON_IsArray(msgs) || cJSON_GetArraySize(msgs) == 0) {
            as_error("%s:%lld: messages: expected a non-empty list", path, (long long)line);
            goto done;
        }
        const cJSON *m;
        int i = 0;
        bool has_answer = false;
        cJSON_ArrayForEach(m, msgs) {
            const char *role = str_field(m, "role"), *content = str_field(m, "content");
            if (!role || !content) {
                as_error("%s:%lld: messages[%d]: expected string fields role and content", path, (long long)line, i);
                goto done;
            }
            if (strcmp(role, "system") && strcmp(role, "user") && strcmp(role, "assistant")) {
                as_error("%s:%lld: messages[%d]: role '%s' (expected system, user or assistant)", path, (long long)line, i, role);
                goto done;
            }
            has_answer |= !strcmp(role, "assistant");
            add_msg(e, role, content);
            i++;
        }
        if (!has_answer) {
            as_error("%s:%lld: messages: no assistant turn to train on", path, (long long)line);
            goto done;
        }
    } else {
        const char *q = str_field(o, "prompt"), *a = str_field(o, "response");
        if (!q || !a) q = str_field(o, "question"), a = str_field(o, "answer");
        if (!q || !a) {
            as_error("%s:%lld: expected {messages}, {prompt, response} or {question, answer} with string values", path, (long long)line);
            goto done;
        }
        add_msg(e, "user", q);
        add_msg(e, "assistant", a);
    }
    rc = AS_OK;
done:
    cJSON_Delete(o);
    return rc;
}

int sft_data_load(sft_data **out, const char *path) {
    *out = NULL;
    char *text;
    size_t size;
    if (as_read_file(path, &text, &size)) return AS_FAIL;
    sft_data *d = as_calloc(1, sizeof *d);
    int64_t cap = 0, line = 0;
    for (size_t pos = 0; pos < size;) {
        const char *nl = memchr(text + pos, '\n', size - pos);
        const size_t end = nl ? (size_t)(nl - text) : size;
        line++;
        size_t b = pos;
        while (b < end && (text[b] == ' ' || text[b] == '\t' || text[b] == '\r')) b++;
        if (b < end) {
            if (d->n == cap) {
                cap = cap ? 2 * cap : 256;
                d->ex = as_realloc(d->ex, sizeof *d->ex * (size_t)cap);
            }
            sft_example *e = &d->ex[d->n];
            memset(e, 0, sizeof *e);
            if (parse_line(path, line, text + pos, end - pos, e)) {
                example_free(e);
                free(text);
                sft_data_free(d);
                return AS_FAIL;
            }
            d->n++;
        }
        pos = end + 1;
    }
    free(text);
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
