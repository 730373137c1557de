// Hugging Face model folders for inference: config.json (model_type llama or
// gemma), model.safetensors or the shards of model.safetensors.index.json
// (F32, F16 or BF16), and the tokenizer files (tokenizer/tokenizer_hf.h).
//
// The folder is brought into the GGUF layout that llama.cpp's
// convert_hf_to_gguf.py writes (llama q/k rows permuted so that rotary pairs
// are adjacent, Gemma norms stored as 1 + w, tokenizer metadata) as one GGUF
// image in memory; the matrices keep their stored type (kernel_matmul reads
// F32/F16/BF16), and model_from_gguf binds it as it binds a file.  So
// everything that reads model->file (tokenizer_load, chat_template_init,
// exports) works on a folder unchanged.  Peak memory while loading: about
// twice the weights.
#ifndef AS_MODEL_HF_H
#define AS_MODEL_HF_H

#include <stdbool.h>
#include <stddef.h>

#include "gguf/gguf.h"
#include "model/model.h"

// config.json text into c (sizes, RoPE, activation, tie).  Refuses other
// model types, scaled RoPE and other activations.  -1 + as_error naming path.
int model_hf_parse_config(model_config *c, const char *json, size_t len, const char *path);

// A folder's metadata (config as <arch>.* keys and, when tokenizer.json is
// present, the tokenizer.* keys) written into w.
int model_hf_write_meta(gguf_writer *w, const char *dir, model_config *cfg);

// The whole folder as an in-memory GGUF (the image that model_load_hf binds).
// with_tensors false: metadata only (for exports that copy a source's keys).
int model_hf_open(gguf_file **out, const char *dir, bool with_tensors);

// model_load for a folder (model_load itself dispatches folders here).
int model_load_hf(model **out, const char *dir);

// True when path is a directory.
bool model_path_is_dir(const char *path);
// A GGUF file, or a Hugging Face folder's metadata (model_hf_open without tensors).
int model_open_meta(gguf_file **out, const char *path);

#endif
