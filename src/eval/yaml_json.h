// A YAML document (libyaml) as a cJSON tree: mappings become objects,
// sequences arrays, scalars strings (the reader of each field converts; no
// implicit typing).  Anchors/aliases, tags and multi-document streams are
// refused; duplicate keys are an error.  lm-evaluation-harness's
// `key: !function module.name` becomes {"!function": "module.name", "!file":
// <name>, "!line": <line>} (eval_yaml_function reads it back).
#ifndef AS_EVAL_YAML_JSON_H
#define AS_EVAL_YAML_JSON_H

#include <stddef.h>

#include <cjson/cJSON.h>

// -1 + as_error "<name>:<line>: ..." on a syntax error or an unsupported construct.
int yaml_to_json(const char *text, size_t len, const char *name, cJSON **out);

#define YAML_FUNCTION_KEY "!function"
// The function name of such a value, else NULL.
static inline const char *yaml_function(const cJSON *v) {
    const cJSON *f = cJSON_IsObject(v) ? cJSON_GetObjectItemCaseSensitive(v, YAML_FUNCTION_KEY) : NULL;
    return cJSON_IsString(f) ? f->valuestring : NULL;
}

#endif
