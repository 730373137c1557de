// alphaspin eval: benchmark tasks (lm-evaluation-harness conventions for the
// Open LLM Leaderboard tasks, FastChat's for MT-Bench) on a model, optionally
// with a LoRA adapter; results as lm-eval shaped JSON and a Markdown table.
#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "eval/eval.h"
#include "train/checkpoint.h"
#include "util/common.h"
#include "util/json.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: alphaspin eval [--model FILE.gguf] [--adapter DIR] --tasks LIST [options]\n\n"
            "Scores the model on benchmark tasks and prints a Markdown table; --out writes the results as\n"
            "JSON shaped like lm-evaluation-harness's (\"results\", \"n-shot\", \"n-samples\", \"configs\").\n"
            "Multiple-choice tasks are scored by log-likelihood (acc, acc_norm by the choice's length in\n"
            "characters, standard errors of the mean) with lm-eval's prompts; gsm8k by greedy generation\n"
            "and exact match (generate_until task files may compare text answers through lm-eval's\n"
            "filter_list: regex, take_first, remove_whitespace, lowercase; tasks/README.md); mt_bench answers\n"
            "both turns (FastChat's format and temperatures) and, with --judge-model, grades them with\n"
            "FastChat's single-answer prompts.\n\n"
            "  --model FILE          GGUF model (default: the fetched SmolLM2-135M-Instruct)\n"
            "  --adapter DIR         a PEFT LoRA adapter folder applied to the model\n"
            "  --tasks LIST          comma-separated: arc_easy, arc_challenge, hellaswag, winogrande, mmlu,\n"
            "                        truthfulqa_mc1, truthfulqa_mc2, gsm8k, lambada_openai, mt_bench,\n"
            "                        leaderboard (the six Open LLM Leaderboard tasks), or task files (*.yaml;\n"
            "                        tasks/README.md: multiple_choice, generate_until, loglikelihood (acc =\n"
            "                        greedy, perplexity), loglikelihood_rolling (word/byte perplexity, bits\n"
            "                        per byte over the model's context window); lm-evaluation-harness's own\n"
            "                        YAML files run unchanged on local data: dataset_path/<split>.jsonl\n"
            "                        under --data-dir or data_files, Jinja2 doc_to_text/doc_to_choice)\n"
            "  --shots N             few-shot examples (default: each task's, the leaderboard's)\n"
            "  --limit N             only the first N items of each task (mmlu: of each subject)\n"
            "  --offset N            skip the first N items (with the few-shot draws a full run makes, so\n"
            "                        --offset 0/K/2K.. --limit K score a task in shards exactly as one run)\n"
            "  --out FILE.json       results JSON (written atomically)\n"
            "  --markdown FILE.md    the table to a file as well\n"
            "  --log-samples FILE    per-item records as JSONL in lm-eval's samples layout (doc, arguments:\n"
            "                        context and continuation, resps: [log-likelihood, is_greedy] or the\n"
            "                        output, filtered_resps, target, metrics, hashes), plus task and token ids\n"
            "  --seed S              few-shot sampling seed (default 1234)\n"
            "  --precision P         f32 (default: exact fp32 activations), q8 (8-bit, faster) or bf16\n"
            "                        (bf16 operands, fp32 sums: fastest on CPUs with AMX)\n"
            "  --data-dir DIR        where relative data paths of tasks are found, and lm-eval task files'\n"
            "                        <dataset_path>[/<dataset_name>]/<split>.jsonl|json|csv (default\n"
            "                        $ALPHASPIN_DATA, else the source tree's ../shared/data)\n"
            "  --tasks-dir DIR       built-in task files (default: $ALPHASPIN_TASKS, next to the program,\n"
            "                        or the source tree's tasks/)\n"
            "  --max-new-tokens N    generative tasks (default: the task's; gsm8k 256, mt_bench 1024)\n"
            "  --kv-budget-mb N      KV-cache memory for batching items (default 1024)\n"
            "  --mt-bench-answers F  write MT-Bench answers (FastChat model_answer JSONL)\n"
            "  --judge-model FILE    grade MT-Bench answers locally with this GGUF model\n"
            "  --mt-bench-judgments F  write the judge's judgments (FastChat model_judgment JSONL)\n"
            "  --model-id NAME       model_id in the outputs (default: the model file's name)\n"
            "  --threads N           threads (default: all cores)\n"
            "  --device D            " CLI_DEVICE_HELP "\n"
            "  --quiet               no progress line\n"
            "  --help                this text\n");
}

