// The run configuration: one table of keys (name, type, range) drives the
// YAML reader, the --set overrides and the resolved YAML writer, so the three
// cannot disagree.
#include "spin/config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <yaml.h>

#include "util/common.h"

typedef enum key_type {
    KT_STR,      // char * (optionally restricted to the '|'-separated names of `names`)
    KT_I32, KT_I64, KT_U64, KT_F64, KT_F32, KT_BOOL,
    KT_TAU,      // integer >= 1 or inf
    KT_LOSS, KT_REF, KT_MIX, KT_OPTIM, KT_SCHED,
    KT_PRECISION,      // kernel_precision
    KT_EVAL_PRECISION, // int32_t: a kernel_precision, or -1 written "generation"
    KT_TRAIN_PRECISION, // train_precision
    KT_TARGETS,  // list of LoRA target names (train.h)
    KT_TASKS,    // list of evaluation task names
} key_type;

typedef struct key_def {
    const char *key;     // dotted
    key_type type;
    size_t off;          // offset in spin_config
    double lo, hi;       // numeric range (inclusive unless open_lo / open_hi)
    bool open_lo, open_hi;
    const char *names;   // KT_STR: allowed values "a|b|c" (NULL: any string)
} key_def;

#define OFF(f) offsetof(spin_config, f)
// The order is the order of the resolved YAML; keys of a section are contiguous.
static const key_def KEYS[] = {
    {"name", KT_STR, OFF(name), 0, 0, 0, 0, NULL},
    {"model.path", KT_STR, OFF(model_path), 0, 0, 0, 0, NULL},
    {"model.tokenizer", KT_STR, OFF(tokenizer_path), 0, 0, 0, 0, NULL},
    {"model.chat_template", KT_STR, OFF(chat_template), 0, 0, 0, 0, "|chatml|gemma|llama3"},
    {"data.train", KT_STR, OFF(train_path), 0, 0, 0, 0, NULL},
    {"data.heldout", KT_STR, OFF(heldout_path), 0, 0, 0, 0, NULL},
    {"data.layout", KT_STR, OFF(layout), 0, 0, 0, 0, "auto|messages|prompt_response|question_answer"},
    {"data.generator", KT_STR, OFF(generator), 0, 0, 0, 0, "none|arith"},
    {"data.generator_items", KT_I64, OFF(generator_items), 1, 1e7, 0, 0, NULL},
    {"data.generator_level", KT_I32, OFF(generator_level), 1, 3, 0, 0, NULL},
    {"data.generator_style", KT_STR, OFF(generator_style), 0, 0, 0, 0, "mixed|word|plain"},
    {"iterations", KT_I32, OFF(iterations), 1, 1000, 0, 0, NULL},
    {"prompts", KT_I64, OFF(prompts), 0, 1e9, 0, 0, NULL},
    {"alpha", KT_F64, OFF(loss.alpha), 0, 1, 0, 0, NULL},
    {"tau", KT_TAU, OFF(tau), 1, 1e6, 0, 0, NULL},
    {"mixing", KT_MIX, OFF(mixing), 0, 0, 0, 0, NULL},
    {"sampler", KT_STR, OFF(sampler), 0, 0, 0, 0, "mixture|token-geometric|sir|gflownet"},
    {"sir.k", KT_I32, OFF(sir_k), 1, 4096, 0, 0, NULL},
    {"gflownet.adapter", KT_STR, OFF(gfn_adapter), 0, 0, 0, 0, NULL},
    {"gflownet.steps", KT_I32, OFF(gfn_steps), 0, 1e7, 0, 0, NULL},
    {"gflownet.lr", KT_F32, OFF(gfn_lr), 0, 10, 1, 0, NULL},
    {"gflownet.rank", KT_I32, OFF(gfn_rank), 1, 4096, 0, 0, NULL},
    {"gflownet.samples_per_prompt", KT_I32, OFF(gfn_samples), 1, 65536, 0, 0, NULL},
    {"gflownet.save_every", KT_I32, OFF(gfn_save_every), 0, 1e7, 0, 0, NULL},
    {"gflownet.reward_temp_end", KT_F32, OFF(gfn_reward_temp_end), 0, 100, 1, 0, NULL},
    {"reference", KT_REF, OFF(loss.ref), 0, 0, 0, 0, NULL},
    {"loss.type", KT_LOSS, OFF(loss.kind), 0, 0, 0, 0, NULL},
    {"loss.beta", KT_F64, OFF(loss.beta), 0, 1e6, 1, 0, NULL},
    {"loss.label_smoothing", KT_F64, OFF(loss.label_smoothing), 0, 0.5, 0, 1, NULL},
    {"loss.delta", KT_F64, OFF(loss.delta), 0, 1e6, 0, 0, NULL},
    {"loss.lambda", KT_F64, OFF(loss.lambda), 0, 1e6, 0, 0, NULL},
    {"lora.enabled", KT_BOOL, OFF(lora), 0, 0, 0, 0, NULL},
    {"lora.rank", KT_I32, OFF(lora_cfg.rank), 1, 4096, 0, 0, NULL},
    {"lora.alpha", KT_F32, OFF(lora_cfg.alpha), 0, 1e6, 1, 0, NULL},
    {"lora.dropout", KT_F32, OFF(lora_cfg.dropout), 0, 1, 0, 1, NULL},
    {"lora.targets", KT_TARGETS, OFF(lora_cfg.targets), 0, 0, 0, 0, NULL},
    {"optimizer.type", KT_OPTIM, OFF(optim.kind), 0, 0, 0, 0, NULL},
    {"optimizer.lr", KT_F32, OFF(optim.lr), 0, 10, 1, 0, NULL},
    {"optimizer.weight_decay", KT_F32, OFF(optim.weight_decay), 0, 10, 0, 0, NULL},
    {"optimizer.schedule", KT_SCHED, OFF(optim.schedule), 0, 0, 0, 0, NULL},
    {"optimizer.warmup_ratio", KT_F64, OFF(optim.warmup_ratio), 0, 1, 0, 0, NULL},
    {"optimizer.max_grad_norm", KT_F32, OFF(optim.max_grad_norm), 0, 1e6, 0, 0, NULL},
    {"train.epochs", KT_I32, OFF(epochs), 1, 1000, 0, 0, NULL},
    {"train.batch_size", KT_I32, OFF(batch_size), 1, 65536, 0, 0, NULL},
    {"train.grad_accum", KT_I32, OFF(grad_accum), 1, 65536, 0, 0, NULL},
    {"train.max_prompt_len", KT_I32, OFF(max_prompt_len), 1, 1e6, 0, 0, NULL},
    {"train.max_answer_len", KT_I32, OFF(max_answer_len), 1, 1e6, 0, 0, NULL},
    {"train.checkpointing", KT_BOOL, OFF(checkpointing), 0, 0, 0, 0, NULL},
    {"train.precision", KT_TRAIN_PRECISION, OFF(train_prec), 0, 0, 0, 0, NULL},
    {"generation.temperature", KT_F32, OFF(gen_temperature), 0, 100, 0, 0, NULL},
    {"generation.top_p", KT_F32, OFF(gen_top_p), 0, 1, 1, 0, NULL},
    {"generation.top_k", KT_I32, OFF(gen_top_k), 0, 1e6, 0, 0, NULL},
    {"generation.max_new_tokens", KT_I32, OFF(max_new_tokens), 1, 1e6, 0, 0, NULL},
    {"generation.batch", KT_I32, OFF(gen_batch), 1, 4096, 0, 0, NULL},
    {"generation.precision", KT_PRECISION, OFF(gen_precision), 0, 0, 0, 0, NULL},
    {"eval.tasks", KT_TASKS, OFF(eval_tasks), 0, 0, 0, 0, NULL},
    {"eval.limit", KT_I64, OFF(eval_limit), 0, 1e9, 0, 0, NULL},
    {"eval.shots", KT_I32, OFF(eval_shots), -1, 100, 0, 0, NULL},
    {"eval.heldout", KT_I64, OFF(heldout_size), 0, 1e7, 0, 0, NULL},
    {"eval.precision", KT_EVAL_PRECISION, OFF(eval_precision), 0, 0, 0, 0, NULL},
    {"seed", KT_U64, OFF(seed), 0, 0, 0, 0, NULL},
    {"threads", KT_I32, OFF(threads), 0, 1024, 0, 0, NULL},
    {"device", KT_STR, OFF(device), 0, 0, 0, 0, NULL},
};
#define N_KEYS ((int)AS_ARRAY_LEN(KEYS))

