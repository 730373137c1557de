#include "eval/yaml_json.h"

#include <stdbool.h>
#include <string.h>
#include <yaml.h>

#include "util/common.h"

#define YAML_MAX_DEPTH 64

typedef struct yparser {
    yaml_parser_t p;
    const char *name;
} yparser;

static int next_event(yparser *y, yaml_event_t *ev) {
    if (!yaml_parser_parse(&y->p, ev))
        return as_error("%s:%zu: YAML syntax error: %s", y->name, y->p.problem_mark.line + 1,
                        y->p.problem ? y->p.problem : "unknown");
    return AS_OK;
}

// Parses the node whose first event is *ev (consumed) into *out.
static int parse_node(yparser *y, yaml_event_t *ev, int depth, cJSON **out) {
    *out = NULL;
    size_t line = ev->start_mark.line + 1;
    if (depth > YAML_MAX_DEPTH) return as_error("%s:%zu: nesting deeper than %d", y->name, line, YAML_MAX_DEPTH);
    switch (ev->type) {
    case YAML_SCALAR_EVENT:
        if (ev->data.scalar.anchor) return as_error("%s:%zu: anchors are not supported", y->name, line);
        {
            char *tmp = as_strndup((const char *)ev->data.scalar.value, ev->data.scalar.length);
            *out = cJSON_CreateString(tmp);
            free(tmp);
        }
        return AS_OK;
    case YAML_ALIAS_EVENT: return as_error("%s:%zu: aliases are not supported", y->name, line);
    case YAML_SEQUENCE_START_EVENT: {
        if (ev->data.sequence_start.anchor) return as_error("%s:%zu: anchors are not supported", y->name, line);
        cJSON *arr = cJSON_CreateArray();
        for (;;) {
            yaml_event_t e;
            if (next_event(y, &e) != AS_OK) { cJSON_Delete(arr); return AS_FAIL; }
            if (e.type == YAML_SEQUENCE_END_EVENT) { yaml_event_delete(&e); break; }
            cJSON *child;
            int rc = parse_node(y, &e, depth + 1, &child);
            yaml_event_delete(&e);
            if (rc != AS_OK) { cJSON_Delete(arr); return AS_FAIL; }
            cJSON_AddItemToArray(arr, child);
        }
        *out = arr;
        return AS_OK;
    }
    case YAML_MAPPING_START_EVENT: {
        if (ev->data.mapping_start.anchor) return as_error("%s:%zu: anchors are not supported", y->name, line);
        cJSON *obj = cJSON_CreateObject();
        for (;;) {
            yaml_event_t k;
            if (next_event(y, &k) != AS_OK) { cJSON_Delete(obj); return AS_FAIL; }
            if (k.type == YAML_MAPPING_END_EVENT) { yaml_event_delete(&k); break; }
            size_t kline = k.start_mark.line + 1;
            if (k.type != YAML_SCALAR_EVENT) {
                yaml_event_delete(&k);
                cJSON_Delete(obj);
                return as_error("%s:%zu: mapping keys must be plain strings", y->name, kline);
            }
            char *key = as_strndup((const char *)k.data.scalar.value, k.data.scalar.length);
            yaml_event_delete(&k);
            if (cJSON_GetObjectItemCaseSensitive(obj, key)) {
                as_error("%s:%zu: duplicate key '%s'", y->name, kline, key);
                free(key);
                cJSON_Delete(obj);
                return AS_FAIL;
            }
            yaml_event_t v;
            if (next_event(y, &v) != AS_OK) { free(key); cJSON_Delete(obj); return AS_FAIL; }
            // lm-eval's `key: !function module.name` names Python code: kept as
            // {"!function": name, "!file": file, "!line": line} for the reader to
            // refuse (or to map to a built-in equivalent).
            if (v.type == YAML_SCALAR_EVENT && v.data.scalar.tag && !strcmp((const char *)v.data.scalar.tag, "!function")) {
                cJSON *fn = cJSON_CreateObject();
                char *name = as_strndup((const char *)v.data.scalar.value, v.data.scalar.length);
                cJSON_AddStringToObject(fn, YAML_FUNCTION_KEY, name);
                cJSON_AddStringToObject(fn, "!file", y->name);
                cJSON_AddNumberToObject(fn, "!line", (double)(v.start_mark.line + 1));
                free(name);
                yaml_event_delete(&v);
                cJSON_AddItemToObject(obj, key, fn);
                free(key);
                continue;
            }
            cJSON *child;
            int rc = parse_node(y, &v, depth + 1, &child);
            yaml_event_delete(&v);
            if (rc != AS_OK) { free(key); cJSON_Delete(obj); return AS_FAIL; }
            cJSON_AddItemToObject(obj, key, child);
            free(key);
        }
        *out = obj;
        return AS_OK;
    }
    default: return as_error("%s:%zu: unexpected YAML event", y->name, line);
    }
}

int yaml_to_json(const char *text, size_t len, const char *name, cJSON **out) {
    *out = NULL;
    yparser y = {.name = name};
    if (!yaml_parser_initialize(&y.p)) return as_error("%s: cannot initialise the YAML parser", name);
    yaml_parser_set_input_string(&y.p, (const unsigned char *)text, len);
    int rc = AS_OK;
    yaml_event_t ev;
    cJSON *root = NULL;
    // STREAM-START, DOCUMENT-START, node, DOCUMENT-END, STREAM-END.
    if ((rc = next_event(&y, &ev)) != AS_OK) goto done;
    yaml_event_delete(&ev);
    if ((rc = next_event(&y, &ev)) != AS_OK) goto done;
    if (ev.type == YAML_STREAM_END_EVENT) {
        yaml_event_delete(&ev);
        rc = as_error("%s: empty YAML document", name);
        goto done;
    }
    yaml_event_delete(&ev);
    if ((rc = next_event(&y, &ev)) != AS_OK) goto done;
    rc = parse_node(&y, &ev, 0, &root);
    yaml_event_delete(&ev);
    if (rc != AS_OK) goto done;
    if ((rc = next_event(&y, &ev)) != AS_OK) goto done;
    yaml_event_delete(&ev); // DOCUMENT-END
    if ((rc = next_event(&y, &ev)) != AS_OK) goto done;
    if (ev.type != YAML_STREAM_END_EVENT) rc = as_error("%s:%zu: only one YAML document is allowed", name, ev.start_mark.line + 1);
    yaml_event_delete(&ev);
done:
    yaml_parser_delete(&y.p);
    if (rc != AS_OK) {
        cJSON_Delete(root);
        return AS_FAIL;
    }
    *out = root;
    return AS_OK;
}
