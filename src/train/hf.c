// Hugging Face model folders read into a training model: the inference
// loader (model/model_hf.h) brings the folder into the GGUF layout llama.cpp's
// convert_hf_to_gguf.py writes (llama q/k rows permuted, Gemma norms 1 + w),
// and the fp32 master copy is taken from that.
#include "model/model_hf.h"
#include "train/train.h"
#include "util/common.h"

int train_model_load_hf(train_model **out, const char *dir) {
    *out = NULL;
    model *inf;
    if (model_load_hf(&inf, dir)) return AS_FAIL;
    const int rc = train_model_from_model(out, inf);
    model_free(inf);
    return rc;
}
