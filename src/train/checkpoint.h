// Checkpoints in the ecosystem's formats.
//
// LoRA adapters as Hugging Face PEFT writes them (save_pretrained of a
// LoraConfig model): DIR/adapter_model.safetensors with tensors
//   base_model.model.model.layers.<l>.self_attn.{q,k,v,o}_proj.lora_{A,B}.weight
//   base_model.model.model.layers.<l>.mlp.{gate,up,down}_proj.lora_{A,B}.weight
// (A: [r, in], B: [out, r], float32) and DIR/adapter_config.json (peft_type
// LORA, r, lora_alpha, lora_dropout, target_modules, ...).  The factors are in
// the Hugging Face row order: for llama the B rows of q and k are un-permuted
// from GGUF's adjacent rotary pairs (convert_hf_to_gguf.py's permute) on save
// and permuted again on load.
#ifndef AS_TRAIN_CHECKPOINT_H
#define AS_TRAIN_CHECKPOINT_H

#include "train/safetensors.h"
#include "train/train.h"

// Writes the adapters of m (atomically, file by file) into dir (created if
// needed).  base_model goes to base_model_name_or_path (may be NULL).
int train_lora_save_peft(const train_model *m, const char *dir, const char *base_model);
// Attaches adapters to m (which must have none) from a PEFT adapter folder.
// Refuses what it cannot represent exactly (rsLoRA, DoRA, bias, per-layer
// patterns, fan_in_fan_out, unknown target modules), missing, misshapen or
// unexpected tensors, with one error line naming the file and the field.
int train_lora_load_peft(train_model *m, const char *dir);
// The same adapters as an object of their own (train_lora_new), for a model
// of configuration cfg: e.g. to generate with them through model_set_lora.
int train_lora_read_peft(const model_config *cfg, const char *dir, train_lora **out);

// Training state for an exact resume: the trainable parameters (LoRA factors
// or all weights), the optimizer's moments and step count, and the RNG
// streams (the model's dropout stream and the caller's data-order stream), in
// one safetensors file whose metadata holds the SHA-256 of the tensor data.
// The write is atomic.  Loading refuses a file whose size, checksum,
// optimizer kind, LoRA shape or parameter count does not match m and o (which
// must be built as for the run that saved it).
//
// A trainer with state of its own (GFlowNet's prompt order and replay buffers,
// mixture/gfn.h) passes `extra`: its tensors and metadata go into the same
// file under the same checksum, so the two can never be from different steps.
// Names of its own prefix; a file that holds tensors nobody reads is refused,
// so one trainer's state is not taken for another's.
typedef struct train_state_extra {
    // Adds its tensors (referenced until the save returns) and metadata.
    void (*write)(void *user, st_writer *w);
    // Reads them back, from a file whose checksum holds, before anything of
    // the model or optimizer is checked (a different run is best named by the
    // trainer's own options): -1 + one as_error naming f->path.  On a failure
    // of the load the caller's state may hold part of the file.
    int (*read)(void *user, const st_file *f);
    int n_tensors; // how many tensors write adds (read checks the count)
    void *user;
} train_state_extra;
int train_state_save(const train_model *m, const optim *o, const as_rng *data_rng, const train_state_extra *x, const char *path);
int train_state_load(train_model *m, optim *o, as_rng *data_rng, const train_state_extra *x, const char *path);

#endif
