// Training speed and memory (issue 3, item 9; on a GPU issue 22, item 5): a
// DPO-shaped step on a real model (a GGUF file or a Hugging Face folder).  P pairs (chosen, rejected) of T tokens share a prompt of prompt_len
// tokens; the step is the policy's forward and backward over the 2P sequences
// with the upstream gradient of the DPO sigmoid loss on the per-sequence
// answer log-prob sums (the reference log-probs are precomputed, outside the
// step).  Prints one JSON line: median step time, tokens/s, peak RSS (with
// AdamW's state allocated; its update runs after each step, untimed).
//
//   bench_train --model M [--mode lora|full] [--precision f32|bf16] [--threads 2]
//               [--pairs 4] [--len 256] [--prompt 64] [--steps 5] [--rank 16]
//               [--checkpointing 0|1] [--device cpu|cuda[:N]]
// --device puts the training model on that backend (as_backend_open, as the
// command line's --device; train_set_backend).
// bench/run_train.sh runs it and the PyTorch peer (bench/peer_torch_train.py).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "tensor/kernels.h"
#include "train/train.h"
#include "util/common.h"
#include "util/rng.h"

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double cpu_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static double peak_rss_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0;
}

int main(int argc, char **argv) {
    const char *model_path = NULL, *mode = "lora", *precision = "f32", *device = NULL;
    int threads = 2, pairs = 4, len = 256, prompt = 64, steps = 5, rank = 16, ckpt = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            printf("usage: bench_train --model M [--mode lora|full] [--precision f32|bf16] [--threads 2] [--pairs 4] [--len 256]\n"
                   "                   [--prompt 64] [--steps 5] [--rank 16] [--checkpointing 0|1] [--device cpu|cuda[:N]]\n"
                   "A DPO-shaped training step (forward + backward over 2 x pairs sequences); prints one JSON line.\n"
                   "--model takes a GGUF file or a Hugging Face folder (config.json + safetensors).\n");
            return 0;
        }
        if (!v) as_die("bench_train: %s needs a value", a);
        if (!strcmp(a, "--model")) model_path = v;
        else if (!strcmp(a, "--mode")) mode = v;
        else if (!strcmp(a, "--precision")) precision = v;
        else if (!strcmp(a, "--threads")) threads = atoi(v);
        else if (!strcmp(a, "--pairs")) pairs = atoi(v);
        else if (!strcmp(a, "--len")) len = atoi(v);
        else if (!strcmp(a, "--prompt")) prompt = atoi(v);
        else if (!strcmp(a, "--steps")) steps = atoi(v);
        else if (!strcmp(a, "--rank")) rank = atoi(v);
        else if (!strcmp(a, "--checkpointing")) ckpt = atoi(v);
        else if (!strcmp(a, "--device")) device = v;
        else as_die("bench_train: unknown option %s", a);
        i++;
    }
    if (!model_path) as_die("bench_train: --model is required");
    const bool lora = !strcmp(mode, "lora");
    if (!lora && strcmp(mode, "full")) as_die("bench_train: --mode %s: expected lora or full", mode);
    train_precision prec = TRAIN_PRECISION_F32;
    if (!strcmp(precision, "bf16")) prec = TRAIN_PRECISION_BF16;
    else if (strcmp(precision, "f32")) as_die("bench_train: --precision %s: expected f32 or bf16", precision);
    kernel_init();
    kernel_set_threads(threads);
    // The device first, so that a machine without one fails at once, in one line.
    const as_backend *be = NULL;
    if (device && !(be = as_backend_open(device))) {
        fprintf(stderr, "bench_train: --device %s: %s\n", device, as_last_error());
        return 1;
    }

    train_model *m;
    if (train_model_load(&m, model_path)) as_die("bench_train: %s", as_last_error());
    if (be && train_set_backend(m, be)) as_die("bench_train: --device %s: %s", device, as_last_error());
    train_set_threads(m, threads);
    train_set_checkpointing(m, ckpt != 0);
    train_set_precision(m, prec);
    if (lora) {
        train_lora_config lc = {.rank = rank, .alpha = 2.0f * (float)rank, .dropout = 0.05f, .targets = 0, .seed = 1};
        if (train_lora_attach(m, &lc)) as_die("bench_train: %s", as_last_error());
    }

    // Random token ids; chosen and rejected answers differ, the prompt is shared.
    const int nseq = 2 * pairs;
    int32_t *tokens = as_malloc(sizeof(int32_t) * (size_t)nseq * (size_t)len), *lens = as_malloc(sizeof(int32_t) * (size_t)nseq);
    int32_t *plen = as_malloc(sizeof(int32_t) * (size_t)nseq);
    as_rng rng;
    as_rng_seed(&rng, 1234);
    for (int p = 0; p < pairs; p++)
        for (int i = 0; i < len; i++) {
            const int32_t t = 100 + (int32_t)as_rng_below(&rng, (uint64_t)m->cfg.n_vocab - 200);
            tokens[(2 * p) * len + i] = t;
            tokens[(2 * p + 1) * len + i] = i < prompt ? t : 100 + (int32_t)as_rng_below(&rng, (uint64_t)m->cfg.n_vocab - 200);
        }
    for (int s = 0; s < nseq; s++) lens[s] = len, plen[s] = prompt;
    train_batch b = {.n_seq = nseq, .n_ctx = len, .tokens = tokens, .len = lens, .prompt_len = plen};

    // Reference log-probs: the frozen model's (adapters off for LoRA; for full
    // fine-tuning the initial weights), computed once outside the timed step.
    float *ref = as_malloc(sizeof(float) * (size_t)nseq), *lp = as_malloc(sizeof(float) * (size_t)nseq);
    float *dlp = as_malloc(sizeof(float) * (size_t)nseq);
    if (lora) train_set_adapters(m, false);
    if (train_forward(m, &b, ref, NULL)) as_die("bench_train: %s", as_last_error());
    if (lora) train_set_adapters(m, true);
    b.backward = true; // the timed forward passes are each followed by a backward pass

    // AdamW state (two moments per trainable parameter) so that the peak RSS is
    // a real training run's; the update itself runs outside the timed step.
    float *params, *grads;
    const optim_segment *segs;
    int n_segs;
    const size_t n_train = train_trainable(m, &params, &grads, &segs, &n_segs);
    optim_config oc;
    optim_config_default(&oc, OPTIM_ADAMW);
    oc.total_steps = steps + 1;
    optim *opt;
    if (optim_init(&opt, &oc, n_train)) as_die("bench_train: %s", as_last_error());
    const double beta = 0.1;
    double *times = as_malloc(sizeof(double) * (size_t)(steps + 1)), *cpu = as_malloc(sizeof(double) * (size_t)(steps + 1));
    double loss = 0.0;
    for (int it = 0; it <= steps; it++) { // step 0 warms up (allocations, page faults)
        train_zero_grad(m);
        const double t0 = as_time(), c0 = cpu_seconds();
        if (train_forward(m, &b, lp, NULL)) as_die("bench_train: %s", as_last_error());
        // DPO: L = -mean_p log sigmoid(beta ((c - c_ref) - (r - r_ref)))
        loss = 0.0;
        for (int p = 0; p < pairs; p++) {
            const double z = beta * ((lp[2 * p] - ref[2 * p]) - (lp[2 * p + 1] - ref[2 * p + 1]));
            loss += log1p(exp(-z)) / pairs;
            const double g = -beta / (1.0 + exp(z)) / pairs; // dL/dz * dz/dc
            dlp[2 * p] = (float)g, dlp[2 * p + 1] = (float)-g;
        }
        if (train_backward(m, dlp)) as_die("bench_train: %s", as_last_error());
        times[it] = as_time() - t0, cpu[it] = cpu_seconds() - c0;
        fprintf(stderr, "  step %d: %.3f s (cpu %.3f s)\n", it, times[it], cpu[it]);
        train_optim_step(m, opt, NULL, NULL);
    }
    qsort(times + 1, (size_t)steps, sizeof(double), cmp_double);
    qsort(cpu + 1, (size_t)steps, sizeof(double), cmp_double);
    const double med = steps % 2 ? times[1 + steps / 2] : 0.5 * (times[steps / 2] + times[1 + steps / 2]);
    const double cmed = steps % 2 ? cpu[1 + steps / 2] : 0.5 * (cpu[steps / 2] + cpu[1 + steps / 2]);
    const double ntok = (double)nseq * len;
    printf("{\"engine\": \"alphaspin\", \"device\": \"%s\", \"mode\": \"%s\", \"precision\": \"%s\", \"threads\": %d, \"checkpointing\": %s, "
           "\"tokens\": %.0f, \"step_s_median\": %.4f, \"tokens_per_s\": %.2f, \"cpu_s_median\": %.4f, \"peak_rss_mb\": %.0f, \"activation_mb\": %.0f, "
           "\"loss\": %.6f, \"cpu\": \"%s\"}\n",
           be ? device : "cpu", mode, precision, threads, ckpt ? "true" : "false", ntok, med, ntok / med, cmed, peak_rss_mb(),
           (double)train_activation_bytes(m) / (1024.0 * 1024.0), loss, cpu_describe());
    free(tokens), free(lens), free(plen), free(ref), free(lp), free(dlp), free(times), free(cpu);
    optim_free(opt);
    train_model_free(m);
    return 0;
}
