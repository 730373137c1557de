// Training's element-wise kernels moved to the backend: tensor/train_ops.h
// (the same functions).  Kept so that existing includes keep working.
#ifndef AS_TRAIN_FASTMATH_H
#define AS_TRAIN_FASTMATH_H
#include "tensor/train_ops.h"
#endif
