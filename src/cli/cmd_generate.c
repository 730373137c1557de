// alphaspin generate: one prompt streamed to stdout, or a JSONL file of prompts
// generated in batches (continuous batching) with a progress line.
#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "dist/dist_generate.h"
#include "generate/generate.h"
#include "tokenizer/chat.h"
#include "util/common.h"
#include "util/json.h"
#include "util/jsonl.h"

static void usage(FILE *out) {
    sampler_params d = sampler_params_default();
    fprintf(out,
            "usage: alphaspin generate [--model FILE.gguf] (--prompt TEXT | --prompts FILE.jsonl --out FILE.jsonl) [options]\n\n"
            "Continues a prompt and streams the text to stdout, or generates a whole file of prompts in\n"
            "batches, writing one JSON line per prompt (the input's fields plus \"output\", \"n_tokens\",\n"
            "\"finish\" and \"logprob\") atomically to --out, with a progress line on stderr.\n"
            "An input line is {\"prompt\": TEXT} or {\"messages\": [{\"role\", \"content\"}, ...]} (chat).\n\n"
            "  --model FILE|DIR     GGUF file or Hugging Face folder (default: the fetched SmolLM2-135M-Instruct)\n"
            "  --prompt TEXT        a single prompt\n"
            "  --prompts FILE       JSONL file of prompts; needs --out\n"
            "  --out FILE           output JSONL (written atomically when all prompts are done)\n"
            "  --chat               wrap each prompt as a user turn with the model's chat template\n"
            "  --system TEXT        system prompt for --chat (default: the template's own, if any)\n"
            "  --chat-template T    chatml | gemma | llama3, when the model's template is not recognised\n"
            "  --max-new-tokens N   default 128\n"
            "  --temperature T      default %.2g (0: greedy)\n"
            "  --top-k K            default %d (0: off)\n"
            "  --top-p P            default %.2g (1: off)\n"
            "  --min-p P            default %.2g (0: off)\n"
            "  --repeat-penalty R   default %.2g (1: off)\n"
            "  --repeat-last-n N    default %d (-1: whole sequence)\n"
            "  --seed S             default %llu; request i of a file uses S + i\n"
            "  --greedy             same as --temperature 0\n"
            "  --stop TEXT          stop when TEXT is generated (repeatable)\n"
            "  --batch-size N       sequences decoded together (default 8)\n"
            "  --precision P        q8 (default: 8-bit activations like llama.cpp; fast, and a sequence's tokens\n"
            "                       do not depend on what else is in the batch), f32 (exact fp32 activations)\n"
            "                       or bf16 (bf16 operands, fp32 sums; on AMX CPUs the fastest for prompts\n"
            "                       and batched decoding, batch-invariant too; slow for one sequence)\n"
            "  --threads N          threads (default: all cores)\n"
            "  --device D           " CLI_DEVICE_HELP "\n"
            "  --help               this text\n",
            d.temperature, d.top_k, d.top_p, d.min_p, d.repeat_penalty, d.repeat_last_n,
            (unsigned long long)d.seed);
}

typedef struct gen_opts {
    const char *model_path, *prompt, *prompts_path, *out_path, *system, *chat_template;
    bool chat, quiet;
    sampler_params sp;
    long max_new, batch, threads;
    kernel_precision prec;
    const char *stop[16];
    int n_stop;
} gen_opts;

// Text -> prompt ids, through the chat template when asked.
static int build_prompt(const tokenizer *tok, const chat_template *ct, const char *system, const chat_message *msgs,
                        size_t n_msgs, int32_t **ids, size_t *n_ids) {
    char *text;
    if (ct) {
        chat_message *all = as_malloc((n_msgs + 1) * sizeof *all);
        size_t k = 0;
        if (system) all[k++] = (chat_message){"system", system};
        for (size_t i = 0; i < n_msgs; i++) all[k++] = msgs[i];
        text = chat_render(ct, all, k, true);
        free(all);
        if (!text) return AS_FAIL;
    } else {
        text = as_strdup(msgs[n_msgs - 1].content);
    }
    // A rendered template already holds BOS where the family wants one.
    int rc = tokenizer_encode(tok, text, strlen(text), ct == NULL, ct != NULL, ids, n_ids);
    free(text);
    if (rc == AS_OK && *n_ids == 0) rc = as_error("the prompt has no tokens");
    return rc;
}