static const char *const OPTIM_NAMES[] = {"adamw", "rmsprop", "sgd"};
static const char *const SCHED_NAMES[] = {"constant", "linear", "cosine"};

void spin_config_default(spin_config *c) {
    memset(c, 0, sizeof *c);
    c->name = as_strdup("");
    c->model_path = as_strdup("");
    c->tokenizer_path = as_strdup("");
    c->chat_template = as_strdup("");
    c->train_path = as_strdup("");
    c->heldout_path = as_strdup("");
    c->layout = as_strdup("auto");
    c->generator = as_strdup("none");
    c->generator_items = 1000;
    c->generator_level = 1;
    c->generator_style = as_strdup("mixed");
    c->heldout_size = 32;
    c->iterations = 3;
    c->prompts = 0;
    c->tau = SPIN_TAU_INF;
    c->mixing = SPIN_MIX_SAMPLE;
    c->sampler = as_strdup("mixture");
    c->sir_k = 16;
    c->gfn_adapter = as_strdup("");
    c->gfn_steps = 100, c->gfn_rank = 16, c->gfn_samples = 8, c->gfn_save_every = 10;
    c->gfn_lr = 1e-4f, c->gfn_reward_temp_end = 0.8f;
    spin_loss_config_default(&c->loss);
    c->loss.alpha = 0.1;
    c->lora = true;
    c->lora_cfg = TRAIN_LORA_CONFIG_DEFAULT;
    optim_config_finetune(&c->optim, 5e-5f);
    c->epochs = 2;
    c->batch_size = 4;
    c->grad_accum = 1;
    c->max_prompt_len = 512;
    c->max_answer_len = 256;
    c->gen_temperature = 1.0f;
    c->gen_top_p = 1.0f;
    c->gen_top_k = 0;
    c->max_new_tokens = 256;
    c->gen_batch = 16;
    c->train_prec = TRAIN_PRECISION_F32;
    c->gen_precision = KERNEL_PRECISION_Q8;
    c->eval_precision = -1;
    c->eval_limit = 0;
    c->eval_shots = -1;
    c->seed = 42;
    c->threads = 0;
    c->device = as_strdup("cpu");
}

