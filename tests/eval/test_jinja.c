// The Jinja2 subset (src/eval/jinja.c) against jinja2 3.1 itself: each
// template of CASES was rendered by jinja2 with lm-evaluation-harness's
// environment (StrictUndefined, keep_trailing_newline, its regex_replace
// filter) over DOC, and the expected text is that output.  Then the JSON
// value of one-expression templates, Python's ast.literal_eval, and the error
// lines (file, key and position in one line).
#include "test_common.h"

#include "eval/eval_internal.h"
#include "eval/jinja.h"
#include "util/common.h"

static const char DOC[] = "{\"question\": \"  What is 2+2?\\n\", \"choices\": {\"text\": [\"four\", \"it's \\\"x\\\"\", \"a\\\\b\"], \"label\": [\"A\", \"B\", \"C\"]}, \"answerKey\": \" B\", \"label\": 1, \"n\": 3, \"f\": 2.5, \"passage\": \"Caf\\u00e9 \\u00c9t\\u00e9\\ttab\", \"sol1\": \"use a spoon\", \"sol2\": \"use a fork\", \"sentence\": \"Sarah beat Maria so _ won.\", \"option1\": \"Sarah\", \"answer\": \"2\", \"t\": true, \"none\": null, \"lst\": [3, 1, 2], \"empty\": \"\", \"text\": \"a b  c d\", \"nested\": {\"a\": {\"b\": [1, {\"c\": \"deep\"}]}}, \"uni\": \"\\u00e9\\u00e8x\"}";
static const struct { const char *tpl, *want; } CASES[] = {
    {"Question: {{question}}\\nAnswer:",
     "Question:   What is 2+2?\n\\nAnswer:"},
    {"{{choices.text}}",
     "['four', 'it\\'s \"x\"', 'a\\\\b']"},
    {"{{choices['label']}}",
     "['A', 'B', 'C']"},
    {"{{choices.label.index(answerKey.lstrip())}}",
     "1"},
    {"{{[sol1, sol2]}}",
     "['use a spoon', 'use a fork']"},
    {"{{ question|trim }}|{{ question.strip() }}|{{ question.rstrip() }}|",
     "What is 2+2?|What is 2+2?|  What is 2+2?|"},
    {"{{ passage|lower }} {{ passage|upper }} {{ passage|title }}",
     "caf\xc3""\xa9"" \xc3""\xa9""t\xc3""\xa9""\ttab CAF\xc3""\x89"" \xc3""\x89""T\xc3""\x89""\tTAB Caf\xc3""\xa9"" \xc3""\x89""t\xc3""\xa9""\tTab"},
    {"{{ passage.replace('\\t', ' ') }} {{ passage|replace('a', 'A', 1) }}",
     "Caf\xc3""\xa9"" \xc3""\x89""t\xc3""\xa9"" tab CAf\xc3""\xa9"" \xc3""\x89""t\xc3""\xa9""\ttab"},
    {"{{ label ~ '!' ~ n ~ f ~ none }}",
     "1!32.5None"},
    {"{{ label + n }} {{ f * 2 }} {{ n / 2 }} {{ n // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 0.1 + 0.2 }} {{ 1e20 }}",
     "4 5.0 1.5 1 -4 2 1024 0.30000000000000004 1e+20"},
    {"{{ lst|length }} {{ question|length }} {{ uni|length }} {{ lst|join(', ') }} {{ lst|sum }} {{ lst|sort }} {{ lst|first }} {{ lst|last }} {{ lst|max }}",
     "3 15 3 3, 1, 2 6 [1, 2, 3] 3 2 3"},
    {"{{ '42'|int + 1 }} {{ '4.7'|int }} {{ 'x'|int }} {{ 3.9|int }} {{ '2.5'|float }} {{ 2.675|round(2) }} {{ 2.5|round }} {{ label|string }}",
     "43 4 0 3 2.5 2.67 2.0 1"},
    {"{{ sentence[:sentence.index('_')] + option1 }}|{{ sentence[sentence.index('_') + 1:].strip() }}",
     "Sarah beat Maria so Sarah|won."},
    {"{{ text.split(' ')[:-1]|join(' ') }}|{{ ' ' + text.split(' ')[-1] }}|{{ text.split() }}|{{ text.split(None, 1) }}|{{ text.rsplit(' ', 1) }}",
     "a b  c| d|['a', 'b', 'c', 'd']|['a', 'b  c d']|['a b  c', 'd']"},
    {"{{ sentence[0] }}{{ sentence[-1] }} {{ sentence[::-1] }} {{ sentence[2:10:3] }} {{ uni[1] }} {{ uni[::-1] }}",
     "S. .now _ os airaM taeb haraS r a \xc3""\xa8"" x\xc3""\xa8""\xc3""\xa9"""},
    {"{{ nested.a.b[1].c }} {{ nested['a']['b'][0] }} {{ nested }}",
     "deep 1 {'a': {'b': [1, {'c': 'deep'}]}}"},
    {"{{ (1, 2) }} {{ (1,) }} {{ {'a': [1, 'x']} }} {{ 1, 2 }} {{ t }} {{ none }}",
     "(1, 2) (1,) {'a': [1, 'x']} (1, 2) True None"},
    {"{{ 'yes' if label else 'no' }} {{ 'yes' if label == 2 else 'no' }} {{ 'z' if not t }}",
     "yes no "},
    {"{{ label in [0, 1] }} {{ 'a' in 'cat' }} {{ 'z' not in 'cat' }} {{ 1 < n < 5 }} {{ not t }} {{ none or 'fb' }}",
     "True True True True False fb"},
    {"{{ missing is defined }} {{ n is odd }} {{ n is divisibleby 3 }} {{ none is none }} {{ choices is mapping }} {{ lst is not string }}",
     "False True True True True True"},
    {"{{ missing|default('dflt') }} {{ empty|default('dflt') }} {{ empty|default('dflt', true) }}",
     "dflt  dflt"},
    {"{{ \"they're bill's\"|title }} {{ \"they're bill's\".title() }} {{ 'hELLO wORLD'.capitalize() }} {{ 'Hello World foo'|wordcount }}",
     "They're Bill's They'Re Bill'S Hello world 3"},
    {"{{ question.startswith('  What') }} {{ sol1.find('s') }} {{ sol1.count('s') }} {{ '-'.join(['a', 'b']) }} {{ '123'.isdigit() }} {{ 'a\\nb\\r\\nc'.splitlines() }}",
     "True 1 2 a-b True ['a', 'b', 'c']"},
    {"{{ choices.keys()|list }} {{ choices.get('nope', 'd') }} {{ 'ab' * 3 }} {{ [0] * 2 }}",
     "['text', 'label'] d ababab [0, 0]"},
    {"{{ 'a1b22c'|regex_replace('(\\\\d+)', '<\\\\1>') }} {{ 'aaa'|regex_replace('a', 'b', 2) }} {{ 'abc'|regex_replace('x*', '-') }}",
     "a<1>b<22>c bba -a-b-c-"},
    {"{{ ['it\\'s', \"q\\\"uote\", 'both\\'\"', 'nl\\n', 'bs\\\\', '\\x07'] }}",
     "[\"it's\", 'q\"uote', 'both\\'\"', 'nl\\n', 'bs\\\\', '\\x07']"},
    {"{% if label == 1 %}one{% elif label == 2 %}two{% else %}other{% endif %}",
     "one"},
    {"{% for x in lst %}{{ loop.index }}:{{ x }}{% if not loop.last %}, {% endif %}{% endfor %}",
     "1:3, 2:1, 3:2"},
    {"{% for k, v in choices.items() %}{{ k }}={{ v|length }};{% endfor %}{% for x in lst if x > 5 %}{{ x }}{% else %} none{% endfor %}",
     "text=3;label=3; none"},
    {"{% set y = n * 2 %}{{ y }}",
     "6"},
    {"a  {{- ' b ' -}}  c {#- comment -#} d",
     "a b cd"},
    {"{%- if t %} yes {% endif -%}   end",
     " yes end"},
    {"{{ \"}}\" }} {{ {'a': {'b': 1}} }}",
     "}} {'a': {'b': 1}}"},
    {"line1\n{{question}}\n",
     "line1\n  What is 2+2?\n\n"},
};

