// The LoRA products moved to the backend: tensor/lora_gemm.h (the same
// functions).  Kept so that existing includes keep working.
#ifndef AS_TRAIN_LORA_GEMM_H
#define AS_TRAIN_LORA_GEMM_H
#include "tensor/lora_gemm.h"
#endif
