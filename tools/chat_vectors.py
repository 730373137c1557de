#!/usr/bin/env python3
"""Reference renderings of the chat templates, by jinja2 as transformers runs them.

Templates:
  chatml  SmolLM2-135M-Instruct's tokenizer.chat_template, read from the GGUF
  gemma   google/gemma-3-*-it tokenizer_config.json "chat_template"
  llama3  meta-llama/Meta-Llama-3-8B-Instruct tokenizer_config.json "chat_template"
rendered the way transformers' apply_chat_template does (ImmutableSandboxedEnvironment
with trim_blocks and lstrip_blocks, raise_exception, bos_token) for a set of
conversations: with and without system turns, multi-turn, padded content (Jinja's
trim), Unicode, empty content, no messages, and roles that Gemma rejects.

Writes tests/vectors/chat_templates.json:
  {"templates": {family: text}, "bos": {family: bos text},
   "cases": [{"family", "messages", "add_generation_prompt", "rendered" | "error"}]}
usage: ~/.cache/alphaspin/venv/bin/python tools/chat_vectors.py
"""
import argparse
import json
import os

# Verbatim (JSON-decoded) from the models' tokenizer_config.json.
GEMMA3 = json.loads(
    r'''"{{ bos_token }}\n{%- if messages[0]['role'] == 'system' -%}\n    {%- if messages[0]['content'] is string -%}\n        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}\n    {%- else -%}\n        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}\n    {%- endif -%}\n    {%- set loop_messages = messages[1:] -%}\n{%- else -%}\n    {%- set first_user_prefix = \"\" -%}\n    {%- set loop_messages = messages -%}\n{%- endif -%}\n{%- for message in loop_messages -%}\n    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}\n    {%- endif -%}\n    {%- if (message['role'] == 'assistant') -%}\n        {%- set role = \"model\" -%}\n    {%- else -%}\n        {%- set role = message['role'] -%}\n    {%- endif -%}\n    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}\n    {%- if message['content'] is string -%}\n        {{ message['content'] | trim }}\n    {%- elif message['content'] is iterable -%}\n        {%- for item in message['content'] -%}\n            {%- if item['type'] == 'image' -%}\n                {{ '<start_of_image>' }}\n            {%- elif item['type'] == 'text' -%}\n                {{ item['text'] | trim }}\n            {%- endif -%}\n        {%- endfor -%}\n    {%- else -%}\n        {{ raise_exception(\"Invalid content type\") }}\n    {%- endif -%}\n    {{ '<end_of_turn>\n' }}\n{%- endfor -%}\n{%- if add_generation_prompt -%}\n    {{'<start_of_turn>model\n'}}\n{%- endif -%}\n"'''
)
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
    "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
BOS = {"chatml": "<|im_start|>", "gemma": "<bos>", "llama3": "<|begin_of_text|>"}

S, U, A = "system", "user", "assistant"
CONVERSATIONS = [
    [],
    [(U, "Hello!")],
    [(S, "You are a pirate."), (U, "Where is the treasure?")],
    [(U, "What is 2+2?"), (A, "4"), (U, "And 3+3?")],
    [(S, "Be brief."), (U, "Hi"), (A, "Hello."), (U, "Bye")],
    [(U, "  padded with spaces and newlines \n\n"), (A, "\tanswer\u00a0\u3000"), (U, "\x1c\x1fcontrol-space\u2028")],
    [(U, "Unicode: caf\u00e9, \u65e5\u672c\u8a9e, \U0001f600, e\u0301")],
    [(U, "")],
    [(S, "")],
    [(S, "  system keeps its spaces  "), (U, "x")],
    [(U, "line one\nline two\n\nline four")],
    [(U, "Write code:\n```python\nprint('hi')\n```")],
    [(U, "quotes ' \" and braces {{ }} {% %}")],
    [(A, "assistant first")],
    [(U, "a"), (U, "b")],
    [(U, "a"), (A, "b"), (S, "late system")],
]


def main():
    ap = argparse.ArgumentParser()
    home = os.environ.get("ALPHASPIN_HOME", os.path.expanduser("~/.cache/alphaspin"))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--model", default=os.path.join(home, "models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--out", default=os.path.join(root, "tests/vectors/chat_templates.json"))
    args = ap.parse_args()

    import gguf
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    reader = gguf.GGUFReader(args.model)
    chatml = reader.fields["tokenizer.chat_template"].contents()
    templates = {"chatml": chatml, "gemma": GEMMA3, "llama3": LLAMA3}

    def raise_exception(msg):
        raise jinja2.exceptions.TemplateError(msg)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    cases = []
    for family, text in templates.items():
        tmpl = env.from_string(text)
        for conv in CONVERSATIONS:
            messages = [{"role": r, "content": c} for r, c in conv]
            for gen in (False, True):
                case = {"family": family, "messages": messages, "add_generation_prompt": gen}
                try:
                    case["rendered"] = tmpl.render(messages=messages, add_generation_prompt=gen, bos_token=BOS[family],
                                                   eos_token="")
                except jinja2.exceptions.TemplateError as e:
                    case["error"] = str(e)
                cases.append(case)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump({"templates": templates, "bos": BOS, "cases": cases}, f, ensure_ascii=False, indent=0)
        f.write("\n")
    print("wrote %d cases to %s" % (len(cases), args.out))


if __name__ == "__main__":
    main()