static void test_against_jinja2(void **st) {
    (void)st;
    cJSON *doc = cJSON_Parse(DOC);
    assert_non_null(doc);
    for (size_t i = 0; i < AS_ARRAY_LEN(CASES); i++) {
        jinja_tpl *t;
        if (jinja_compile(CASES[i].tpl, "case", &t)) fail_msg("case %zu: %s", i, as_last_error());
        char *s = jinja_render(t, doc, "case");
        if (!s) fail_msg("case %zu: %s", i, as_last_error());
        if (strcmp(s, CASES[i].want)) fail_msg("case %zu: template %s\n got  [%s]\n want [%s]", i, CASES[i].tpl, s, CASES[i].want);
        free(s);
        jinja_free(t);
    }
    cJSON_Delete(doc);
}

static cJSON *eval_json(const char *tpl, const cJSON *doc) {
    jinja_tpl *t;
    if (jinja_compile(tpl, "t", &t)) fail_msg("%s", as_last_error());
    assert_true(jinja_is_single_expr(t));
    cJSON *v;
    if (jinja_eval_json(t, doc, "t", &v)) fail_msg("%s", as_last_error());
    jinja_free(t);
    return v;
}

// A one-expression template keeps its value's type (doc_to_choice: a list;
// doc_to_target: an index).
static void test_eval_json(void **st) {
    (void)st;
    cJSON *doc = cJSON_Parse(DOC);
    cJSON *v = eval_json("{{choices.text}}", doc);
    assert_true(cJSON_IsArray(v));
    assert_int_equal(cJSON_GetArraySize(v), 3);
    assert_string_equal(cJSON_GetArrayItem(v, 1)->valuestring, "it's \"x\"");
    cJSON_Delete(v);
    v = eval_json("{{ choices.label.index('C') }}", doc);
    assert_true(cJSON_IsNumber(v) && v->valuedouble == 2);
    cJSON_Delete(v);
    v = eval_json("{{ [sol1, n, none, t, {'k': f}] }}", doc);
    char *p = cJSON_PrintUnformatted(v);
    assert_string_equal(p, "[\"use a spoon\",3,null,true,{\"k\":2.5}]");
    free(p), cJSON_Delete(v);
    cJSON_Delete(doc);
    jinja_tpl *t;
    assert_int_equal(jinja_compile("x {{ a }}", "t", &t), 0);
    assert_false(jinja_is_single_expr(t));
    jinja_free(t);
}

