// The command line: one file per command, each `cmd_<name>(argc, argv)`
// returning the process exit status.  Commands print errors as one line,
// "alphaspin <command>: <what went wrong>", and exit non-zero.
#ifndef AS_CLI_H
#define AS_CLI_H

#include <stdbool.h>

#include "model/model.h"
#include "tokenizer/tokenizer.h"
#include "train/train.h"

// ${ALPHASPIN_HOME:-$HOME/.cache/alphaspin}
const char *cli_home(void);
// The default model: <home>/models/SmolLM2-135M-Instruct.Q4_1.gguf
const char *cli_default_model(void);
// Prints "alphaspin <cmd>: <last error>" and returns 1.
int cli_fail(const char *cmd);
// Prints the usage error and a pointer to --help; returns 2.
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// Parses an integer/float option value or reports which option was wrong.
bool cli_parse_int(const char *cmd, const char *opt, const char *s, long min, long max, long *out);
bool cli_parse_float(const char *cmd, const char *opt, const char *s, double min, double max, double *out);

// The training precision's override: when the environment has
// ALPHASPIN_TRAIN_PRECISION (f32 or bf16; empty: unset), *p becomes it.
// Commands apply it over their config file and default, unless their command
// line chose the precision.  -1 + as_error naming the variable for another value.
int cli_train_precision_env(train_precision *p);

// The backend later cli_load_model calls put the model on: a --device spec,
// "cpu" (the default), "cuda" or "cuda:N" (tensor/backend.h, as_backend_open).
void cli_set_device(const char *spec);
#define CLI_DEVICE_HELP "cpu (default) or cuda[:N]: the backend the model runs on (README, \"Devices\")"
// Loads model + tokenizer from a GGUF path or a Hugging Face folder (NULL: the
// default model), with a helpful message when the default model has not been
// fetched yet, on the --device's backend (opened first: a device that cannot
// be used fails before the model is read).
int cli_load_model(const char *path, model **m, tokenizer **tok);
// The bytes of a --file option (heap, NUL-terminated, may hold NULs: use *len);
// "-" reads standard input.
int cli_read_file_text(const char *path, char **out, size_t *len);

int cmd_fetch_model(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_logprobs(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_sft(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_merge(int argc, char **argv);
int cmd_make_data(int argc, char **argv);
int cmd_gfn_train(int argc, char **argv);
int cmd_report(int argc, char **argv);
int cmd_run(int argc, char **argv);

#endif
