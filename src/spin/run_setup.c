// The setup of a run: the models, the data and the prompt pool, the run
// folder's config.yaml; and the teardown.
#include <stdio.h>
#include <string.h>

#include "dist/dist.h"
#include "spin/run_internal.h"
#include "train/checkpoint.h"
#include "util/common.h"
#include "util/jsonl.h"
#include "util/rng.h"
#ifdef ALPHASPIN_HAVE_DATA
#include "data/arith.h"
#endif

// The base (inference engine and training model), tokenizer and chat template,
// and the adapters (LoRA) or the frozen copy of pi_0 (full fine-tuning).
int spin_setup_models(spin_ctx *x) {
    const spin_config *c = x->c;
    // model_load takes a GGUF file or a Hugging Face folder (model/model_hf.h).
    snprintf(x->base_gguf, sizeof x->base_gguf, "%s", c->model_path);
    const as_backend *be = dist_open_device(c->device); // as spin_run opened it
    if (!be || model_load(&x->inf, x->base_gguf) || model_use_backend(x->inf, be)) return AS_FAIL;
    const gguf_file *meta = x->inf->file;
    if (c->tokenizer_path[0]) {
        // The tokenizer and chat template of another file (a folder without tokenizer.json).
        if (gguf_open(&x->tok_file, c->tokenizer_path)) return AS_FAIL;
        meta = x->tok_file;
    }
    // The training models run on the inference model's backend (train_model_from_model).
    if (tokenizer_load(&x->tok, meta) || chat_template_init(&x->tpl, meta, c->chat_template[0] ? c->chat_template : NULL) ||
        train_model_from_model(&x->tm, x->inf))
        return AS_FAIL;
    train_set_threads(x->tm, x->threads);
    train_set_checkpointing(x->tm, c->checkpointing);
    train_set_precision(x->tm, c->train_prec);
    x->tm_iterate = 0;
    if (c->lora) {
        train_lora_config lc = c->lora_cfg;
        lc.seed = spin_derive_seed(c->seed, 0, SPIN_SALT_LORA, 0);
        if (!(x->lora_init = train_lora_new(&x->tm->cfg, &lc)) || train_lora_attach(x->tm, &lc)) return AS_FAIL;
    } else {
        if (train_model_from_model(&x->tm0, x->inf)) return AS_FAIL;
        train_set_threads(x->tm0, x->threads);
        train_set_precision(x->tm0, c->train_prec);
    }
    x->iterates = as_calloc((size_t)c->iterations + 1, sizeof *x->iterates);
    return AS_OK;
}

static int check_layout(const char *path, const char *layout) {
    if (strcmp(layout, "auto") == 0) return AS_OK;
    const char *need = !strcmp(layout, "messages") ? "messages" : !strcmp(layout, "prompt_response") ? "response" : "answer";
    as_jsonl r;
    if (as_jsonl_open(&r, path)) return AS_FAIL;
    cJSON *o;
    int got;
    while ((got = as_jsonl_next(&r, &o)) > 0) {
        if (!cJSON_GetObjectItem(o, need)) got = as_jsonl_error(&r, "data.layout is %s but the line has no \"%s\" field", layout, need);
        cJSON_Delete(o);
        if (got < 0) break;
    }
    as_jsonl_close(&r);
    return got < 0 ? AS_FAIL : AS_OK;
}