static void stream_token(void *user, int64_t request, int32_t token, const char *text, size_t len) {
    (void)user, (void)request, (void)token;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
}

static void print_progress(void *user, const generate_progress *p) {
    (void)user;
    fprintf(stderr, "\rgenerate: %lld/%lld prompts, %lld tokens, %.1f tok/s, elapsed %.0fs, ETA %.0fs   ",
            (long long)p->done, (long long)p->total, (long long)p->n_generated, p->tokens_per_s, p->elapsed_s, p->eta_s);
    if (p->done == p->total) fputc('\n', stderr);
}

static const char *finish_name(generate_finish f) {
    return f == GENERATE_FINISH_STOP ? "stop" : f == GENERATE_FINISH_LENGTH ? "length" : "none";
}

// Reads the prompts file: each line a JSON object with "prompt" or "messages".
static int read_prompts(const char *path, cJSON ***items, size_t *n_items) {
    as_jsonl r;
    if (as_jsonl_open(&r, path) != AS_OK) return AS_FAIL;
    size_t cap = 64, n = 0;
    cJSON **v = as_malloc(cap * sizeof *v);
    cJSON *o;
    int got;
    while ((got = as_jsonl_next(&r, &o)) > 0) {
        if (!cJSON_IsString(cJSON_GetObjectItem(o, "prompt")) && !cJSON_IsArray(cJSON_GetObjectItem(o, "messages"))) {
            got = as_jsonl_error(&r, "expected a string field \"prompt\" or an array \"messages\"");
            cJSON_Delete(o);
            break;
        }
        if (n == cap) v = as_realloc(v, (cap *= 2) * sizeof *v);
        v[n++] = o;
    }
    as_jsonl_close(&r);
    if (got == 0 && n == 0) got = as_error("%s: no prompts", path);
    if (got < 0) {
        for (size_t i = 0; i < n; i++) cJSON_Delete(v[i]);
        free(v);
        return AS_FAIL;
    }
    *items = v;
    *n_items = n;
    return AS_OK;
}

// A prompts-file item as chat messages (a "prompt" is one user message).
static int item_messages(const char *path, size_t index, cJSON *o, chat_message **msgs, size_t *n) {
    cJSON *p = cJSON_GetObjectItem(o, "prompt"), *arr = cJSON_GetObjectItem(o, "messages");
    if (cJSON_IsString(p)) {
        *msgs = as_malloc(sizeof **msgs);
        (*msgs)[0] = (chat_message){"user", p->valuestring};
        *n = 1;
        return AS_OK;
    }
    size_t k = 0, cnt = (size_t)cJSON_GetArraySize(arr);
    *msgs = as_malloc((cnt ? cnt : 1) * sizeof **msgs);
    cJSON *m;
    cJSON_ArrayForEach(m, arr) {
        cJSON *role = cJSON_GetObjectItem(m, "role"), *content = cJSON_GetObjectItem(m, "content");
        if (!cJSON_IsString(role) || !cJSON_IsString(content)) {
            free(*msgs);
            return as_error("%s: prompt %zu: each message needs string \"role\" and \"content\"", path, index + 1);
        }
        (*msgs)[k++] = (chat_message){role->valuestring, content->valuestring};
    }
    if (k == 0) {
        free(*msgs);
        return as_error("%s: prompt %zu: \"messages\" is empty", path, index + 1);
    }
    *n = k;
    return AS_OK;
}

