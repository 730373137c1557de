// Seed corpus for fuzz_hf: config.json files (mode 0) and tokenizer.json files
// with and without a tokenizer_config.json (mode 1), see fuzz_hf.c.
// Usage: seed_hf OUTDIR
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/common.h"

static int save(const char *dir, const char *name, uint8_t mode, const char *a, const char *b) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    const size_t la = strlen(a), lb = b ? strlen(b) + 1 : 0;
    uint8_t *buf = as_malloc(1 + la + lb);
    buf[0] = mode;
    memcpy(buf + 1, a, la);
    if (b) buf[1 + la] = 0, memcpy(buf + 2 + la, b, lb - 1);
    int rc = as_write_file_atomic(path, buf, 1 + la + lb);
    free(buf);
    if (rc) fprintf(stderr, "seed_hf: %s\n", as_last_error());
    return rc;
}

#define PRE_SMOL                                                                                                                            \
    "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Digits\",\"individual_digits\":true},{\"type\":\"ByteLevel\",\"add_prefix_space\":" \
    "false,\"trim_offsets\":true,\"use_regex\":true}]}"
#define PRE_LLAMA3                                                                                                                          \
    "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?" \
    "\\\\p{L}+|\\\\p{N}{1,3}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"},\"behavior\":\"Isolated\",\"invert\":false}," \
    "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":false}]}"
#define VOCAB "\"vocab\":{\"<|endoftext|>\":0,\"H\":1,\"e\":2,\"l\":3,\"o\":4,\"He\":5,\"ll\":6,\"\\u0120\":7,\"1\":8,\"2\":9,\"3\":10}"
#define MERGES "\"merges\":[\"H e\",[\"l\",\"l\"]]"

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s OUTDIR\n", argv[0]);
        return 2;
    }
    const char *d = argv[1];
    int rc = 0;
    rc |= save(d, "config_llama", 0,
               "{\"model_type\":\"llama\",\"vocab_size\":49152,\"hidden_size\":576,\"intermediate_size\":1536,\"num_hidden_layers\":30,"
               "\"num_attention_heads\":9,\"num_key_value_heads\":3,\"head_dim\":64,\"max_position_embeddings\":8192,\"rms_norm_eps\":1e-05,"
               "\"rope_theta\":100000,\"tie_word_embeddings\":true,\"hidden_act\":\"silu\"}",
               NULL);
    rc |= save(d, "config_gemma", 0,
               "{\"model_type\":\"gemma\",\"vocab_size\":256000,\"hidden_size\":2048,\"intermediate_size\":16384,\"num_hidden_layers\":18,"
               "\"num_attention_heads\":8,\"num_key_value_heads\":1,\"head_dim\":256,\"rope_parameters\":{\"rope_theta\":10000,\"rope_type\":\"default\"},"
               "\"hidden_activation\":\"gelu_pytorch_tanh\"}",
               NULL);
    rc |= save(d, "tok_smollm", 1,
               "{\"added_tokens\":[{\"id\":0,\"content\":\"<|endoftext|>\",\"special\":true}],\"normalizer\":null,\"pre_tokenizer\":" PRE_SMOL
               ",\"model\":{\"type\":\"BPE\"," VOCAB "," MERGES "}}",
               "{\"eos_token\":\"<|endoftext|>\",\"chat_template\":\"{{ messages }}\"}");
    rc |= save(d, "tok_llama3", 1,
               "{\"added_tokens\":[{\"id\":0,\"content\":\"<|endoftext|>\",\"special\":true}],\"pre_tokenizer\":" PRE_LLAMA3
               ",\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<|endoftext|>\",\"type_id\":0}},"
               "{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}]},\"model\":{\"type\":\"BPE\",\"ignore_merges\":true," VOCAB "," MERGES "}}",
               "{\"bos_token\":{\"content\":\"<|endoftext|>\"}}");
    rc |= save(d, "tok_spm", 1,
               "{\"added_tokens\":[{\"id\":1,\"content\":\"<s>\",\"special\":true}],\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":["
               "{\"type\":\"Prepend\",\"prepend\":\"\\u2581\"},{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\\u2581\"}]},"
               "\"pre_tokenizer\":null,\"model\":{\"type\":\"BPE\",\"byte_fallback\":true,\"unk_token\":\"<unk>\",\"vocab\":{\"<unk>\":0,\"<s>\":1,"
               "\"<0x41>\":2,\"\\u2581\":3,\"x\":4,\"\\u2581x\":5},\"merges\":[\"\\u2581 x\"]}}",
               "{\"bos_token\":\"<s>\",\"add_bos_token\":true}");
    return rc ? 1 : 0;
}
