#!/usr/bin/env python3
"""Expected DSV4 chat prompts and parsed outputs for tests/unit/tokenizer/tokenizer_chat_test.cc.

This script re-implements nothing: it runs the official DeepSeek-V4 renderer `encoding/encoding_dsv4.py`
(not part of this repository; a copy lives in e.g. GitHub supermy/ds4rs, see docs/DSV4_MODEL_SPEC.md §0 "ENC")
on the scenarios below and writes tests/golden/tokenizer/chat_golden.json.

    python3 scripts/reference/chat_golden.py --encoding /tmp/encoding_dsv4.py

Modes: none -> thinking_mode="chat"; high -> "thinking"; max -> "thinking" + reasoning_effort="max".
A scenario's top-level "tools" are attached to its first message before calling the renderer, which is
what the C++ loader does (and what the official tests do).
"""
import argparse
import copy
import importlib.util
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the weather for a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "City name"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1}}, "required": ["city"]}}}
SEARCH = {"type": "function", "function": {
    "name": "search", "description": "Web search — 多语言 \"quoted\"",
    "parameters": {"type": "object", "properties": {"queries": {"type": "array", "items": {"type": "string"}}},
                   "required": ["queries"], "additionalProperties": False}}}


def call(id_, name, args):
    return {"id": id_, "type": "function", "function": {"name": name, "arguments": args}}


SCENARIOS = {
    "simple": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Hello!"},
    ],
    "user_only": [{"role": "user", "content": "你好，世界"}],
    "multi_turn_reasoning": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "reasoning_content": "The user greets me.", "content": "Hello! How can I help?"},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "reasoning_content": "Simple arithmetic.", "content": "4"},
        {"role": "user", "content": "And 3+3?"},
    ],
    "last_assistant_kept": [
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "reasoning_content": "R1", "content": "A1"},
    ],
    "tools_and_results": {
        "tools": [WEATHER, SEARCH],
        "messages": [
            {"role": "system", "content": "You can use tools."},
            {"role": "user", "content": "Weather in Paris and Tokyo, then search news."},
            {"role": "assistant", "reasoning_content": "I need two calls.", "content": "",
             "tool_calls": [call("c1", "get_weather", "{\"city\": \"Paris\", \"days\": 2}"),
                            call("c2", "get_weather", "{\"city\": \"東京\", \"unit\": \"celsius\"}")]},
            {"role": "tool", "tool_call_id": "c2", "content": "Tokyo: 18C"},
            {"role": "tool", "tool_call_id": "c1", "content": "Paris: 12C\nwindy"},
            {"role": "assistant", "reasoning_content": "Now search.", "content": "Searching.",
             "tool_calls": [call("c3", "search", "{\"queries\": [\"paris news\", \"tokyo\"], \"opts\": {\"n\": 3, \"safe\": true, \"x\": null, \"f\": 1.5}}")]},
            {"role": "tool", "tool_call_id": "c3", "content": [{"type": "text", "text": "result one"}, {"type": "image"}, {"type": "text", "text": "two"}]},
            {"role": "assistant", "reasoning_content": "Done.", "content": "Paris 12C, Tokyo 18C."},
            {"role": "user", "content": "Thanks"},
        ]},
    "tool_call_raw_arguments": [
        {"role": "system", "content": "sys", "tools": [WEATHER]},
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": "calling",
         "tool_calls": [call("a", "get_weather", "not json at all"),
                        call("b", "get_weather", "{\"city\": \"line1\\nline2 \\\"q\\\"\", \"list\": [1, \"two\", {\"k\": \"ü\"}]}")]},
        {"role": "tool", "tool_call_id": "a", "content": "err"},
        {"role": "tool", "tool_call_id": "b", "content": "ok"},
    ],
    "developer_and_reminder": [
        {"role": "system", "content": "System prompt."},
        {"role": "latest_reminder", "content": "2026-01-01, Paris"},
        {"role": "developer", "content": "Developer instruction", "tools": [SEARCH]},
        {"role": "assistant", "reasoning_content": "think", "content": "answer"},
        {"role": "user", "content": "follow-up"},
    ],
    "developer_dropped_without_tools": [
        {"role": "developer", "content": "Old developer turn"},
        {"role": "assistant", "reasoning_content": "old", "content": "old answer"},
        {"role": "user", "content": "new question"},
    ],
    "consecutive_users": [
        {"role": "user", "content": "part one"},
        {"role": "user", "content": "part two"},
    ],
    "response_format": [
        {"role": "system", "content": "Reply in JSON.",
         "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "object"}}}},
        {"role": "user", "content": "Give me JSON"},
    ],
    "prefix_continuation": [
        {"role": "user", "content": "Write a poem"},
        {"role": "assistant", "content": "Roses are", "wo_eos": True},
    ],
    "task_title": [
        {"role": "user", "content": "How do I bake bread?", "task": "title"},
    ],
    "task_action": [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "Open the door", "task": "action"},
    ],
    "top_level_tools_without_system": {
        "tools": [WEATHER],
        "messages": [{"role": "user", "content": "weather?"}]},
    "empty_system": [
        {"role": "system", "content": ""},
        {"role": "user", "content": "x"},
    ],
}