static int run(const gen_opts *o) {
    model *m = NULL;
    tokenizer *tok = NULL;
    chat_template ct = {0}, *ctp = NULL;
    cJSON **items = NULL;
    size_t n_items = 0;
    int rc = AS_OK;
    if (o->prompts_path && read_prompts(o->prompts_path, &items, &n_items) != AS_OK) return AS_FAIL;
    if (cli_load_model(o->model_path, &m, &tok) != AS_OK) goto done_fail;
    if (o->chat) {
        if (chat_template_init(&ct, m->file, o->chat_template) != AS_OK) goto done_fail;
        ctp = &ct;
    }
    size_t n_req = o->prompts_path ? n_items : 1;
    generate_request *reqs = as_calloc(n_req, sizeof *reqs);
    int32_t **prompt_ids = as_calloc(n_req, sizeof *prompt_ids);
    generate_result *res = as_calloc(n_req, sizeof *res);
    for (size_t i = 0; rc == AS_OK && i < n_req; i++) {
        size_t n_ids = 0;
        if (o->prompts_path) {
            chat_message *msgs = NULL;
            size_t n_msgs = 0;
            rc = item_messages(o->prompts_path, i, items[i], &msgs, &n_msgs);
            if (rc == AS_OK) {
                rc = build_prompt(tok, ctp, o->system, msgs, n_msgs, &prompt_ids[i], &n_ids);
                free(msgs);
            }
        } else {
            chat_message msg = {"user", o->prompt};
            rc = build_prompt(tok, ctp, o->system, &msg, 1, &prompt_ids[i], &n_ids);
        }
        reqs[i] = (generate_request){.prompt = prompt_ids[i], .n_prompt = (int64_t)n_ids, .sampling = o->sp,
                                     .max_new_tokens = (int32_t)o->max_new, .stop = o->stop, .n_stop = o->n_stop};
        reqs[i].sampling.seed = o->sp.seed + i;
    }
    if (rc == AS_OK) {
        generate_options go = generate_options_default();
        go.precision = o->prec;
        go.batch_size = (int32_t)AS_MIN((long)n_req, o->batch);
        if (o->prompts_path) go.on_progress = print_progress;
        else go.on_token = stream_token;
        rc = dist_generate_run(m, tok, reqs, (int64_t)n_req, &go, res); // under mpirun: a share per rank
    }
    if (rc == AS_OK && !o->prompts_path) {
        fputc('\n', stdout);
    } else if (rc == AS_OK) {
        // Whole output file at once, atomically: an interrupted run leaves no half file.
        as_atomic_file af;
        rc = as_atomic_open(&af, o->out_path);
        for (size_t i = 0; rc == AS_OK && i < n_req; i++) {
            cJSON *row = cJSON_Duplicate(items[i], 1);
            cJSON_AddStringToObject(row, "output", res[i].text ? res[i].text : "");
            cJSON_AddNumberToObject(row, "n_tokens", (double)res[i].n_ids);
            cJSON_AddStringToObject(row, "finish", finish_name(res[i].finish));
            cJSON_AddNumberToObject(row, "logprob", res[i].logprob_sum);
            char *line = as_json_print(row, false);
            fprintf(af.fp, "%s\n", line);
            free(line);
            cJSON_Delete(row);
        }
        if (rc == AS_OK) rc = as_atomic_commit(&af);
    }
    for (size_t i = 0; i < n_req; i++) {
        free(prompt_ids[i]);
        generate_result_free(&res[i]);
    }
    free(reqs);
    free(prompt_ids);
    free(res);
    goto done;
done_fail:
    rc = AS_FAIL;
done:
    for (size_t i = 0; i < n_items; i++) cJSON_Delete(items[i]);
    free(items);
    if (ctp) chat_template_free(&ct);
    tokenizer_free(tok);
    model_free(m);
    return rc;
}

