// Fine-tuning is bitwise the same on every code path: three optimizer steps
// of sft_train (LoRA with dropout, and full fine-tuning) on a tiny random
// llama, with the kernels' ISA forced to scalar, avx2 and avx512 in turn
// (those this CPU has), 2 threads, write byte-identical adapters (or model),
// training state (AdamW's moments, the data stream) and report (log.jsonl
// without its two timing fields, and the losses sft_train returns).  The
// same holds for 1 and 3 threads: every product and reduction of training
// sums each element in an order fixed by its position alone.
#include "test_common.h"

#include <math.h>
#include <sys/stat.h>

#include "generate/tiny_llama.h"
#include "tensor/kernels_impl.h"
#include "train/sft.h"
#include "util/common.h"

static char dir[256], model_path[512], data_path[512];

// The files of a run's output folder, read into memory; log.jsonl without
// "tokens_per_s" and "elapsed_s" (wall-clock measurements).
typedef struct run_files {
    char *data[4];
    size_t len[4];
    sft_result res;
} run_files;

static const char *const lora_files[] = {"adapter_model.safetensors", "adapter_config.json", "train_state.safetensors", "log.jsonl"};
static const char *const full_files[] = {"model.gguf", "train_state.safetensors", "log.jsonl", NULL};

static void strip_field(char *s, const char *key) {
    char *p;
    while ((p = strstr(s, key))) {
        char *e = p + strlen(key);
        while (*e && *e != ',' && *e != '}') e++;
        if (*e == ',') e++;
        while (*e == ' ') e++;
        memmove(p, e, strlen(e) + 1);
    }
}

static void run(bool lora, kernel_isa isa, int threads, run_files *out) {
    if (kernel_force_isa(isa)) fail_msg("kernel_force_isa(%s)", kernel_isa_name(isa));
    char od[600];
    snprintf(od, sizeof od, "%s/run_%s_%s_%d", dir, lora ? "lora" : "full", kernel_isa_name(isa), threads);
    sft_config c;
    sft_config_default(&c);
    c.model_path = model_path, c.data_path = data_path, c.out_dir = od, c.chat_template = "chatml";
    c.lora = lora;
    // Scale 7 / 5 = 1.4: no power of two, so that alpha acc is rounded (a fused
    // alpha acc + y would then differ from kernel_sgemm's epilogue).
    c.lora_cfg.rank = 5, c.lora_cfg.alpha = 7.0f, c.lora_cfg.dropout = 0.1f;
    c.optim.lr = 1e-2f;
    c.batch_size = 3, c.micro_batch = 2, c.max_steps = 3, c.max_len = 80, c.eval_fraction = 0.2, c.eval_every = 2, c.seed = 5;
    c.threads = threads, c.quiet = true;
    if (sft_train(&c, &out->res)) fail_msg("%s", as_last_error());
    assert_int_equal(out->res.steps, 3);
    const char *const *names = lora ? lora_files : full_files;
    for (int i = 0; i < 4; i++) {
        out->data[i] = NULL, out->len[i] = 0;
        if (!names[i]) continue;
        char p[700];
        snprintf(p, sizeof p, "%s/%s", od, names[i]);
        if (as_read_file(p, &out->data[i], &out->len[i])) fail_msg("%s", as_last_error());
        if (!strcmp(names[i], "log.jsonl")) {
            strip_field(out->data[i], "\"tokens_per_s\": ");
            strip_field(out->data[i], "\"elapsed_s\": ");
            out->len[i] = strlen(out->data[i]);
        }
        unlink(p);
    }
    rmdir(od);
    kernel_force_isa(KERNEL_ISA_AUTO);
}

