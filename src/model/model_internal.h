// Private to src/model: what model.c and forward.c share.
#ifndef AS_MODEL_INTERNAL_H
#define AS_MODEL_INTERNAL_H

struct model_scratch;
void model_scratch_free(struct model_scratch *s);

#endif
