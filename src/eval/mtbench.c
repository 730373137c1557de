// MT-Bench as FastChat runs it (fastchat/llm_judge): gen_model_answer.py for
// the answers (both turns, the second seeing the first answer, per-category
// temperatures, the model's chat template) and gen_judgment.py's single-answer
// grading (single-v1 / single-math-v1 with the reference answers for math,
// reasoning and coding; the *-multi-turn prompts for turn 2), "[[rating]]" parsed.
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "eval/eval_internal.h"
#include "generate/generate.h"
#include "tokenizer/chat.h"
#include "util/common.h"
#include "util/json.h"
#include "util/jsonl.h"

// FastChat's JSON Lines files (questions, judge prompts, reference answers) as one array.
static int read_jsonl_array(const char *path, cJSON **out) {
    as_jsonl r;
    if (as_jsonl_open(&r, path)) return AS_FAIL;
    cJSON *arr = cJSON_CreateArray();
    const int rc = as_jsonl_read_all(&r, arr);
    as_jsonl_close(&r);
    if (rc != AS_OK) { cJSON_Delete(arr); return AS_FAIL; }
    *out = arr;
    return AS_OK;
}

double eval_parse_rating(const char *j) {
    // re.search(r"\[\[(\d+\.?\d*)\]\]"), then r"\[(\d+\.?\d*)\]": the first match.
    for (int pass = 0; pass < 2; pass++) {
        const char *open = pass == 0 ? "[[" : "[", *close = pass == 0 ? "]]" : "]";
        size_t ol = strlen(open), cl = strlen(close);
        for (const char *p = strstr(j, open); p; p = strstr(p + 1, open)) {
            const char *q = p + ol, *d = q;
            while (isdigit((unsigned char)*q)) q++;
            if (q == d) continue;
            if (*q == '.') {
                q++;
                while (isdigit((unsigned char)*q)) q++;
            }
            if (!strncmp(q, close, cl)) return strtod(d, NULL);
        }
    }
    return -1;
}

// Renders a chat and encodes it as the chat command does (special tokens parsed).
static int encode_chat(const tokenizer *tok, const chat_template *ct, const chat_message *msgs, size_t n, int32_t **ids,
                       size_t *n_ids) {
    char *text = chat_render(ct, msgs, n, true);
    if (!text) return AS_FAIL;
    int rc = tokenizer_encode(tok, text, strlen(text), false, true, ids, n_ids);
    free(text);
    return rc;
}

static char *strip_dup(const char *s) {
    if (!s) return as_strdup("");
    size_t n = strlen(s);
    while (n && isspace((unsigned char)*s)) s++, n--;
    while (n && isspace((unsigned char)s[n - 1])) n--;
    return as_strndup(s, n);
}

typedef struct mt_progress { const char *what; double t0; int64_t total; bool on; } mt_progress;
static void mt_on_progress(void *user, const generate_progress *p) {
    mt_progress *m = user;
    if (!m->on) return;
    double el = as_time() - m->t0, rate = el > 0 ? (double)p->done / el : 0;
    fprintf(stderr, "\r%s: %lld/%lld, %.2f answers/s, %.0f tokens/s, ETA %.0fs   ", m->what, (long long)p->done,
            (long long)m->total, rate, p->tokens_per_s, rate > 0 ? (double)(m->total - p->done) / rate : 0);
    fflush(stderr);
}

