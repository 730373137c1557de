// Trained weights back out: GGUF files that llama.cpp (and src/model) load,
// and folding LoRA adapters into the base.
#ifndef AS_TRAIN_EXPORT_H
#define AS_TRAIN_EXPORT_H

#include "gguf/gguf.h"
#include "train/train.h"

// Writes m's weights as a GGUF model (atomically).  Every metadata key of
// meta_src (the GGUF file or Hugging Face folder the model came from:
// tokenizer, chat template, names) is
// copied, then the architecture keys are written from m->cfg and
// general.file_type from `type`.  Norm vectors stay F32; matrices are stored as
// `type`: F32, F16, BF16 or Q8_0 (a matrix whose rows are not a multiple of
// Q8_0's 32-element block is written as F16, as llama.cpp's converter does).
// Adapters are NOT included: merge them first (train_lora_merge).
int train_export_gguf(const train_model *m, const char *meta_src, const char *path, ggml_type type);

// Writes m as a Hugging Face transformers model folder (atomically, file by
// file; dir is created): model.safetensors with transformers' tensor names
// and layout (float32; llama q/k rows un-permuted, Gemma norms stored as
// w - 1, no lm_head when tied) and config.json (LlamaForCausalLM or
// GemmaForCausalLM).  When meta_src (a GGUF file or a Hugging Face folder)
// has a tokenizer, its files are written too (tokenizer.json,
// tokenizer_config.json with the chat template: tokenizer/tokenizer_hf.h) and
// generation_config.json with the bos/eos ids.
int train_export_hf(const train_model *m, const char *meta_src, const char *dir);

// Folds the adapters into the base weights, W += (alpha / r) B A, and removes
// them: the model then gives the adapted log-probabilities by itself.
// -1 + as_error when there are no adapters.
int train_lora_merge(train_model *m);

#endif
