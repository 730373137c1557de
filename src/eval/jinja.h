// A Jinja2 subset for task templates (doc_to_text, doc_to_choice, ... of
// alphaspin's and lm-evaluation-harness's task files), evaluated as lm-eval's
// Environment(undefined=StrictUndefined, keep_trailing_newline=True) does,
// with its regex_replace filter.  tests/eval/test_jinja.c holds jinja2 3.1's
// own output for each construct.
//
// Templates: text, {{ expr }}, {% if %}/{% elif %}/{% else %}/{% endif %},
// {% for x in xs [if cond] %} (and `for k, v in ...`; loop.index, index0,
// revindex, revindex0, first, last, length) / {% else %} / {% endfor %},
// {% set name = expr %}, {# comments #}, whitespace control ({{- -}}, {%- -%}).
// Other tags (macro, block, include, raw, ...) are errors.
// Expressions: names (the document's keys; the global range()), literals
// ('..', "..", numbers, true/false/none, [lists], (tuples), {dicts}), x.attr,
// x[i], x[a:b:c], method calls (str: strip/lstrip/rstrip, split/rsplit,
// splitlines, replace, lower, upper, capitalize, title, startswith, endswith,
// find/rfind, index/rindex, count, join, isdigit, isnumeric, isdecimal,
// isalpha, isalnum, isspace, isupper, islower; list: index, count; dict: get,
// keys, values, items), + - * / // % **, ~, comparisons (chained), in / not
// in, and/or/not, `a if c else b` (no else: ""), filters (abs, capitalize,
// count, default/d, first, float, int, items, join, last, length, list, lower,
// max, min, regex_replace, replace, reverse, round, safe, sort, string, sum,
// title, trim, upper, wordcount) and tests (`is defined`, undefined, none,
// string, number, integer, float, mapping, sequence, iterable, boolean, true,
// false, callable, even, odd, divisibleby, eq, ne, lt, le, gt, ge, in, lower,
// upper).  Values are Python's: text as code points (len, indexing, slicing),
// Python's str() and repr() when printed (a list prints as ['a', 'b']),
// Python's whitespace for strip/split/trim, integers as int64 (an overflow is
// an error).  A JSON number without a fraction is an int.  An undefined name,
// a missing key or an index out of range is an error when used, as
// StrictUndefined.  Case mappings cover ASCII, Latin-1, Latin Extended-A,
// Greek and Cyrillic; isdigit is ASCII digits.
#ifndef AS_EVAL_JINJA_H
#define AS_EVAL_JINJA_H

#include <stdbool.h>

#include <cjson/cJSON.h>

typedef struct jinja_tpl jinja_tpl;

// Compiles a template.  -1 + as_error "<what>: position N: <problem>" (N the
// character's 1-based position in the template) on a syntax error, an unknown
// filter or test, or an unsupported tag.
int jinja_compile(const char *src, const char *what, jinja_tpl **out);
void jinja_free(jinja_tpl *t);

// Renders with the keys of `vars` (a JSON object) as the variables.  Heap
// string, or NULL + as_error "<what>: position N: <problem>".
char *jinja_render(const jinja_tpl *t, const cJSON *vars, const char *what);

// True when the template is one {{ expr }} tag and nothing else.
bool jinja_is_single_expr(const jinja_tpl *t);
// The value of such a template as JSON (a list stays a list, an int a
// number; tuples are lists): *out (the caller deletes it).  -1 + as_error as
// jinja_render.
int jinja_eval_json(const jinja_tpl *t, const cJSON *vars, const char *what, cJSON **out);

// Python's ast.literal_eval of a literal made of strings, numbers, True,
// False, None, lists, tuples and dicts (what lm-eval applies to a rendered
// doc_to_choice).  -1 + as_error "<what>: ..." when the text is not one.
int jinja_literal_eval(const char *text, const char *what, cJSON **out);

// Python's str() of a JSON value as Jinja prints it (strings as they are,
// integral numbers without a fraction, True/False/None, lists as repr).  Heap string.
char *jinja_json_str(const cJSON *v);

#endif