// Generates one answer per conversation, at precision prec; texts stripped (FastChat's output.strip()).
static int run_chats(model *m, kernel_precision prec, const tokenizer *tok, const chat_template *ct, chat_message **convs,
                     const size_t *n_msgs, const float *temps, int64_t n, int32_t max_new, uint64_t seed, const char *what,
                     bool progress, char **answers) {
    generate_request *req = as_calloc((size_t)AS_MAX(n, 1), sizeof *req);
    int32_t **ids = as_calloc((size_t)AS_MAX(n, 1), sizeof *ids);
    int rc = AS_OK;
    for (int64_t i = 0; i < n && rc == AS_OK; i++) {
        size_t k = 0;
        rc = encode_chat(tok, ct, convs[i], n_msgs[i], &ids[i], &k);
        sampler_params sp = sampler_params_greedy();
        if (temps[i] >= 1e-4f) {
            // FastChat samples with the temperature alone (top_p 1, no top-k).
            sp = sampler_params_default();
            sp.temperature = temps[i], sp.top_k = 0, sp.top_p = 1, sp.min_p = 0, sp.repeat_penalty = 1;
        }
        sp.seed = seed + (uint64_t)i;
        int32_t mn = max_new;
        if ((int64_t)k + mn > m->cfg.n_ctx_train) mn = (int32_t)AS_MAX(1, (int64_t)m->cfg.n_ctx_train - (int64_t)k);
        if ((int64_t)k >= m->cfg.n_ctx_train) rc = as_error("%s %lld: the prompt has %zu tokens, the model's context is %d", what, (long long)i, k, m->cfg.n_ctx_train);
        req[i] = (generate_request){.prompt = ids[i], .n_prompt = (int64_t)k, .sampling = sp, .max_new_tokens = mn};
    }
    generate_result *out = as_calloc((size_t)AS_MAX(n, 1), sizeof *out);
    mt_progress mp = {.what = what, .t0 = as_time(), .total = n, .on = progress};
    if (rc == AS_OK) {
        generate_options go = generate_options_default();
        go.precision = prec;
        go.batch_size = 16;
        go.on_progress = mt_on_progress;
        go.user = &mp;
        rc = generate_run(m, tok, req, n, &go, out);
        if (progress) fprintf(stderr, "\n");
    }
    for (int64_t i = 0; i < n; i++) {
        if (rc == AS_OK) answers[i] = strip_dup(out[i].text);
        generate_result_free(&out[i]);
        free(ids[i]);
    }
    free(out), free(ids), free(req);
    return rc;
}

static void str_replace_all(char **s, const char *key, const char *val) {
    size_t kl = strlen(key), vl = strlen(val);
    for (size_t off = 0;;) {
        char *at = strstr(*s + off, key);
        if (!at) return;
        size_t pos = (size_t)(at - *s), n = strlen(*s);
        char *t = as_malloc(n - kl + vl + 1);
        memcpy(t, *s, pos);
        memcpy(t + pos, val, vl);
        memcpy(t + pos + vl, at + kl, n - pos - kl + 1);
        free(*s);
        *s = t;
        off = pos + vl;
    }
}

static const cJSON *find_prompt(const cJSON *prompts, const char *name) {
    const cJSON *p;
    cJSON_ArrayForEach(p, prompts) {
        const cJSON *nm = cJSON_GetObjectItem(p, "name");
        if (cJSON_IsString(nm) && !strcmp(nm->valuestring, name)) return p;
    }
    return NULL;
}

static const char *turn_text(const cJSON *obj, const char *field, int turn) {
    const cJSON *t = cJSON_GetObjectItem(obj, field);
    const cJSON *x = cJSON_IsArray(t) ? cJSON_GetArrayItem(t, turn) : NULL;
    return cJSON_IsString(x) ? x->valuestring : NULL;
}

static bool needs_ref(const char *cat) { return !strcmp(cat, "math") || !strcmp(cat, "reasoning") || !strcmp(cat, "coding"); }

