// The safetensors reader and writer moved to src/model (the inference model
// reads Hugging Face folders too); this name stays for the files that use it.
#include "model/safetensors.h"