void spin_config_free(spin_config *c) {
    for (int i = 0; i < N_KEYS; i++)
        if (KEYS[i].type == KT_STR) {
            char **p = (char **)((char *)c + KEYS[i].off);
            free(*p), *p = NULL;
        }
    for (int i = 0; i < c->n_eval_tasks; i++) free(c->eval_tasks[i]);
    c->n_eval_tasks = 0;
}

int spin_config_n_keys(void) { return N_KEYS; }
const char *spin_config_key(int i) { return i >= 0 && i < N_KEYS ? KEYS[i].key : NULL; }

static const key_def *find_key(const char *key) {
    for (int i = 0; i < N_KEYS; i++)
        if (strcmp(KEYS[i].key, key) == 0) return &KEYS[i];
    return NULL;
}

// Whether `key` is a section (some key starts with "key.").
static bool is_section(const char *key) {
    const size_t n = strlen(key);
    for (int i = 0; i < N_KEYS; i++)
        if (strncmp(KEYS[i].key, key, n) == 0 && KEYS[i].key[n] == '.') return true;
    return false;
}

static int name_index(const char *const *names, int n, const char *s) {
    for (int i = 0; i < n; i++)
        if (strcmp(names[i], s) == 0) return i;
    return -1;
}

static bool in_names(const char *names, const char *s) {
    const size_t n = strlen(s);
    for (const char *p = names;;) {
        const char *bar = strchr(p, '|');
        const size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && strncmp(p, s, n) == 0) return true;
        if (!bar) return false;
        p = bar + 1;
    }
}