// The training data (data.train, or data.generator's files), the held-out
// examples (data.heldout, or a seeded split) and the prompt pool: the other
// training examples whose prompt fits train.max_prompt_len.
int spin_setup_data(spin_ctx *x) {
    const spin_config *c = x->c;
    char train_path[SPIN_PATH_LEN], held_path[SPIN_PATH_LEN] = "";
    snprintf(train_path, sizeof train_path, "%s", c->train_path);
    if (c->heldout_path[0]) snprintf(held_path, sizeof held_path, "%s", c->heldout_path);
    if (strcmp(c->generator, "arith") == 0) {
#ifdef ALPHASPIN_HAVE_DATA
        // The project's arithmetic tasks: one call, split into train and held-out files.
        snprintf(train_path, sizeof train_path, "%s/data/train.jsonl", x->run);
        snprintf(held_path, sizeof held_path, "%s/data/heldout.jsonl", x->run);
        if (!spin_file_exists(train_path) || !spin_file_exists(held_path)) {
            char dir[SPIN_PATH_LEN];
            snprintf(dir, sizeof dir, "%s/data", x->run);
            data_arith_config ac;
            data_arith_config_default(&ac);
            ac.n = c->generator_items + c->heldout_size;
            ac.seed = c->seed;
            ac.level = c->generator_level;
            ac.style = (data_arith_style)data_arith_style_parse(c->generator_style);
            data_arith_item *items;
            if (as_mkdir_p(dir) || data_arith_generate(&ac, &items)) return AS_FAIL;
            int rc = data_arith_write_jsonl(held_path, items, c->heldout_size) ||
                     data_arith_write_jsonl(train_path, items + c->heldout_size, c->generator_items);
            data_arith_free(items, ac.n);
            if (rc) return AS_FAIL;
        }
#else
        return as_error("data.generator: this build has no data module (src/data)");
#endif
    }
    dist_barrier(); // under mpirun rank 0 wrote the generated data that every rank reads
    if (check_layout(train_path, c->layout) || sft_data_load(&x->train, train_path)) return AS_FAIL;
    if (held_path[0] && (check_layout(held_path, c->layout) || sft_data_load(&x->held, held_path))) return AS_FAIL;
    // Without a held-out file, heldout_size examples of a seeded permutation are held out.
    const int64_t n = x->train->n;
    int64_t *perm = as_malloc(sizeof(int64_t) * (size_t)n);
    as_rng rng;
    as_rng_seed(&rng, spin_derive_seed(c->seed, 0, SPIN_SALT_SPLIT, 0));
    train_shuffle(perm, n, &rng);
    int64_t n_split = 0;
    if (!x->held) {
        n_split = AS_MIN(c->heldout_size, n - 1);
        x->held = x->train;
        x->held_idx = as_malloc(sizeof(int64_t) * (size_t)(n_split > 0 ? n_split : 1));
        for (int64_t i = 0; i < n_split; i++) x->held_idx[i] = perm[i];
        // Kept in data order so the measurements do not depend on the permutation's order.
        x->n_held = n_split;
    } else {
        x->n_held = AS_MIN(c->heldout_size, x->held->n);
        x->held_idx = as_malloc(sizeof(int64_t) * (size_t)(x->n_held > 0 ? x->n_held : 1));
        for (int64_t i = 0; i < x->n_held; i++) x->held_idx[i] = i;
    }
    // Prompts: the rest, in data order, whose prompt fits max_prompt_len.
    uint8_t *is_held = as_calloc((size_t)n, 1);
    for (int64_t i = 0; i < n_split; i++) is_held[perm[i]] = 1;
    free(perm);
    x->pool = as_malloc(sizeof(int64_t) * (size_t)n);
    for (int64_t i = 0; i < n; i++) {
        if (is_held[i]) continue;
        const sft_example *e = &x->train->ex[i];
        char *pr = chat_render(&x->tpl, e->msgs, (size_t)spin_prompt_turns(e), true);
        int32_t *ids = NULL;
        size_t np = 0;
        if (!pr || tokenizer_encode(x->tok, pr, strlen(pr), false, true, &ids, &np)) {
            free(pr), free(is_held);
            return AS_FAIL;
        }
        free(pr), free(ids);
        if ((int64_t)np <= c->max_prompt_len) x->pool[x->n_pool++] = i;
    }
    free(is_held);
    if (x->n_pool == 0) return as_error("%s: no example with a prompt of at most train.max_prompt_len = %d tokens", train_path, c->max_prompt_len);
    return AS_OK;
}

void spin_ctx_free(spin_ctx *x) {
    if (x->iterates)
        for (int32_t k = 0; k <= x->c->iterations; k++) train_lora_free(x->iterates[k]);
    free(x->iterates);
    train_lora_free(x->lora_init);
    train_model_free(x->tm);
    train_model_free(x->tm0);
    model_free(x->gen_full);
    model_free(x->inf);
    gguf_close(x->tok_file);
    chat_template_free(&x->tpl);
    tokenizer_free(x->tok);
    if (x->held != x->train) sft_data_free(x->held);
    sft_data_free(x->train);
    free(x->pool), free(x->held_idx);
}

int spin_setup_config(const char *run, const spin_config *c) {
    char path[SPIN_PATH_LEN];
    snprintf(path, sizeof path, "%s/config.yaml", run);
    char *y = spin_config_to_yaml(c);
    int rc;
    if (spin_file_exists(path)) {
        char *old = NULL;
        size_t n;
        rc = as_read_file(path, &old, &n);
        if (rc == AS_OK && strcmp(old, y) != 0)
            rc = as_error("%s: the run folder holds another configuration (resume with the same one, or choose another --out)", path);
        free(old);
    } else {
        rc = as_write_file_atomic(path, y, strlen(y));
    }
    free(y);
    return rc;
}