static cJSON *lit(const char *text) {
    cJSON *v;
    if (jinja_literal_eval(text, "t", &v)) fail_msg("%s", as_last_error());
    return v;
}

// ast.literal_eval of what str() of a list prints reads the list back.
static void test_literal_eval(void **st) {
    (void)st;
    cJSON *v = lit("['four', 'it\\'s \"x\"', 'a\\\\b', \"q'\", 'caf\\xe9\\n']");
    assert_int_equal(cJSON_GetArraySize(v), 5);
    assert_string_equal(cJSON_GetArrayItem(v, 1)->valuestring, "it's \"x\"");
    assert_string_equal(cJSON_GetArrayItem(v, 2)->valuestring, "a\\b");
    assert_string_equal(cJSON_GetArrayItem(v, 3)->valuestring, "q'");
    assert_string_equal(cJSON_GetArrayItem(v, 4)->valuestring, "caf\xc3\xa9\n");
    cJSON_Delete(v);
    v = lit("  (1, -2.5, None, True, {'a': []})");
    char *p = cJSON_PrintUnformatted(v);
    assert_string_equal(p, "[1,-2.5,null,true,{\"a\":[]}]");
    free(p), cJSON_Delete(v);
    v = lit("7");
    assert_true(cJSON_IsNumber(v) && v->valuedouble == 7);
    cJSON_Delete(v);
    static const char *const BAD[] = {"true", "abc", "[1, 2", "1 + 2", "007", "", "x.y", "[a]"};
    for (size_t i = 0; i < AS_ARRAY_LEN(BAD); i++) {
        assert_int_equal(jinja_literal_eval(BAD[i], "f.yaml: item 3: doc_to_choice", &v), -1);
        assert_non_null(strstr(as_last_error(), "f.yaml: item 3: doc_to_choice: position "));
        assert_null(strchr(as_last_error(), '\n'));
    }
    // str() of a document value, as lm-eval's templates print it.
    cJSON *j = cJSON_Parse("[\"a'b\", 1, 2.5, null, true, {\"k\": [\"v\"]}]");
    p = jinja_json_str(j);
    assert_string_equal(p, "[\"a'b\", 1, 2.5, None, True, {'k': ['v']}]");
    free(p), cJSON_Delete(j);
}