int eval_run_mt_bench(model *m, const tokenizer *tok, const eval_task *t, const eval_options *o, const char *data_dir,
                      cJSON *results, cJSON *nshot, cJSON *nsamples) {
    char *qpath = eval_task_data_path(t, data_dir);
    cJSON *qs = NULL, *refs = NULL, *prompts = NULL;
    int rc = read_jsonl_array(qpath, &qs);
    for (int64_t i = 0; rc == AS_OK && i < o->offset && cJSON_GetArraySize(qs) > 0; i++) cJSON_DeleteItemFromArray(qs, 0); // --offset
    int64_t n = rc == AS_OK ? cJSON_GetArraySize(qs) : 0;
    if (o->limit > 0) n = AS_MIN(n, o->limit);
    chat_template ct = {0}, jct = {0};
    if (rc == AS_OK) rc = chat_template_init(&ct, m->file, NULL);
    const char **q1 = as_calloc((size_t)AS_MAX(n, 1), sizeof *q1), **q2 = as_calloc((size_t)AS_MAX(n, 1), sizeof *q2);
    const char **cat = as_calloc((size_t)AS_MAX(n, 1), sizeof *cat);
    int64_t *qid = as_calloc((size_t)AS_MAX(n, 1), sizeof *qid);
    float *temps = as_calloc((size_t)AS_MAX(n, 1), sizeof *temps);
    for (int64_t i = 0; i < n && rc == AS_OK; i++) {
        const cJSON *q = cJSON_GetArrayItem(qs, (int)i);
        const cJSON *id = cJSON_GetObjectItem(q, "question_id"), *c = cJSON_GetObjectItem(q, "category");
        q1[i] = turn_text(q, "turns", 0), q2[i] = turn_text(q, "turns", 1);
        if (!cJSON_IsNumber(id) || !cJSON_IsString(c) || !q1[i] || !q2[i]) {
            rc = as_error("%s:%lld: expected question_id, category and two turns", qpath, (long long)i + 1);
            break;
        }
        qid[i] = (int64_t)id->valuedouble, cat[i] = c->valuestring;
        const cJSON *tv = t->temperatures ? cJSON_GetObjectItemCaseSensitive(t->temperatures, cat[i]) : NULL;
        temps[i] = cJSON_IsString(tv) ? strtof(tv->valuestring, NULL) : 0.7f; // FastChat's default for other categories
    }
    const int32_t max_new = o->max_new_tokens > 0 ? o->max_new_tokens : t->max_gen_toks;
    char **a1 = as_calloc((size_t)AS_MAX(n, 1), sizeof *a1), **a2 = as_calloc((size_t)AS_MAX(n, 1), sizeof *a2);
    chat_message (*conv)[3] = as_calloc((size_t)AS_MAX(n, 1), sizeof *conv);
    chat_message **convp = as_calloc((size_t)AS_MAX(n, 1), sizeof *convp);
    size_t *nm = as_calloc((size_t)AS_MAX(n, 1), sizeof *nm);
    if (rc == AS_OK) {
        for (int64_t i = 0; i < n; i++) {
            conv[i][0] = (chat_message){"user", q1[i]};
            convp[i] = conv[i], nm[i] = 1;
        }
        rc = run_chats(m, o->precision, tok, &ct, convp, nm, temps, n, max_new, o->seed, "mt_bench turn 1", o->progress, a1);
    }
    if (rc == AS_OK) {
        for (int64_t i = 0; i < n; i++) {
            conv[i][1] = (chat_message){"assistant", a1[i]};
            conv[i][2] = (chat_message){"user", q2[i]};
            nm[i] = 3;
        }
        rc = run_chats(m, o->precision, tok, &ct, convp, nm, temps, n, max_new, o->seed + 1000003, "mt_bench turn 2", o->progress, a2);
    }
    const char *model_id = o->model_id ? o->model_id : "alphaspin";
    if (rc == AS_OK && o->mt_bench_answers) {
        as_atomic_file af;
        rc = as_atomic_open(&af, o->mt_bench_answers);
        as_rng rng;
        as_rng_seed(&rng, o->seed);
        static const char alnum[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        for (int64_t i = 0; i < n && rc == AS_OK; i++) {
            char aid[23];
            for (int k = 0; k < 22; k++) aid[k] = alnum[as_rng_below(&rng, sizeof alnum - 1)];
            aid[22] = 0;
            cJSON *a = cJSON_CreateObject();
            cJSON_AddNumberToObject(a, "question_id", (double)qid[i]);
            cJSON_AddStringToObject(a, "answer_id", aid);
            cJSON_AddStringToObject(a, "model_id", model_id);
            cJSON *chs = cJSON_AddArrayToObject(a, "choices");
            cJSON *ch = cJSON_CreateObject();
            cJSON_AddNumberToObject(ch, "index", 0);
            cJSON *turns = cJSON_AddArrayToObject(ch, "turns");
            cJSON_AddItemToArray(turns, cJSON_CreateString(a1[i]));
            cJSON_AddItemToArray(turns, cJSON_CreateString(a2[i]));
            cJSON_AddItemToArray(chs, ch);
            cJSON_AddNumberToObject(a, "tstamp", (double)time(NULL));
            char *line = as_json_print(a, false);
            fprintf(af.fp, "%s\n", line);
            free(line);
            cJSON_Delete(a);
        }
        if (rc == AS_OK) rc = as_atomic_commit(&af);
    }
    cJSON *e = rc == AS_OK ? cJSON_AddObjectToObject(results, t->name) : NULL;
    if (e) {
        cJSON_AddStringToObject(e, "alias", t->name);
        cJSON_AddNumberToObject(e, "n_questions", (double)n);
        if (o->mt_bench_answers) cJSON_AddStringToObject(e, "answers_file", o->mt_bench_answers);
        cJSON_AddNumberToObject(nshot, t->name, 0);
        cJSON *ns = cJSON_AddObjectToObject(nsamples, t->name);
        cJSON_AddNumberToObject(ns, "original", cJSON_GetArraySize(qs));
        cJSON_AddNumberToObject(ns, "effective", (double)n);
    }
    // ---- local judge ----
    if (rc == AS_OK && o->judge) {
        char *ppath = eval_task_path(t, data_dir, t->judge_prompts ? t->judge_prompts : "mt_bench/judge_prompts.jsonl");
        char *rpath = eval_task_path(t, data_dir, t->reference ? t->reference : "mt_bench/reference_answer_gpt-4.jsonl");
        rc = read_jsonl_array(ppath, &prompts);
        if (rc == AS_OK) rc = read_jsonl_array(rpath, &refs);
        if (rc == AS_OK) rc = chat_template_init(&jct, o->judge->file, NULL);
        const int64_t nj = 2 * n;
        chat_message (*jconv)[2] = as_calloc((size_t)AS_MAX(nj, 1), sizeof *jconv);
        chat_message **jp = as_calloc((size_t)AS_MAX(nj, 1), sizeof *jp);
        size_t *jn = as_calloc((size_t)AS_MAX(nj, 1), sizeof *jn);
        char **user = as_calloc((size_t)AS_MAX(nj, 1), sizeof *user), **judgment = as_calloc((size_t)AS_MAX(nj, 1), sizeof *judgment);
        const char **pname = as_calloc((size_t)AS_MAX(nj, 1), sizeof *pname);
        float *jt = as_calloc((size_t)AS_MAX(nj, 1), sizeof *jt);
        for (int64_t i = 0; i < n && rc == AS_OK; i++) {
            const cJSON *ref = NULL, *r;
            if (needs_ref(cat[i]))
                cJSON_ArrayForEach(r, refs) {
                    const cJSON *id = cJSON_GetObjectItem(r, "question_id");
                    if (cJSON_IsNumber(id) && (int64_t)id->valuedouble == qid[i]) ref = cJSON_GetArrayItem(cJSON_GetObjectItem(r, "choices"), 0);
                }
            const char *r1 = ref ? turn_text(ref, "turns", 0) : NULL, *r2 = ref ? turn_text(ref, "turns", 1) : NULL;
            const bool math = r1 && r2;
            for (int turn = 0; turn < 2 && rc == AS_OK; turn++) {
                const int64_t j = 2 * i + turn;
                pname[j] = turn == 0 ? (math ? "single-math-v1" : "single-v1") : (math ? "single-math-v1-multi-turn" : "single-v1-multi-turn");
                const cJSON *pr = find_prompt(prompts, pname[j]);
                const cJSON *sys = pr ? cJSON_GetObjectItem(pr, "system_prompt") : NULL, *tpl = pr ? cJSON_GetObjectItem(pr, "prompt_template") : NULL;
                if (!cJSON_IsString(sys) || !cJSON_IsString(tpl)) { rc = as_error("%s: no judge prompt '%s'", ppath, pname[j]); break; }
                char *u = as_strdup(tpl->valuestring);
                if (turn == 0) {
                    str_replace_all(&u, "{question}", q1[i]);
                    if (math) str_replace_all(&u, "{ref_answer_1}", r1);
                    str_replace_all(&u, "{answer}", a1[i]);
                } else {
                    str_replace_all(&u, "{question_1}", q1[i]);
                    str_replace_all(&u, "{question_2}", q2[i]);
                    if (math) str_replace_all(&u, "{ref_answer_1}", r1), str_replace_all(&u, "{ref_answer_2}", r2);
                    str_replace_all(&u, "{answer_1}", a1[i]);
                    str_replace_all(&u, "{answer_2}", a2[i]);
                }
                user[j] = u;
                jconv[j][0] = (chat_message){"system", sys->valuestring};
                jconv[j][1] = (chat_message){"user", u};
                jp[j] = jconv[j], jn[j] = 2;
            }
        }
        if (rc == AS_OK) rc = run_chats(o->judge, KERNEL_PRECISION_F32, o->judge_tok, &jct, jp, jn, jt, nj, o->max_new_tokens > 0 ? o->max_new_tokens : 2048, o->seed, "mt_bench judge", o->progress, judgment);
        if (rc == AS_OK) {
            // FastChat's show_result: mean over the judgments with a rating (!= -1).
            static const char *const CATS[] = {"writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities"};
            double sum = 0, cnt = 0, st[2] = {0}, ct2[2] = {0}, sc[8] = {0}, cc[8] = {0};
            as_atomic_file af = {0};
            if (o->mt_bench_judgments) rc = as_atomic_open(&af, o->mt_bench_judgments);
            for (int64_t j = 0; j < nj && rc == AS_OK; j++) {
                const double score = eval_parse_rating(judgment[j]);
                const int64_t i = j / 2;
                if (score >= 0) {
                    sum += score, cnt++, st[j % 2] += score, ct2[j % 2]++;
                    for (int k = 0; k < 8; k++) if (!strcmp(cat[i], CATS[k])) sc[k] += score, cc[k]++;
                }
                if (af.fp) {
                    cJSON *jo = cJSON_CreateObject();
                    cJSON_AddNumberToObject(jo, "question_id", (double)qid[i]);
                    cJSON_AddStringToObject(jo, "model", model_id);
                    cJSON *jj = cJSON_AddArrayToObject(jo, "judge");
                    cJSON_AddItemToArray(jj, cJSON_CreateString(o->judge->cfg.arch_name));
                    cJSON_AddItemToArray(jj, cJSON_CreateString(pname[j]));
                    cJSON_AddStringToObject(jo, "user_prompt", user[j]);
                    cJSON_AddStringToObject(jo, "judgment", judgment[j]);
                    cJSON_AddNumberToObject(jo, "score", score);
                    cJSON_AddNumberToObject(jo, "turn", (double)(j % 2 + 1));
                    cJSON_AddNumberToObject(jo, "tstamp", (double)time(NULL));
                    char *line = as_json_print(jo, false);
                    fprintf(af.fp, "%s\n", line);
                    free(line);
                    cJSON_Delete(jo);
                }
            }
            if (rc == AS_OK && af.fp) rc = as_atomic_commit(&af);
            if (rc == AS_OK) {
                cJSON_AddNumberToObject(e, "score,none", cnt ? sum / cnt : -1);
                cJSON_AddNumberToObject(e, "score_turn1,none", ct2[0] ? st[0] / ct2[0] : -1);
                cJSON_AddNumberToObject(e, "score_turn2,none", ct2[1] ? st[1] / ct2[1] : -1);
                for (int k = 0; k < 8; k++) {
                    char key[64];
                    snprintf(key, sizeof key, "score_%s,none", CATS[k]);
                    if (cc[k]) cJSON_AddNumberToObject(e, key, sc[k] / cc[k]);
                }
                cJSON_AddNumberToObject(e, "n_judgments_parsed", cnt);
            }
        }
        for (int64_t j = 0; j < nj; j++) free(user[j]), free(judgment[j]);
        free(jconv), free(jp), free(jn), free(user), free(judgment), free(pname), free(jt), free(ppath), free(rpath);
    }
    for (int64_t i = 0; i < n; i++) free(a1[i]), free(a2[i]);
    free(a1), free(a2), free(conv), free(convp), free(nm), free(q1), free(q2), free(cat), free(qid), free(temps), free(qpath);
    chat_template_free(&ct);
    chat_template_free(&jct);
    cJSON_Delete(qs), cJSON_Delete(refs), cJSON_Delete(prompts);
    return rc;
}