COMPLETIONS = [
    ("thinking", "Let me think.\nOK.</think>The answer is 4.<｜end▁of▁sentence｜>"),
    ("chat", "Plain answer with\n\nnewlines and <b>tags</b>.<｜end▁of▁sentence｜>"),
    ("thinking", "Need tools.</think>Calling now.\n\n<｜DSML｜tool_calls>\n"
                 "<｜DSML｜invoke name=\"get_weather\">\n"
                 "<｜DSML｜parameter name=\"city\" string=\"true\">東京 \"x\"\nline</｜DSML｜parameter>\n"
                 "<｜DSML｜parameter name=\"days\" string=\"false\">3</｜DSML｜parameter>\n"
                 "</｜DSML｜invoke>\n"
                 "<｜DSML｜invoke name=\"search\">\n"
                 "<｜DSML｜parameter name=\"queries\" string=\"false\">[\"a\", \"b\"]</｜DSML｜parameter>\n"
                 "</｜DSML｜invoke>\n"
                 "</｜DSML｜tool_calls><｜end▁of▁sentence｜>"),
    ("chat", "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"noargs\">\n</｜DSML｜invoke>\n"
             "</｜DSML｜tool_calls><｜end▁of▁sentence｜>"),
]


def load_official(path):
    spec = importlib.util.spec_from_file_location("encoding_dsv4", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoding", required=True, help="path of the official encoding_dsv4.py")
    parser.add_argument("--out", default=os.path.join(ROOT, "tests", "golden", "tokenizer", "chat_golden.json"))
    args = parser.parse_args()
    enc = load_official(args.encoding)
    modes = {"none": ("chat", None), "high": ("thinking", "high"), "max": ("thinking", "max")}
    renders = []
    for name, scenario in SCENARIOS.items():
        for mode, (thinking_mode, effort) in modes.items():
            request = scenario if isinstance(scenario, dict) else {"messages": scenario}
            messages = copy.deepcopy(request["messages"])
            if request.get("tools"):
                if messages[0]["role"] not in ("system", "developer"):
                    messages.insert(0, {"role": "system", "content": ""})
                messages[0]["tools"] = request["tools"]
            prompt = enc.encode_messages(messages, thinking_mode=thinking_mode, reasoning_effort=effort)
            renders.append({"name": name, "mode": mode, "request": request, "prompt": prompt})
    parses = []
    for thinking_mode, text in COMPLETIONS:
        parsed = enc.parse_message_from_completion_text(text, thinking_mode=thinking_mode)
        parses.append({"thinking": thinking_mode == "thinking", "text": text,
                       "reasoning": parsed["reasoning_content"], "content": parsed["content"],
                       "tool_calls": [{"name": t["function"]["name"], "arguments": t["function"]["arguments"]}
                                      for t in parsed["tool_calls"]]})
    doc = {"generator": "scripts/reference/chat_golden.py (official encoding_dsv4.py)", "renders": renders,
           "parses": parses}
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(args.out, os.path.getsize(args.out), "bytes,", len(renders), "renders,", len(parses), "parses")


if __name__ == "__main__":
    main()
