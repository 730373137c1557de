// Reading the JSON test vectors (tests/vectors/model_*.json written by
// tools/ref_model.py, train_ref_*.json by tools/ref_train.py): base64 float32
// tensors and GGUF metadata, written back to a GGUF file that model_load reads.
#ifndef AS_TRAIN_VECTORS_H
#define AS_TRAIN_VECTORS_H

#include "test_common.h"
#include "test_vectors.h"

#include <cjson/cJSON.h>

#include "gguf/gguf.h"
#include "tensor/quant.h"
#include "util/common.h"

static cJSON *tv_load_json(const char *name) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", AS_TEST_VECTORS, name);
    char *text;
    if (as_read_file(path, &text, NULL)) fail_msg("%s", as_last_error());
    cJSON *doc = cJSON_Parse(text);
    free(text);
    if (!doc) fail_msg("%s: not valid JSON", path);
    return doc;
}

// The float array stored under `key` of object o (base64); asserts its length when expect > 0.
static float *tv_floats(const cJSON *o, const char *key, size_t expect) {
    const cJSON *it = cJSON_GetObjectItem(o, key);
    if (!it || !cJSON_IsString(it)) fail_msg("test vector: key %s missing", key);
    size_t n;
    float *f = as_test_b64_floats(it->valuestring, &n);
    if (expect && n != expect) fail_msg("test vector: %s has %zu floats, expected %zu", key, n, expect);
    return f;
}

// Writes the GGUF of a vector file: its "metadata" list and "tensors" list;
// when lowp, matrices as F16 and norm vectors as BF16 (as tools/ref_model.py's
// logits_lowp assume).
static void tv_write_gguf(const cJSON *doc, const char *path, bool lowp) {
    gguf_writer *w = gguf_writer_init();
    const cJSON *md;
    cJSON_ArrayForEach(md, cJSON_GetObjectItem(doc, "metadata")) {
        const char *key = cJSON_GetObjectItem(md, "key")->valuestring, *type = cJSON_GetObjectItem(md, "type")->valuestring;
        const cJSON *v = cJSON_GetObjectItem(md, "value");
        if (!strcmp(type, "str")) gguf_write_str(w, key, v->valuestring);
        else if (!strcmp(type, "u32")) gguf_write_u32(w, key, (uint32_t)v->valuedouble);
        else if (!strcmp(type, "f32")) gguf_write_f32(w, key, (float)v->valuedouble);
        else fail_msg("unknown metadata type %s", type);
    }
    const cJSON *t;
    cJSON_ArrayForEach(t, cJSON_GetObjectItem(doc, "tensors")) {
        const cJSON *ne_j = cJSON_GetObjectItem(t, "ne");
        const uint32_t nd = (uint32_t)cJSON_GetArraySize(ne_j);
        int64_t ne[2] = {1, 1};
        for (uint32_t d = 0; d < nd; d++) ne[d] = (int64_t)cJSON_GetArrayItem(ne_j, (int)d)->valuedouble;
        float *data = tv_floats(t, "data", (size_t)(ne[0] * ne[1]));
        const char *name = cJSON_GetObjectItem(t, "name")->valuestring;
        if (lowp) {
            const ggml_type ty = nd == 2 ? GGML_TYPE_F16 : GGML_TYPE_BF16;
            uint16_t *h = as_malloc(sizeof(uint16_t) * (size_t)(ne[0] * ne[1]));
            for (int64_t j = 0; j < ne[0] * ne[1]; j++) h[j] = ty == GGML_TYPE_F16 ? as_f32_to_fp16(data[j]) : as_f32_to_bf16(data[j]);
            gguf_write_tensor(w, name, ty, nd, ne, h, sizeof(uint16_t) * (size_t)(ne[0] * ne[1]));
            free(h);
        } else {
            gguf_write_tensor(w, name, GGML_TYPE_F32, nd, ne, data, sizeof(float) * (size_t)(ne[0] * ne[1]));
        }
        free(data);
    }
    if (gguf_writer_save(w, path)) fail_msg("%s", as_last_error());
    gguf_writer_free(w);
}

#endif