static int parse_number(const char *s, double *out) {
    char *end;
    errno = 0;
    const double v = strtod(s, &end);
    if (end == s || *end || errno || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

static int parse_bool(const char *s, bool *out) {
    static const char *const yes[] = {"true", "True", "TRUE", "yes", "on"}, *const no[] = {"false", "False", "FALSE", "no", "off"};
    for (int i = 0; i < 5; i++) {
        if (strcmp(s, yes[i]) == 0) { *out = true; return 0; }
        if (strcmp(s, no[i]) == 0) { *out = false; return 0; }
    }
    return -1;
}

static int check_range(const key_def *k, double v, const char *where) {
    const bool lo_bad = k->open_lo ? !(v > k->lo) : !(v >= k->lo);
    const bool hi_bad = k->open_hi ? !(v < k->hi) : !(v <= k->hi);
    if (lo_bad || hi_bad)
        return as_error("%s%s: %g is out of range (expected %s%g, %g%s)", where, k->key, v, k->open_lo ? "(" : "[", k->lo, k->hi,
                        k->open_hi ? ")" : "]");
    return 0;
}

// Sets key k from a list of n scalar values (n = 1 for a scalar key).  `where`
// prefixes errors ("file:line: " or "--set ").
static int apply(spin_config *c, const key_def *k, const char *const *vals, int n, bool is_list, const char *where) {
    void *p = (char *)c + k->off;
    const bool list_key = k->type == KT_TARGETS || k->type == KT_TASKS;
    if (is_list && !list_key) return as_error("%s%s: expected a single value, not a list", where, k->key);
    if (list_key) {
        if (n > SPIN_CONFIG_MAX_LIST) return as_error("%s%s: more than %d entries", where, k->key, SPIN_CONFIG_MAX_LIST);
        if (k->type == KT_TARGETS) {
            uint32_t mask = 0;
            for (int i = 0; i < n; i++) {
                int t = name_index(TRAIN_LORA_TARGET_NAMES, TRAIN_LORA_N_TARGETS, vals[i]);
                if (t < 0) return as_error("%s%s: '%s' is not a LoRA target (expected q, k, v, o, gate, up, down)", where, k->key, vals[i]);
                mask |= 1u << t;
            }
            if (n == 0) return as_error("%s%s: expected at least one target", where, k->key);
            *(uint32_t *)p = mask == (1u << TRAIN_LORA_N_TARGETS) - 1 ? 0 : mask;
        } else {
            for (int i = 0; i < n; i++)
                if (!vals[i][0]) return as_error("%s%s: empty task name", where, k->key);
            for (int i = 0; i < c->n_eval_tasks; i++) free(c->eval_tasks[i]);
            for (int i = 0; i < n; i++) c->eval_tasks[i] = as_strdup(vals[i]);
            c->n_eval_tasks = n;
        }
        return 0;
    }
    const char *s = vals[0];
    double v;
    switch (k->type) {
    case KT_STR:
        if (k->names && !in_names(k->names, s)) return as_error("%s%s: '%s' (expected one of %s)", where, k->key, s, k->names);
        free(*(char **)p);
        *(char **)p = as_strdup(s);
        return 0;
    case KT_BOOL:
        if (parse_bool(s, (bool *)p)) return as_error("%s%s: '%s' is not a boolean (expected true or false)", where, k->key, s);
        return 0;
    case KT_TAU:
        if (strcmp(s, "inf") == 0 || strcmp(s, ".inf") == 0 || strcmp(s, "infinity") == 0) {
            *(int32_t *)p = SPIN_TAU_INF;
            return 0;
        }
        if (parse_number(s, &v) || v != floor(v)) return as_error("%s%s: '%s' (expected an integer >= 1 or inf)", where, k->key, s);
        if (check_range(k, v, where)) return -1;
        *(int32_t *)p = (int32_t)v;
        return 0;
    case KT_U64: {
        char *end;
        errno = 0;
        unsigned long long u = strtoull(s, &end, 10);
        if (!isdigit((unsigned char)s[0]) || *end || errno) return as_error("%s%s: '%s' (expected an integer >= 0)", where, k->key, s);
        *(uint64_t *)p = u;
        return 0;
    }
    case KT_I32: case KT_I64:
        if (parse_number(s, &v) || v != floor(v)) return as_error("%s%s: '%s' is not an integer", where, k->key, s);
        if (check_range(k, v, where)) return -1;
        if (k->type == KT_I32) *(int32_t *)p = (int32_t)v;
        else *(int64_t *)p = (int64_t)v;
        return 0;
    case KT_F64: case KT_F32:
        if (parse_number(s, &v)) return as_error("%s%s: '%s' is not a number", where, k->key, s);
        if (k->type == KT_F32 && (double)(float)v != v && check_range(k, (double)(float)v, "")) // checked as stored
            return as_error("%s%s: %s is %g as a 32-bit float, out of range (expected %s%g, %g%s)", where, k->key, s, (double)(float)v,
                            k->open_lo ? "(" : "[", k->lo, k->hi, k->open_hi ? ")" : "]");
        if (check_range(k, v, where)) return -1;
        if (k->type == KT_F64) *(double *)p = v;
        else *(float *)p = (float)v;
        return 0;
    case KT_LOSS:
        if (spin_loss_kind_parse(s, (spin_loss_kind *)p)) return as_error("%s%s: '%s' (expected sigmoid, hinge, ipo or slic)", where, k->key, s);
        return 0;
    case KT_REF:
        if (spin_ref_mode_parse(s, (spin_ref_mode *)p)) return as_error("%s%s: '%s' (expected geometric or arithmetic)", where, k->key, s);
        return 0;
    case KT_MIX:
        if (spin_mixing_parse(s, (spin_mixing *)p)) return as_error("%s%s: '%s' (expected sample or concat)", where, k->key, s);
        return 0;
    case KT_OPTIM: {
        int i = name_index(OPTIM_NAMES, 3, s);
        if (i < 0) return as_error("%s%s: '%s' (expected adamw, rmsprop or sgd)", where, k->key, s);
        // Switching optimizer keeps the learning rate and decay the user set.
        *(optim_kind *)p = (optim_kind)i;
        return 0;
    }
    case KT_SCHED: {
        int i = name_index(SCHED_NAMES, 3, s);
        if (i < 0) return as_error("%s%s: '%s' (expected constant, linear or cosine)", where, k->key, s);
        *(optim_schedule *)p = (optim_schedule)i;
        return 0;
    }
    case KT_PRECISION:
        if (kernel_precision_parse(s, (kernel_precision *)p)) return as_error("%s%s: '%s' (expected q8, f32 or bf16)", where, k->key, s);
        return 0;
    case KT_EVAL_PRECISION: {
        kernel_precision kp;
        if (!strcmp(s, "generation")) *(int32_t *)p = -1;
        else if (!kernel_precision_parse(s, &kp)) *(int32_t *)p = (int32_t)kp;
        else return as_error("%s%s: '%s' (expected generation, q8, f32 or bf16)", where, k->key, s);
        return 0;
    }
    case KT_TRAIN_PRECISION:
        if (train_precision_parse(s, (train_precision *)p)) return as_error("%s%s: '%s' (expected f32 or bf16)", where, k->key, s);
        return 0;
    default: break;
    }
    return as_error("%s%s: unsupported key type", where, k->key);
}

int spin_config_set(spin_config *c, const char *assignment) {
    const char *eq = strchr(assignment, '=');
    if (!eq || eq == assignment) return as_error("--set %s: expected key=value", assignment);
    char *key = as_strndup(assignment, (size_t)(eq - assignment));
    const key_def *k = find_key(key);
    int rc;
    if (!k) {
        rc = as_error("--set %s: not a configuration key%s", key, is_section(key) ? " (a section; name one of its keys)" : "");
        free(key);
        return rc;
    }
    free(key);
    const char *val = eq + 1;
    if (k->type == KT_TARGETS || k->type == KT_TASKS) {
        // Comma-separated list ("" = empty list).
        char *copy = as_strdup(val), *vals[SPIN_CONFIG_MAX_LIST + 1];
        int n = 0;
        for (char *save = NULL, *t = strtok_r(copy, ",", &save); t && n <= SPIN_CONFIG_MAX_LIST; t = strtok_r(NULL, ",", &save)) {
            while (*t == ' ') t++;
            vals[n++] = t;
        }
        rc = apply(c, k, (const char *const *)vals, n, true, "--set ");
        free(copy);
        return rc;
    }
    return apply(c, k, &val, 1, false, "--set ");
}

// ---- YAML ----

typedef struct yaml_reader {
    yaml_parser_t parser;
    const char *path;
    spin_config *c;
    unsigned char seen[N_KEYS];
    int depth;
} yaml_reader;

static int next_event(yaml_reader *r, yaml_event_t *ev) {
    if (!yaml_parser_parse(&r->parser, ev))
        return as_error("%s:%zu: YAML: %s", r->path, r->parser.problem_mark.line + 1, r->parser.problem ? r->parser.problem : "syntax error");
    return 0;
}

static int read_node(yaml_reader *r, const char *key, yaml_event_t *ev);

// A mapping whose MAPPING_START has been consumed; prefix "" at the top.
static int read_mapping(yaml_reader *r, const char *prefix) {
    if (++r->depth > 8) return as_error("%s: nesting deeper than any key", r->path);
    for (;;) {
        yaml_event_t kev;
        if (next_event(r, &kev)) return -1;
        if (kev.type == YAML_MAPPING_END_EVENT) {
            yaml_event_delete(&kev);
            break;
        }
        const size_t line = kev.start_mark.line + 1;
        if (kev.type != YAML_SCALAR_EVENT) {
            yaml_event_delete(&kev);
            return as_error("%s:%zu: %s%sexpected a plain key", r->path, line, prefix, *prefix ? ": " : "");
        }
        char key[256];
        snprintf(key, sizeof key, "%s%s%s", prefix, *prefix ? "." : "", (const char *)kev.data.scalar.value);
        yaml_event_delete(&kev);
        yaml_event_t vev;
        if (next_event(r, &vev)) return -1;
        int rc = read_node(r, key, &vev);
        yaml_event_delete(&vev);
        if (rc) return -1;
    }
    r->depth--;
    return 0;
}

static int read_node(yaml_reader *r, const char *key, yaml_event_t *ev) {
    const size_t line = ev->start_mark.line + 1;
    char where[512];
    snprintf(where, sizeof where, "%s:%zu: ", r->path, line);
    if (ev->type == YAML_ALIAS_EVENT) return as_error("%s%s: YAML aliases are not supported", where, key);
    const key_def *k = find_key(key);
    if (ev->type == YAML_MAPPING_START_EVENT) {
        if (!is_section(key)) return as_error("%s%s: %s", where, key, k ? "expected a value, not a mapping" : "not a configuration key");
        return read_mapping(r, key);
    }
    if (!k) return as_error("%s%s: %s", where, key, is_section(key) ? "expected a mapping of its keys" : "not a configuration key");
    const int idx = (int)(k - KEYS);
    if (r->seen[idx]) return as_error("%s%s: given twice", where, key);
    r->seen[idx] = 1;
    if (ev->type == YAML_SCALAR_EVENT) {
        const char *v = (const char *)ev->data.scalar.value;
        if (strlen(v) != ev->data.scalar.length) return as_error("%s%s: NUL byte in the value", where, key);
        // A plain empty or "~"/"null" scalar is YAML's null: an empty string or list.
        const bool null = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && (!*v || !strcmp(v, "~") || !strcmp(v, "null"));
        if (null && (k->type == KT_TARGETS || k->type == KT_TASKS)) return apply(r->c, k, NULL, 0, true, where);
        if (null && k->type != KT_STR) return as_error("%s%s: expected a value", where, key);
        const char *val = null ? "" : v;
        if (k->type == KT_TARGETS || k->type == KT_TASKS) return apply(r->c, k, &val, 1, true, where);
        return apply(r->c, k, &val, 1, false, where);
    }
    if (ev->type == YAML_SEQUENCE_START_EVENT) {
        char *vals[SPIN_CONFIG_MAX_LIST + 1];
        int n = 0, rc = 0;
        for (;;) {
            yaml_event_t it;
            if (next_event(r, &it)) { rc = -1; break; }
            if (it.type == YAML_SEQUENCE_END_EVENT) { yaml_event_delete(&it); break; }
            if (it.type != YAML_SCALAR_EVENT) {
                yaml_event_delete(&it);
                rc = as_error("%s%s: list entries must be plain values", where, key);
                break;
            }
            if (n > SPIN_CONFIG_MAX_LIST) {
                yaml_event_delete(&it);
                rc = as_error("%s%s: more than %d entries", where, key, SPIN_CONFIG_MAX_LIST);
                break;
            }
            vals[n++] = as_strdup((const char *)it.data.scalar.value);
            yaml_event_delete(&it);
        }
        if (!rc) rc = apply(r->c, k, (const char *const *)vals, n, true, where);
        for (int i = 0; i < n; i++) free(vals[i]);
        return rc;
    }
    return as_error("%s%s: unexpected YAML node", where, key);
}

int spin_config_parse(spin_config *c, const char *text, size_t len, const char *path) {
    yaml_reader r = {.path = path, .c = c};
    if (!yaml_parser_initialize(&r.parser)) return as_error("%s: cannot initialise the YAML parser", path);
    yaml_parser_set_input_string(&r.parser, (const unsigned char *)text, len);
    int rc = 0, docs = 0;
    for (bool done = false; !done && !rc;) {
        yaml_event_t ev;
        if (next_event(&r, &ev)) { rc = -1; break; }
        switch (ev.type) {
        case YAML_STREAM_END_EVENT: done = true; break;
        case YAML_DOCUMENT_START_EVENT:
            if (++docs > 1) rc = as_error("%s:%zu: more than one YAML document", path, ev.start_mark.line + 1);
            break;
        case YAML_MAPPING_START_EVENT: rc = read_mapping(&r, ""); break;
        case YAML_SCALAR_EVENT:
            // An empty document is a plain empty scalar; anything else is not a configuration.
            if (ev.data.scalar.length) rc = as_error("%s:%zu: expected a mapping of configuration keys", path, ev.start_mark.line + 1);
            break;
        case YAML_SEQUENCE_START_EVENT: case YAML_ALIAS_EVENT:
            rc = as_error("%s:%zu: expected a mapping of configuration keys", path, ev.start_mark.line + 1);
            break;
        default: break;
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&r.parser);
    return rc;
}

int spin_config_load(spin_config *c, const char *path) {
    char *text;
    size_t len;
    if (as_read_file(path, &text, &len)) return -1;
    int rc = spin_config_parse(c, text, len, path);
    free(text);
    return rc;
}

int spin_config_check(const spin_config *c) {
    if (c->max_new_tokens > c->max_answer_len)
        return as_error("generation.max_new_tokens: %d exceeds train.max_answer_len %d", c->max_new_tokens, c->max_answer_len);
    if (strcmp(c->generator, "none") == 0 && !c->train_path[0]) return as_error("data.train: required (or data.generator: arith)");
    if (strcmp(c->generator, "none") != 0 && c->train_path[0])
        return as_error("data.train: give either a training file or data.generator, not both");
    if (c->loss.kind == SPIN_LOSS_SIGMOID && c->loss.label_smoothing >= 0.5) return as_error("loss.label_smoothing: must be < 0.5");
    if (strcmp(c->sampler, "mixture") != 0 && !c->lora)
        return as_error("sampler: %s needs lora.enabled (pi_t and pi_0 are adapters over one base)", c->sampler);
    return 0;
}

// ---- resolved YAML ----

static void sb_quoted(as_sbuf *b, const char *s) {
    as_sb_printf(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') as_sb_printf(b, "\\%c", *p);
        else if (*p == '\n') as_sb_printf(b, "\\n");
        else if (*p < 0x20 || *p == 0x7f) as_sb_printf(b, "\\x%02x", *p);
        else as_sb_printf(b, "%c", *p);
    }
    as_sb_printf(b, "\"");
}

// The shortest decimal that reads back to the same value (0.1, not 0.10000000000000001).
static void sb_shortest(as_sbuf *b, double v, bool single) {
    char t[64];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(t, sizeof t, "%.*g", prec, v);
        const double back = strtod(t, NULL);
        if (single ? (float)back == (float)v : back == v) break;
    }
    as_sb_printf(b, "%s", t);
}

char *spin_config_to_yaml(const spin_config *c) {
    as_sbuf b = {as_malloc(256), 0, 256};
    b.s[0] = 0;
    as_sb_printf(&b, "# alphaspin run: resolved configuration (every key; see configs/alphaspin.yaml)\n");
    char section[64] = "";
    for (int i = 0; i < N_KEYS; i++) {
        const key_def *k = &KEYS[i];
        const char *dot = strchr(k->key, '.'), *leaf = k->key;
        if (dot) {
            const size_t n = (size_t)(dot - k->key);
            if (strlen(section) != n || strncmp(section, k->key, n)) {
                snprintf(section, sizeof section, "%.*s", (int)n, k->key);
                as_sb_printf(&b, "%s:\n", section);
            }
            leaf = dot + 1;
            as_sb_printf(&b, "  ");
        } else {
            section[0] = 0;
        }
        as_sb_printf(&b, "%s: ", leaf);
        const void *p = (const char *)c + k->off;
        switch (k->type) {
        case KT_STR: sb_quoted(&b, *(char *const *)p); break;
        case KT_I32: as_sb_printf(&b, "%d", *(const int32_t *)p); break;
        case KT_I64: as_sb_printf(&b, "%lld", (long long)*(const int64_t *)p); break;
        case KT_U64: as_sb_printf(&b, "%llu", (unsigned long long)*(const uint64_t *)p); break;
        case KT_F64: sb_shortest(&b, *(const double *)p, false); break;
        case KT_F32: sb_shortest(&b, (double)*(const float *)p, true); break;
        case KT_BOOL: as_sb_printf(&b, "%s", *(const bool *)p ? "true" : "false"); break;
        case KT_TAU: {
            int32_t t = *(const int32_t *)p;
            if (t == SPIN_TAU_INF) as_sb_printf(&b, "inf");
            else as_sb_printf(&b, "%d", t);
            break;
        }
        case KT_LOSS: as_sb_printf(&b, "%s", spin_loss_kind_name(*(const spin_loss_kind *)p)); break;
        case KT_REF: as_sb_printf(&b, "%s", spin_ref_mode_name(*(const spin_ref_mode *)p)); break;
        case KT_MIX: as_sb_printf(&b, "%s", spin_mixing_name(*(const spin_mixing *)p)); break;
        case KT_OPTIM: as_sb_printf(&b, "%s", OPTIM_NAMES[*(const optim_kind *)p]); break;
        case KT_SCHED: as_sb_printf(&b, "%s", SCHED_NAMES[*(const optim_schedule *)p]); break;
        case KT_PRECISION: as_sb_printf(&b, "%s", kernel_precision_name(*(const kernel_precision *)p)); break;
        case KT_EVAL_PRECISION: {
            const int32_t e = *(const int32_t *)p;
            as_sb_printf(&b, "%s", e < 0 ? "generation" : kernel_precision_name((kernel_precision)e));
            break;
        }
        case KT_TRAIN_PRECISION: as_sb_printf(&b, "%s", train_precision_name(*(const train_precision *)p)); break;
        case KT_TARGETS: {
            uint32_t m = *(const uint32_t *)p;
            if (!m) m = (1u << TRAIN_LORA_N_TARGETS) - 1;
            as_sb_printf(&b, "[");
            for (int t = 0, first = 1; t < TRAIN_LORA_N_TARGETS; t++)
                if (m & (1u << t)) as_sb_printf(&b, "%s%s", first ? "" : ", ", TRAIN_LORA_TARGET_NAMES[t]), first = 0;
            as_sb_printf(&b, "]");
            break;
        }
        case KT_TASKS:
            as_sb_printf(&b, "[");
            for (int t = 0; t < c->n_eval_tasks; t++) {
                if (t) as_sb_printf(&b, ", ");
                sb_quoted(&b, c->eval_tasks[t]);
            }
            as_sb_printf(&b, "]");
            break;
        }
        as_sb_printf(&b, "\n");
    }
    return b.s;
}
