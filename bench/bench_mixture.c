// Cost per generated answer of the geometric-mixture samplers
// (src/mixture/mixture.h) relative to plain sampling, on a real model:
//   plain      generate_run (the continuous-batching engine `alphaspin generate` uses), temperature 1
//   policy     mixture_sample_policy: the same draws through the mixture engine (one forward per step;
//              what a trained GFlowNet sampler costs to sample)
//   token      token-level geometric mixture (two forwards per step: pi_t and pi_0)
//   sir K      importance resampling, K candidates per answer
// pi_t is the base plus random rank-16 LoRA adapters (B ~ N(0, 0.02^2)); pi_0 the base.
// Prompts: the first P questions of a JSONL file (SFT layouts), in the chat template.
//
// usage: bench_mixture [MODEL.gguf] [DATA.jsonl] [P] [MAX_NEW] [K...]
// Medians of 3 runs (1 for SIR with K > 4); seconds per answer and per generated token.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "generate/generate.h"
#include "mixture/mixture.h"
#include "model/model.h"
#include "tokenizer/chat.h"
#include "tokenizer/tokenizer.h"
#include "train/sft.h"
#include "train/train.h"
#include "util/common.h"

static int cmp_d(const void *a, const void *b) { return (*(const double *)a > *(const double *)b) - (*(const double *)a < *(const double *)b); }

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: bench_mixture [MODEL.gguf] [DATA.jsonl] [P] [MAX_NEW] [K...]\nCost per answer of the geometric-mixture samplers against plain sampling.\n");
            return 0;
        }
    char defpath[4096];
    snprintf(defpath, sizeof defpath, "%s/.cache/alphaspin/models/SmolLM2-135M-Instruct.Q4_1.gguf", getenv("HOME") ? getenv("HOME") : "");
    const char *mpath = argc > 1 ? argv[1] : defpath, *dpath = argc > 2 ? argv[2] : "../shared/data/gsm8k/test.jsonl";
    const int P = argc > 3 ? atoi(argv[3]) : 4, max_new = argc > 4 ? atoi(argv[4]) : 64;
    int Ks[8] = {4, 16}, nK = 2;
    if (argc > 5) {
        nK = 0;
        for (int i = 5; i < argc && nK < 8; i++) Ks[nK++] = atoi(argv[i]);
    }
    model *m;
    tokenizer *tok;
    chat_template ct;
    sft_data *sd;
    if (model_load(&m, mpath) || tokenizer_load(&tok, m->file) || chat_template_init(&ct, m->file, NULL) || sft_data_load(&sd, dpath)) {
        fprintf(stderr, "bench_mixture: %s\n", as_last_error());
        return 1;
    }
    int32_t end = -1;
    {
        const char *te = chat_turn_end(&ct);
        int32_t *ids;
        size_t n;
        if (tokenizer_encode(tok, te, strlen(te), false, true, &ids, &n) || !n) return 1;
        end = ids[0];
        free(ids);
    }
    int32_t **pr = calloc((size_t)P, sizeof *pr);
    int64_t *np = calloc((size_t)P, sizeof *np);
    for (int i = 0; i < P && i < sd->n; i++) {
        const sft_example *e = &sd->ex[i];
        char *text = chat_render(&ct, e->msgs, 1, true);
        size_t n;
        tokenizer_encode(tok, text, strlen(text), false, true, &pr[i], &n);
        np[i] = (int64_t)n;
        free(text);
    }
    train_lora_config lc = {.rank = 16, .alpha = 32, .seed = 3};
    train_lora *lt = train_lora_new(&m->cfg, &lc);
    as_rng r;
    as_rng_seed(&r, 5);
    for (int t = 0; t < TRAIN_LORA_N_TARGETS; t++)
        for (int64_t i = 0; i < (int64_t)m->cfg.n_layer * lt->out[t] * 16; i++) {
            const double u1 = as_rng_uniform(&r) + 1e-300, u2 = as_rng_uniform(&r);
            lt->b[t][i] = (float)(0.02 * sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2));
        }
    model_lora vt;
    train_lora_view(lt, &vt);
    mixture_config c = {.precision = KERNEL_PRECISION_Q8, .alpha = 0.1f, .max_new_tokens = max_new, .end_ids = &end, .n_end_ids = 1,
                        .batch_size = 64, .seed = 1};
    printf("model %s, %d prompts, max %d new tokens, q8, %d threads\n", mpath, P, max_new, kernel_get_threads());
    printf("%-10s %10s %12s %12s %10s %8s\n", "sampler", "answers", "tokens/ans", "s/answer", "ms/token", "x plain");
    double plain = 0;
    mixture_sample *s = calloc((size_t)P * 64, sizeof *s);
    for (int which = 0; which < 3 + nK; which++) {
        const int K = which >= 3 ? Ks[which - 3] : 1;
        const int reps = K > 4 ? 1 : 3;
        double t[3], toks = 0;
        for (int rep = 0; rep < reps; rep++) {
            toks = 0;
            const double t0 = as_time();
            if (which == 0) {
                generate_request *req = calloc((size_t)P, sizeof *req);
                generate_result *res = calloc((size_t)P, sizeof *res);
                for (int i = 0; i < P; i++) {
                    req[i].prompt = pr[i], req[i].n_prompt = np[i], req[i].max_new_tokens = max_new;
                    req[i].sampling = sampler_params_default();
                    req[i].sampling.temperature = 1, req[i].sampling.top_k = 0, req[i].sampling.top_p = 1, req[i].sampling.min_p = 0;
                    req[i].sampling.seed = (uint64_t)(rep * 100 + i);
                }
                generate_options o = generate_options_default();
                o.precision = KERNEL_PRECISION_Q8;
                o.batch_size = 64;
                o.end_ids = &end, o.n_end_ids = 1;
                model_set_lora(m, &vt);
                if (generate_run(m, NULL, req, P, &o, res)) return fprintf(stderr, "%s\n", as_last_error()), 1;
                model_set_lora(m, NULL);
                for (int i = 0; i < P; i++) toks += (double)res[i].n_ids, generate_result_free(&res[i]);
                free(req), free(res);
            } else {
                c.seed = (uint64_t)rep + 1;
                int rc;
                if (which == 1) rc = mixture_sample_policy(m, &vt, 1.0f, &c, (const int32_t *const *)pr, np, P, s);
                else if (which == 2) rc = mixture_sample_token(m, &vt, NULL, &c, (const int32_t *const *)pr, np, P, s);
                else rc = mixture_sample_sir(m, &vt, NULL, &c, K, (const int32_t *const *)pr, np, P, s, NULL);
                if (rc) return fprintf(stderr, "%s\n", as_last_error()), 1;
                for (int i = 0; i < P; i++) toks += (double)s[i].n_ids * K, mixture_sample_free(&s[i]);
            }
            t[rep] = as_time() - t0;
        }
        qsort(t, (size_t)reps, sizeof(double), cmp_d);
        const double med = t[reps / 2], per = med / P;
        if (which == 0) plain = per;
        char name[32];
        if (which >= 3) snprintf(name, sizeof name, "sir K=%d", K);
        else snprintf(name, sizeof name, "%s", which == 0 ? "plain" : which == 1 ? "policy" : "token");
        printf("%-10s %10d %12.1f %12.3f %10.2f %8.2f\n", name, P, toks / P / K, per, 1e3 * med / toks, per / plain);
        fflush(stdout);
    }
    free(s);
    return 0;
}