static void expect_error(const char *tpl, const char *needle) {
    cJSON *doc = cJSON_Parse(DOC);
    jinja_tpl *t = NULL;
    const char *what = "task.yaml: item 4: doc_to_text";
    char *s = NULL;
    if (jinja_compile(tpl, what, &t) == 0) {
        s = jinja_render(t, doc, what);
        jinja_free(t);
    }
    if (s) fail_msg("'%s' rendered '%s'; expected an error with '%s'", tpl, s, needle);
    const char *e = as_last_error();
    if (!strstr(e, needle)) fail_msg("'%s': error '%s' lacks '%s'", tpl, e, needle);
    assert_non_null(strstr(e, "task.yaml: item 4: doc_to_text: position "));
    assert_null(strchr(e, '\n'));
    cJSON_Delete(doc);
}

static void test_errors(void **st) {
    (void)st;
    expect_error("Q: {{ missing }}", "position 7: 'missing' is undefined");
    expect_error("{{ choices.nope }}", "'dict object' has no attribute 'nope'");
    expect_error("{{ lst[10] }}", "list object has no element 10");
    expect_error("{{ choices.label.index('Z') }}", "'Z' is not in list");
    expect_error("{{ sol1 + n }}", "can only concatenate str (not \"int\") to str");
    expect_error("{{ question | nofilter }}", "position 15: no filter named 'nofilter'");
    expect_error("{{ n is prime }}", "no test named 'prime'");
    expect_error("{{ 1 + }}", "unexpected end of tag");
    expect_error("ab {{ question", "position 4: '{{' without '}}'");
    expect_error("{% for x in lst %}x", "'for' without 'endfor'");
    expect_error("{% macro m() %}{% endmacro %}", "unsupported tag 'macro'");
    expect_error("{{ 'a' < 1 }}", "'<' not supported between instances of 'str' and 'int'");
    expect_error("{{ 1 / 0 }}", "division by zero");
    expect_error("{{ missing ~ 'x' }}", "'missing' is undefined");
    expect_error("{{ 'x'.split('') }}", "empty separator");
    expect_error("{{ 'abc' | regex_replace('(', '') }}", "regex_replace: bad regular expression");
    expect_error("{# open", "'{#' without '#}'");
    expect_error("{{ 'unterminated }}", "unterminated string");
    // A numeric literal longer than the lexer's buffer is an error (it wrote past the buffer: fuzz_eval_task).
    expect_error("{{ 11111111111111111111111111111111111111111111111111111111111111.5e+10 }}", "position 4: numeric literal longer than 63 characters");
    expect_error("{{ 1111111111111111111111111111111111111111111111111111111111111111111111 }}", "numeric literal longer than 63 characters");
    // Positions count characters, not bytes.
    expect_error("\xc3\xa9\xc3\xa9 {{ nope }}", "position 7: 'nope' is undefined");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_against_jinja2),
        cmocka_unit_test(test_eval_json),
        cmocka_unit_test(test_literal_eval),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