int cmd_eval(int argc, char **argv) {
    enum { O_MODEL = 1, O_ADAPTER, O_TASKS, O_SHOTS, O_LIMIT, O_OUT, O_MD, O_SEED, O_PREC, O_DATA, O_TDIR, O_MAXNEW,
           O_KV, O_MTA, O_JUDGE, O_MTJ, O_ID, O_THREADS, O_QUIET, O_HELP, O_SAMPLES, O_OFFSET, O_DEVICE };
    static const struct option opts[] = {
        {"model", required_argument, 0, O_MODEL},       {"adapter", required_argument, 0, O_ADAPTER},
        {"tasks", required_argument, 0, O_TASKS},       {"shots", required_argument, 0, O_SHOTS},
        {"limit", required_argument, 0, O_LIMIT},       {"out", required_argument, 0, O_OUT},
        {"offset", required_argument, 0, O_OFFSET},
        {"markdown", required_argument, 0, O_MD},       {"seed", required_argument, 0, O_SEED},
        {"precision", required_argument, 0, O_PREC},    {"data-dir", required_argument, 0, O_DATA},
        {"tasks-dir", required_argument, 0, O_TDIR},    {"max-new-tokens", required_argument, 0, O_MAXNEW},
        {"kv-budget-mb", required_argument, 0, O_KV},   {"mt-bench-answers", required_argument, 0, O_MTA},
        {"judge-model", required_argument, 0, O_JUDGE}, {"mt-bench-judgments", required_argument, 0, O_MTJ},
        {"model-id", required_argument, 0, O_ID},       {"threads", required_argument, 0, O_THREADS},
        {"quiet", no_argument, 0, O_QUIET},             {"help", no_argument, 0, O_HELP},
        {"log-samples", required_argument, 0, O_SAMPLES}, {"device", required_argument, 0, O_DEVICE},
        {0, 0, 0, 0}};
    const char *model_path = NULL, *adapter = NULL, *out_path = NULL, *md_path = NULL, *judge_path = NULL;
    eval_options o = eval_options_default();
    o.tasks = NULL;
    o.progress = true;
    long v, threads = 0;
    double dv;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case O_MODEL: model_path = optarg; break;
        case O_DEVICE: cli_set_device(optarg); break;
        case O_ADAPTER: adapter = optarg; break;
        case O_TASKS: o.tasks = optarg; break;
        case O_SHOTS:
            if (!cli_parse_int("eval", "--shots", optarg, 0, 1000, &v)) return 2;
            o.shots = (int32_t)v;
            break;
        case O_LIMIT:
            if (!cli_parse_int("eval", "--limit", optarg, 1, 1L << 40, &v)) return 2;
            o.limit = v;
            break;
        case O_OFFSET:
            if (!cli_parse_int("eval", "--offset", optarg, 0, 1L << 40, &v)) return 2;
            o.offset = v;
            break;
        case O_OUT: out_path = optarg; break;
        case O_MD: md_path = optarg; break;
        case O_SEED:
            if (!cli_parse_float("eval", "--seed", optarg, 0, 1.8e19, &dv)) return 2;
            o.seed = (uint64_t)dv;
            break;
        case O_PREC:
            if (kernel_precision_parse(optarg, &o.precision)) return cli_usage_error("eval", "--precision must be f32, q8 or bf16, got '%s'", optarg);
            break;
        case O_DATA: o.data_dir = optarg; break;
        case O_TDIR: o.tasks_dir = optarg; break;
        case O_MAXNEW:
            if (!cli_parse_int("eval", "--max-new-tokens", optarg, 1, 1 << 20, &v)) return 2;
            o.max_new_tokens = (int32_t)v;
            break;
        case O_KV:
            if (!cli_parse_int("eval", "--kv-budget-mb", optarg, 1, 1 << 20, &v)) return 2;
            o.kv_budget_bytes = (size_t)v << 20;
            break;
        case O_MTA: o.mt_bench_answers = optarg; break;
        case O_JUDGE: judge_path = optarg; break;
        case O_MTJ: o.mt_bench_judgments = optarg; break;
        case O_ID: o.model_id = optarg; break;
        case O_THREADS:
            if (!cli_parse_int("eval", "--threads", optarg, 1, 1024, &threads)) return 2;
            break;
        case O_QUIET: o.progress = false; break;
        case O_SAMPLES: o.log_samples = optarg; break;
        case O_HELP: usage(stdout); return 0;
        default: return cli_usage_error("eval", "unknown option");
        }
    }
    if (!o.tasks) return cli_usage_error("eval", "--tasks is required");
    if (optind < argc) return cli_usage_error("eval", "unexpected argument '%s'", argv[optind]);
    if (o.mt_bench_judgments && !judge_path) return cli_usage_error("eval", "--mt-bench-judgments needs --judge-model");
    if (threads) kernel_set_threads((int)threads);

    char id_buf[256];
    if (!o.model_id) {
        const char *p = model_path ? model_path : cli_default_model();
        const char *slash = strrchr(p, '/');
        snprintf(id_buf, sizeof id_buf, "%s%s%s", slash ? slash + 1 : p, adapter ? "+" : "", adapter ? adapter : "");
        o.model_id = id_buf;
    }
    model *m = NULL, *judge = NULL;
    tokenizer *tok = NULL, *jtok = NULL;
    train_lora *lora = NULL;
    cJSON *res = NULL;
    int rc = cli_load_model(model_path, &m, &tok);
    if (rc == AS_OK && adapter) {
        rc = train_lora_read_peft(&m->cfg, adapter, &lora);
        if (rc == AS_OK) {
            model_lora view;
            train_lora_view(lora, &view);
            rc = model_set_lora(m, &view);
        }
    }
    if (rc == AS_OK && judge_path) {
        rc = cli_load_model(judge_path, &judge, &jtok);
        o.judge = judge, o.judge_tok = jtok;
    }
    if (rc == AS_OK) rc = eval_run(m, tok, &o, &res);
    if (rc == AS_OK && out_path) {
        char *js = as_json_print(res, true);
        rc = as_write_file_atomic(out_path, js, strlen(js));
        free(js);
    }
    if (rc == AS_OK) {
        char *md = eval_results_markdown(res);
        fputs(md, stdout);
        if (md_path) rc = as_write_file_atomic(md_path, md, strlen(md));
        free(md);
    }
    cJSON_Delete(res);
    model_free(m);
    tokenizer_free(tok);
    model_free(judge);
    tokenizer_free(jtok);
    train_lora_free(lora);
    return rc == AS_OK ? 0 : cli_fail("eval");
}
