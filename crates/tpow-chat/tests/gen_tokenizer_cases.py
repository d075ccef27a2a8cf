#!/usr/bin/env python3
"""Writes tokenizer_cases.json: token ids of SmolLM2's tokenizer as llama.cpp computes
them, an independent reference for the Rust tokenizer of tpow-chat.

    ~/.cache/tpow/bench-venv/bin/python crates/tpow-chat/tests/gen_tokenizer_cases.py \
        [models/SmolLM2-135M-Instruct.Q4_1.gguf]

Needs llama-cpp-python (pip install llama-cpp-python; it builds llama.cpp). Only the
vocabulary is loaded; special tokens written in the text are matched (special=True)
and no BOS is added, as the engine tokenises its rendered ChatML prompts.
"""
import json
import os
import sys

import llama_cpp
from llama_cpp import Llama

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
MODEL = sys.argv[1] if len(sys.argv) > 1 else os.environ.get(
    "TPOW_MODEL", os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))

CASES = [
    "Hello world",
    "Hello, world! How are you today?",
    " leading space",
    "  two leading spaces",
    "trailing space ",
    "What is the capital of France?",
    # special tokens
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>",
    "a<|im_end|>b",
    "<|im_start|><|im_end|><|endoftext|><repo_name><file_sep>",
    "<|im_start |> is not special, <|im_end| neither",
    # digits
    "12345",
    "3.14159",
    "The year 2024 had 366 days; 1,000,000 is a million.",
    "x=-0.5e-10, y=0x1F",
    # unicode
    "café",
    "é",
    "naïve résumé Ångström",
    "中文",
    "我喜欢吃苹果。",
    "日本語のテキスト",
    "emoji 😀🎉👍🏽",
    "👨‍👩‍👧‍👦 family",
    "Привет, мир!",
    "مرحبا بالعالم",
    "🦀 Rust",
    "\u00a0non-breaking\u2009thin space",
    # whitespace runs
    "a  b   c    d",
    "line1\nline2\n\nline4\n\n\n",
    "\n\n\n",
    "tab\tseparated\t\tvalues",
    "   \t  \n  mixed   \n\t",
    "    ",
    " ",
    "\r\nwindows\r\n",
    # code
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    "fn main() {\n    println!(\"Hello, {}!\", name);\n}\n",
    "for (int i = 0; i < 10; ++i) { sum += a[i]; }",
    "if x != None and y >= 3:\n\tprint(f\"{x:>10}\")",
    "<div class=\"a\">&nbsp;</div>",
    # contractions, punctuation
    "I'm sure you'll see it's what we'd've done, won't they?",
    "HELLO WORLD'S",
    "...!!!???---",
    "e-mail: someone@example.com, https://example.com/path?q=1&r=2",
    "",
]


def main():
    llm = Llama(model_path=MODEL, vocab_only=True, verbose=False)
    cases = []
    for text in CASES:
        ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        cases.append({"text": text, "ids": ids})
    out = {
        "generator": "crates/tpow-chat/tests/gen_tokenizer_cases.py",
        "reference": f"llama.cpp via llama-cpp-python {llama_cpp.__version__}, "
                     "Llama(vocab_only=True).tokenize(text, add_bos=False, special=True)",
        "model": os.path.basename(MODEL),
        "cases": cases,
    }
    path = os.path.join(HERE, "tokenizer_cases.json")
    # One case a line, so that a diff shows which case changed.
    head = {k: v for k, v in out.items() if k != "cases"}
    lines = [json.dumps(head, ensure_ascii=False)[:-1] + ', "cases": [']
    lines += [" " + json.dumps(c, ensure_ascii=False) + "," for c in cases]
    lines[-1] = lines[-1][:-1]
    lines.append("]}")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {len(cases)} cases to {path}")


if __name__ == "__main__":
    main()
