// The training graph's layers moved to the backend: tensor/train_graph.h (the
// same functions, reached by the training model through as_backend).  Kept so
// that existing includes keep working.
#ifndef AS_TRAIN_OPS_H
#define AS_TRAIN_OPS_H
#include "tensor/train_graph.h"
#endif
