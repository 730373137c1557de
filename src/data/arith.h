// Verifiable tasks written by the project: arithmetic questions with worked
// answers, in GSM8K's layout, so the data of the embedded default experiment
// ships with alphaspin instead of being downloaded.
//
// Each item is a {question, answer} pair (an SFT layout of train/sft.h).  The
// answer works the problem out one operation per line and ends with the line
// "#### <n>", GSM8K's convention, so the same extraction (data_arith_extract,
// or lm-evaluation-harness's "#### (-?[0-9.,]+)") scores generated answers.
//
// Operations apply left to right to a running total (no precedence to get
// wrong); every intermediate and final value is a non-negative integer.
// Two styles share the arithmetic:
//   word:  "Mia has 7 marbles. She buys 5 more marbles. Then she gives 3 marbles
//           to a friend. How many marbles does Mia have now?"
//          -> "Mia starts with 7 marbles.\nShe buys 5 more: 7 + 5 = 12.\n
//              She gives away 3: 12 - 3 = 9.\n#### 9"
//   plain: "What is (7 + 5) * 3?" -> "7 + 5 = 12\n12 * 3 = 36\n#### 36"
//
// Difficulty levels (small numbers suit a 135M model):
//   1: 2 operands, + and -, operands 1..20
//   2: 2 or 3 operands, +, - and *, addends 1..50, multipliers 2..9
//   3: 3 operands, +, - and *, addends 1..100, multipliers 2..12
//
// Deterministic: item i is drawn from a stream seeded by (seed, level, style,
// i, attempt), where a question equal to an earlier one moves on to the next
// attempt; so the first k items of a larger request are the same k items, and
// a train file and a disjoint held-out file come from one call split in two.
// Questions within one call are distinct.
#ifndef AS_DATA_ARITH_H
#define AS_DATA_ARITH_H

#include <stdint.h>

typedef enum data_arith_style {
    DATA_ARITH_MIXED = 0, // word or plain, half each (per item, from its seed)
    DATA_ARITH_WORD = 1,
    DATA_ARITH_PLAIN = 2,
} data_arith_style;

#define DATA_ARITH_MAX_OPERANDS 3

typedef struct data_arith_config {
    int64_t n;              // items, >= 1
    uint64_t seed;
    int level;              // 1..3
    data_arith_style style;
} data_arith_config;

typedef struct data_arith_item {
    char *question;
    char *answer;           // worked solution ending "#### <value>"
    int64_t value;          // the result
    int n_operands;         // 2..DATA_ARITH_MAX_OPERANDS
    int64_t operands[DATA_ARITH_MAX_OPERANDS];
    char ops[DATA_ARITH_MAX_OPERANDS - 1]; // '+', '-', '*', applied left to right
} data_arith_item;

// n = 1000, seed 0, level 2, mixed.
void data_arith_config_default(data_arith_config *c);
// Name <-> value of a style ("mixed", "word", "plain"); -1 for an unknown name.
int data_arith_style_parse(const char *name);
const char *data_arith_style_name(data_arith_style s);

// Generates c->n items into *out (free with data_arith_free).  -1 + as_error
// for a bad configuration, or when the level has fewer distinct questions
// than requested.
int data_arith_generate(const data_arith_config *c, data_arith_item **out);
void data_arith_free(data_arith_item *items, int64_t n);

// Writes items as JSONL lines {"question": .., "answer": ..}, atomically.
int data_arith_write_jsonl(const char *path, const data_arith_item *items, int64_t n);

// The number a text answers, GSM8K-style: after the last "####" when there is
// one (strict), else, when `flexible`, the last number in the text.  Commas
// are removed ("1,234"); a trailing "." is not part of the number.  Returns 0
// and sets *value, or -1 when there is no integer to read (no as_error: a
// model's answer without a number is an ordinary outcome).
int data_arith_extract(const char *text, int flexible, int64_t *value);

#endif