static void expect_same(bool lora, const run_files *a, const char *a_what, const run_files *b, const char *b_what) {
    const char *const *names = lora ? lora_files : full_files;
    for (int i = 0; i < 4; i++) {
        if (!names[i]) continue;
        if (a->len[i] != b->len[i] || memcmp(a->data[i], b->data[i], a->len[i]))
            fail_msg("%s: %s differs between %s and %s", lora ? "LoRA" : "full", names[i], a_what, b_what);
    }
    assert_memory_equal(&a->res.first_loss, &b->res.first_loss, sizeof(double));
    assert_memory_equal(&a->res.last_loss, &b->res.last_loss, sizeof(double));
    assert_memory_equal(&a->res.eval_loss, &b->res.eval_loss, sizeof(double));
}

static void free_files(run_files *f) {
    for (int i = 0; i < 4; i++) free(f->data[i]);
}

static void check_isas(bool lora) {
    run_files ref, other;
    run(lora, KERNEL_ISA_SCALAR, 2, &ref);
    assert_true(ref.len[lora ? 0 : 0] > 0 && isfinite(ref.res.last_loss) && isfinite(ref.res.eval_loss));
    printf("  %s, scalar: loss %.6f -> %.6f, eval %.6f\n", lora ? "LoRA" : "full", ref.res.first_loss, ref.res.last_loss, ref.res.eval_loss);
    for (int isa = KERNEL_ISA_AVX2; isa <= KERNEL_ISA_AVX512; isa++) {
        if (!kernel_isa_available((kernel_isa)isa)) {
            printf("  %s: not on this CPU\n", kernel_isa_name((kernel_isa)isa));
            continue;
        }
        run(lora, (kernel_isa)isa, 2, &other);
        expect_same(lora, &ref, "scalar", &other, kernel_isa_name((kernel_isa)isa));
        printf("  %s, %s: byte-identical to scalar\n", lora ? "LoRA" : "full", kernel_isa_name((kernel_isa)isa));
        free_files(&other);
    }
    // Other thread counts, on the best path: the same bytes.
    for (int nth = 1; nth <= 3; nth += 2) {
        run(lora, KERNEL_ISA_AUTO, nth, &other);
        char what[64];
        snprintf(what, sizeof what, "%s with %d threads", kernel_isa_name(kernel_current_isa()), nth);
        expect_same(lora, &ref, "scalar with 2 threads", &other, what);
        free_files(&other);
    }
    free_files(&ref);
}

static void test_lora_isas(void **state) {
    (void)state;
    check_isas(true);
}

static void test_full_isas(void **state) {
    (void)state;
    check_isas(false);
}

int main(void) {
    char *d = as_test_tmpdir();
    if (!d) return 1;
    snprintf(dir, sizeof dir, "%s", d);
    snprintf(model_path, sizeof model_path, "%s/tiny.gguf", dir);
    snprintf(data_path, sizeof data_path, "%s/sft.jsonl", dir);
    tiny_llama_cfg tc = tiny_llama_default();
    if (tiny_llama_write(model_path, &tc, NULL)) {
        fprintf(stderr, "%s\n", as_last_error());
        return 1;
    }
    FILE *f = fopen(data_path, "wb");
    if (!f) return 1;
    const char *qa[][2] = {{"What color is the sky?", "Blue."}, {"Name a fruit.", "Apple."},  {"2+3?", "5"},       {"Opposite of hot?", "Cold."},
                           {"Capital of Italy?", "Rome."},      {"Largest planet?", "Jupiter."}, {"H2O is?", "Water."}, {"First letter?", "A"},
                           {"Sound of a cat?", "Meow."},        {"Freezing point of water in C?", "0"}};
    for (size_t i = 0; i < AS_ARRAY_LEN(qa); i++) fprintf(f, "{\"question\": \"%s\", \"answer\": \"%s\"}\n", qa[i][0], qa[i][1]);
    fclose(f);
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_lora_isas), cmocka_unit_test(test_full_isas)};
    const int rc = cmocka_run_group_tests(tests, NULL, NULL);
    unlink(model_path), unlink(data_path), rmdir(dir);
    return rc;
}