int cmd_generate(int argc, char **argv) {
    enum { O_MODEL = 1, O_PROMPT, O_PROMPTS, O_OUT, O_CHAT, O_SYSTEM, O_TMPL, O_MAXNEW, O_TEMP, O_TOPK, O_TOPP, O_MINP,
           O_RPEN, O_RLAST, O_SEED, O_GREEDY, O_STOP, O_BATCH, O_PREC, O_THREADS, O_HELP, O_DEVICE };
    static const struct option opts[] = {
        {"model", required_argument, 0, O_MODEL},       {"prompt", required_argument, 0, O_PROMPT},
        {"prompts", required_argument, 0, O_PROMPTS},   {"out", required_argument, 0, O_OUT},
        {"chat", no_argument, 0, O_CHAT},               {"system", required_argument, 0, O_SYSTEM},
        {"chat-template", required_argument, 0, O_TMPL}, {"max-new-tokens", required_argument, 0, O_MAXNEW},
        {"temperature", required_argument, 0, O_TEMP},  {"top-k", required_argument, 0, O_TOPK},
        {"top-p", required_argument, 0, O_TOPP},        {"min-p", required_argument, 0, O_MINP},
        {"repeat-penalty", required_argument, 0, O_RPEN}, {"repeat-last-n", required_argument, 0, O_RLAST},
        {"seed", required_argument, 0, O_SEED},         {"greedy", no_argument, 0, O_GREEDY},
        {"stop", required_argument, 0, O_STOP},         {"batch-size", required_argument, 0, O_BATCH},
        {"precision", required_argument, 0, O_PREC},    {"threads", required_argument, 0, O_THREADS},
        {"help", no_argument, 0, O_HELP},               {"device", required_argument, 0, O_DEVICE},
        {0, 0, 0, 0}};
    const char *cmd = "generate";
    gen_opts o = {.sp = sampler_params_default(), .max_new = 128, .batch = 8, .prec = KERNEL_PRECISION_Q8};
    long l;
    double d;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case O_MODEL: o.model_path = optarg; break;
        case O_PROMPT: o.prompt = optarg; break;
        case O_PROMPTS: o.prompts_path = optarg; break;
        case O_OUT: o.out_path = optarg; break;
        case O_CHAT: o.chat = true; break;
        case O_SYSTEM: o.system = optarg; break;
        case O_TMPL: o.chat_template = optarg; break;
        case O_MAXNEW: if (!cli_parse_int(cmd, "--max-new-tokens", optarg, 1, 1 << 20, &o.max_new)) return 2; break;
        case O_TEMP: if (!cli_parse_float(cmd, "--temperature", optarg, 0, 100, &d)) return 2; o.sp.temperature = (float)d; break;
        case O_TOPK: if (!cli_parse_int(cmd, "--top-k", optarg, 0, 1 << 30, &l)) return 2; o.sp.top_k = (int32_t)l; break;
        case O_TOPP: if (!cli_parse_float(cmd, "--top-p", optarg, 1e-9, 1, &d)) return 2; o.sp.top_p = (float)d; break;
        case O_MINP: if (!cli_parse_float(cmd, "--min-p", optarg, 0, 1, &d)) return 2; o.sp.min_p = (float)d; break;
        case O_RPEN: if (!cli_parse_float(cmd, "--repeat-penalty", optarg, 1e-3, 100, &d)) return 2; o.sp.repeat_penalty = (float)d; break;
        case O_RLAST: if (!cli_parse_int(cmd, "--repeat-last-n", optarg, -1, 1 << 30, &l)) return 2; o.sp.repeat_last_n = (int32_t)l; break;
        case O_SEED: if (!cli_parse_int(cmd, "--seed", optarg, 0, __LONG_MAX__, &l)) return 2; o.sp.seed = (uint64_t)l; break;
        case O_GREEDY: o.sp.temperature = 0; break;
        case O_STOP:
            if (o.n_stop == (int)AS_ARRAY_LEN(o.stop)) return cli_usage_error(cmd, "at most %d --stop strings", (int)AS_ARRAY_LEN(o.stop));
            o.stop[o.n_stop++] = optarg;
            break;
        case O_BATCH: if (!cli_parse_int(cmd, "--batch-size", optarg, 1, 4096, &o.batch)) return 2; break;
        case O_PREC:
            if (kernel_precision_parse(optarg, &o.prec)) return cli_usage_error(cmd, "--precision must be f32, q8 or bf16, got '%s'", optarg);
            break;
        case O_THREADS: if (!cli_parse_int(cmd, "--threads", optarg, 1, 1024, &o.threads)) return 2; break;
        case O_DEVICE: cli_set_device(optarg); break;
        case O_HELP: usage(stdout); return 0;
        default: return cli_usage_error(cmd, "unknown option");
        }
    }
    if (optind < argc) return cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    if (!o.prompt == !o.prompts_path) return cli_usage_error(cmd, "give exactly one of --prompt and --prompts");
    if (o.prompts_path && !o.out_path) return cli_usage_error(cmd, "--prompts needs --out FILE.jsonl");
    if (o.out_path && !o.prompts_path) return cli_usage_error(cmd, "--out goes with --prompts");
    if ((o.system || o.chat_template) && !o.chat) return cli_usage_error(cmd, "--system and --chat-template need --chat");
    if (o.threads) kernel_set_threads((int)o.threads);
    return run(&o) == AS_OK ? 0 : cli_fail(cmd);
}
