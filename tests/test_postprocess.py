"""Post-processing: the multi-line decision, early stop, each rule alone, and golden cases that
run the whole pipeline (tests/data/postprocess/*.toml, one file per rule group; adding a case
means adding a [[case]] table, not code).

A document is written with `║` at the cursor; `site()` cuts it into a CompletionSite.
"""
from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from completion.postprocess import RULES, CompletionSite, is_multiline, postprocess, should_stop
from completion.postprocess.rules.cut_at_copy_of_line_suffix import cut_at_copy_of_line_suffix
from completion.postprocess.rules.cut_at_loop import cut_at_loop, find_loop
from completion.postprocess.rules.cut_to_first_line import cut_to_first_line
from completion.postprocess.rules.drop_control_characters import drop_control_characters
from completion.postprocess.rules.drop_duplicate_of_suffix import drop_duplicate_of_suffix
from completion.postprocess.rules.drop_repetitive_junk import drop_repetitive_junk
from completion.postprocess.rules.limit_to_block import limit_to_block
from completion.postprocess.rules.normalize_newlines import normalize_newlines
from completion.postprocess.rules.drop_retyped_indent import drop_retyped_indent
from completion.postprocess.rules.strip_trailing_whitespace import strip_trailing_whitespace
from completion.postprocess.rules.trim_lines_repeating_suffix import trim_lines_repeating_suffix
from completion.postprocess.rules.trim_unbalanced_closers import trim_unbalanced_closers

CURSOR = "║"
GOLDEN_DIR = Path(__file__).parent / "data" / "postprocess"


def site(language: str | None, document: str, cursor_node: str | None = None,
         crlf: bool = False) -> CompletionSite:
    """The CompletionSite for `document` with the cursor at its one `║`."""
    assert document.count(CURSOR) == 1, "mark exactly one cursor"
    if crlf:
        document = document.replace("\n", "\r\n")
    prefix, suffix = document.split(CURSOR)
    line_prefix = prefix[prefix.rfind("\n") + 1:]
    line_suffix = suffix.split("\n", 1)[0]
    return CompletionSite(language, prefix, suffix, line_prefix, line_suffix, cursor_node)


# --- golden cases: the whole pipeline ------------------------------------------------------

def load_golden_cases() -> list:
    cases = []
    for path in sorted(GOLDEN_DIR.glob("*.toml")):
        for case in tomllib.loads(path.read_text(encoding="utf-8"))["case"]:
            cases.append(pytest.param(case, id=f"{path.stem}/{case['name']}"))
    return cases


GOLDEN = load_golden_cases()


def golden_site(case: dict) -> CompletionSite:
    return site(case.get("language"), case["document"], case.get("cursor_node"),
                case.get("crlf", False))


def expected_text(case: dict) -> str:
    assert ("expected" in case) != case.get("discard", False), "give `expected` or `discard`"
    return "" if case.get("discard") else case["expected"]


def test_enough_golden_cases_over_several_languages():
    cases = [p.values[0] for p in GOLDEN]
    assert len(cases) >= 40
    assert len({c.get("language") for c in cases}) >= 7
    assert len({p.id for p in GOLDEN}) == len(GOLDEN), "golden case names must be unique"


@pytest.mark.parametrize("case", GOLDEN)
def test_golden_pipeline(case, caplog):
    caplog.set_level("DEBUG", logger="eyas.postprocess")
    assert postprocess(case["completion"], golden_site(case), case["multiline"]) == expected_text(case)
    # A rule that raised hands its input back, which could pass unnoticed: none may raise here.
    assert not caplog.records


@pytest.mark.parametrize("case", GOLDEN)
def test_golden_mode_is_what_is_multiline_decides(case):
    # A case whose mode the caller would never pick tests nothing real; `forced` marks the
    # few that exercise a rule in the other mode on purpose.
    if case.get("forced"):
        pytest.skip("mode forced on purpose")
    assert is_multiline(golden_site(case)) == case["multiline"]


@pytest.mark.parametrize("case", GOLDEN)
def test_golden_early_stop_changes_nothing(case):
    """Streaming character by character and stopping where should_stop says gives the same
    final text as post-processing the whole completion."""
    s, raw = golden_site(case), case["completion"]
    stop = next((n for n in range(1, len(raw) + 1) if should_stop(raw[:n], s, case["multiline"])),
                len(raw))
    assert postprocess(raw[:stop], s, case["multiline"]) == expected_text(case)


# --- is_multiline --------------------------------------------------------------------------

MULTILINE_TABLE = [
    # language, document, cursor_node, expected
    ("python", "def f():\n    ║", None, True),                   # empty line after an opener
    ("python", "def f():║", None, True),                         # the line ends an opener
    ("python", "class A:\n    def f(self):║\n", None, True),
    ("python", "def f(\n    a,\n):║", None, True),                # header over several lines
    ("python", "for x in xs:\n    print(x)\n║", None, True),     # empty line at block level
    ("python", "x = foo(║)", None, False),                       # argument list
    ("python", "x = ║", None, False),                            # finishing a statement
    ("python", "    return ║ + 1", None, False),                 # text after the cursor
    ("python", 'print("a║")', None, False),                      # in a string
    ("python", "# note ║", None, False),                         # in a comment
    ("python", 'def f():\n    """Doc\n    ║', None, False),      # in a docstring
    ("python", "x = [\n    ║", None, False),                     # in a list literal
    ("python", "x = {\n    ║", None, False),                     # in a dict literal
    ("python", "x = 1 + \\\n║", None, False),                    # backslash continuation
    ("python", "f = lambda x:║", None, False),                   # `:` that opens no block
    ("python", "def f(a, b)║", None, False),
    ("python", "def f(a, b)║", "function_definition", True),     # the node says: a definition
    ("python", "\n║", "comment", False),                         # the node says: a comment
    ("python", "def f():\r\n    ║\r\n    pass\r\n", None, True),  # CRLF document
    ("javascript", "function f() {║}", None, True),
    ("javascript", "function f() {\n  ║\n}", None, True),
    ("javascript", "foo(a, ║)", None, False),
    ("javascript", "it('x', () => {║});", None, True),             # `});` is all closers
    ("javascript", "const s = `line\n║", None, False),              # in a template literal
    ("javascript", "/* block\n ║", None, False),                    # in a block comment
    ("typescript", "const o = {║}", None, True),
    ("tsx", "return (\n    ║", None, False),
    ("go", "if err != nil {║", None, True),
    ("go", "x := `raw\n║", None, False),                           # in a raw string
    ("rust", 'let s = format!("{}", ║);', None, False),
    ("rust", "fn f<'a>(x: &'a str) {║", None, True),               # lifetimes are not quotes
    ("java", "class A {\n    ║\n}", None, True),
    ("c", "int x = ║;", None, False),
    ("cpp", "for (int i = 0; ║", None, False),
    (None, "key: value\n║", None, True),
]


@pytest.mark.parametrize("language,document,cursor_node,expected", MULTILINE_TABLE)
def test_is_multiline(language, document, cursor_node, expected):
    crlf_free = document.replace("\r\n", "\n")
    assert is_multiline(site(language, crlf_free, cursor_node, crlf="\r\n" in document)) is expected


# --- should_stop ---------------------------------------------------------------------------

PY_BODY = "def f(x):\n    ║\n\nprint(f(1))\n"
JS_BODY = "function f() {\n  ║\n}\n"
JS_CALLBACK = "it('works', () => {\n  ║"
PY_MODULE = "import os\n\n║"

STOP_TABLE = [
    # language, document, multiline, text so far, expected
    ("python", "x = ║", False, "foo", False),
    ("python", "x = ║", False, "foo\n", True),
    ("python", "x = ║", False, "\n", True),              # a single line that is empty: discarded
    ("python", PY_BODY, True, "return 1\n", False),
    ("python", PY_BODY, True, "return 1\n  ", False),      # the indentation is not known yet
    ("python", PY_BODY, True, "return 1\n\n", False),
    ("python", PY_BODY, True, "return 1\n\nd", True),      # `d` at column 0 left the body
    ("python", PY_BODY, True, "x = 1\n\n\n", True),        # two blank lines
    ("python", PY_BODY, True, 'x = """\ndoc', False),      # column 0 inside a string is not a dedent
    ("python", PY_MODULE, True, "def a():\n    pass\nel", False),   # may become `else`
    ("python", PY_MODULE, True, "def a():\n    pass\nx", True),     # the next member
    ("javascript", JS_BODY, True, "return 1;\n", False),
    ("javascript", JS_BODY, True, "return 1;\n}", True),   # the suffix already closes the block
    ("javascript", JS_CALLBACK, True, "done();\n});", False),      # `);` may still grow
    ("javascript", JS_CALLBACK, True, "done();\n});\n", True),
    ("go", "func f() {\n\t║\n}\n", True, 'fmt.Println("}")\n', False),  # a brace in a string
    ("python", PY_BODY, True, "ab\x00", True),              # will be discarded anyway
    ("java", "class A {\n    ║\n}\n", True, "int x;\n    int y;\n", False),
]


@pytest.mark.parametrize("language,document,multiline,text,expected", STOP_TABLE)
def test_should_stop(language, document, multiline, text, expected):
    assert should_stop(text, site(language, document), multiline) is expected


# --- each rule alone -----------------------------------------------------------------------

def test_normalize_newlines():
    assert normalize_newlines("a\r\nb\rc\n", site("python", "║"), True) == "a\nb\nc\n"


@pytest.mark.parametrize("text,expected", [
    ("x = 1\n\ty = 2", "x = 1\n\ty = 2"),
    ("x\x00", ""),
    ("x = \x1b[31m", ""),
    ("caf\ufffd", ""),
    ("x\ry", ""),              # a CR that normalize_newlines did not see
    ("naïve = 'ü'", "naïve = 'ü'"),
])
def test_drop_control_characters(text, expected):
    assert drop_control_characters(text, site("python", "║"), True) == expected


@pytest.mark.parametrize("text,multiline,expected", [
    ("a + b\nprint(x)", False, "a + b"),
    ("a + b", False, "a + b"),
    ("\n    foo()", False, ""),
    ("   \nfoo()", False, ""),
    ("a\nb", True, "a\nb"),
])
def test_cut_to_first_line(text, multiline, expected):
    assert cut_to_first_line(text, site("python", "x = ║"), multiline) == expected


@pytest.mark.parametrize("language,document,text,expected", [
    ("python", PY_BODY, "y = x\n    return y\nprint(2)", "y = x\n    return y"),
    ("python", "def f():║", "\n    return 1\ndef g():", "\n    return 1"),
    ("python", "if a:\n    if b:\n        ║", "x()\n    y()", "x()"),
    ("python", PY_BODY, "x = (\n1)\n    return x", "x = (\n1)\n    return x"),
    ("python", PY_MODULE, "def a():\n    pass\n\ndef b():\n    pass", "def a():\n    pass\n"),
    ("python", PY_BODY, "a = 1\n\n\n    b = 2", "a = 1"),
    ("javascript", JS_BODY, "return 1;\n}\nfoo();", "return 1;"),
    ("javascript", "function f() {║}", "\n  return 1;\n}", "\n  return 1;"),
    ("javascript", JS_CALLBACK, "done();\n});\nit('b');", "done();\n});"),
    ("c", "int f() {\n    if (x) {\n        ║\n    return 0;\n}\n",
     "a();\n    } else {\n        b();\n    }", "a();\n    } "),
    ("go", "║", "func a() {\n}\n\nfunc b() {\n}", "func a() {\n}\n"),
    ("rust", "impl A {\n    ║\n}\n", "fn a() {}\n    fn b() {\n    }\n    fn c() {}",
     "fn a() {}\n    fn b() {\n    }"),
])
def test_limit_to_block(language, document, text, expected):
    assert limit_to_block(text, site(language, document), True) == expected


@pytest.mark.parametrize("language,document,text,expected", [
    ("python", "def f():\n    ║\n    return x\n", "return x", ""),
    ("python", "def f():\n    ║\n    return x + 1\n", "return x", ""),
    ("python", "def f():\n    ║\n    total_count = 0\n", "total", "total"),   # not at a token end
    ("python", "x = ║\ny = 2\n", "y", "y"),        # continues the cursor line: no comparison
    ("javascript", "foo(║)", ")", ""),
    ("javascript", "foo(║)", "a)", "a)"),
    ("python", "def f():║\n    return 1\n", "\n    return 1", ""),
])
def test_drop_duplicate_of_suffix(language, document, text, expected):
    assert drop_duplicate_of_suffix(text, site(language, document), True) == expected


@pytest.mark.parametrize("language,document,text,expected", [
    ("python", "def f(a, b):\n    ║\n    return r\n", "r = a + b\n    return r", "r = a + b"),
    ("python", "def f():\n    ║\n    a()\n    b()\n", "x()\n    a()\n    b()", "x()"),
    ("python", "def f():\n    ║\n    a()\n", "a()", ""),
    ("python", "    return ║\n    return x\n", "x", "x"),      # the user is typing that line
    ("javascript", "function f() {\n  ║\n  }\n", "if (x) {\n    y();\n  }", "if (x) {\n    y();\n  }"),
    ("go", "func f() {\n\t║\n\tg()\n}\n", "x := 1\n\n\tg()", "x := 1\n"),
    # the repeated line was the body of `else:`: the opener goes with it
    ("python", "def f(n):\n    ║\n    return g(n)\n", "if n:\n        return 0\n    else:\n        return g(n)",
     "if n:\n        return 0"),
    ("python", "def f(n):\n    ║\n        return g(n)\n", "if n:\n        return 0\n    else:\n        return g(n)",
     "if n:\n        return 0\n    else:"),          # the next line is deeper: it is the body
])
def test_trim_lines_repeating_suffix(language, document, text, expected):
    assert trim_lines_repeating_suffix(text, site(language, document), True) == expected


@pytest.mark.parametrize("language,document,text,expected", [
    ("python", 'print("hello ║")', 'world")', "world"),
    ("javascript", 'console.log("hi ║");', 'there");', "there"),
    ("python", "foo(║)", "bar(1))", "bar(1)"),
    ("python", "foo(║)", "bar(1)", "bar(1)"),            # its own `)`: not a copy
    ("python", "foo(bar(║)", "x))", "x)"),               # the suffix closes only one
    ("python", "foo(bar(║))", "x))", "x"),
    ("python", "y = a if cond║ else b", " and ok else b", " and ok "),
    ("python", "foo(║)", '")" + x', '")" + x'),          # that `)` is inside a string
    ("python", "x = ║", "1)", "1)"),                     # nothing after the cursor
])
def test_cut_at_copy_of_line_suffix(language, document, text, expected):
    assert cut_at_copy_of_line_suffix(text, site(language, document), False) == expected


@pytest.mark.parametrize("language,document,text,expected", [
    ("python", "print(║", '"hi")', '"hi")'),             # the suffix leaves `(` open
    ("python", "print(║)", '"hi")', '"hi"'),
    ("javascript", "arr.push(║", "items[0]])", "items[0]"),   # `]` cannot close `(`
    ("python", "def f():\n    ║", "x = 1)\ny = 2", "x = 1"),
    ("c", "if (a && (b || ║", "c)) {", "c)) {"),
    ("python", "f(║)", "')' + g(x)", "')' + g(x)"),       # brackets in strings do not count
    ("javascript", "f(║)", "a) // )", "a"),
    ("python", "def f():\n    ║", "x = [1,\n2]\n)", "x = [1,\n2]"),   # a line of only `)` goes
])
def test_trim_unbalanced_closers(language, document, text, expected):
    assert trim_unbalanced_closers(text, site(language, document), True) == expected


@pytest.mark.parametrize("document,text,expected", [
    ("║", "a = 1   \n    b = 2\t\n\n  \n", "a = 1\n    b = 2"),
    ("║", "  \n \t ", ""),
    ("x = ║foo", "bar + ", "bar + "),        # the space separates it from `foo`
    ("x = ║ + foo", "bar   ", "bar"),
    ("def f():║", "\n    pass   \n", "\n    pass"),
])
def test_strip_trailing_whitespace(document, text, expected):
    assert strip_trailing_whitespace(text, site("python", document), True) == expected


@pytest.mark.parametrize("document,text,expected", [
    ("def f():\n    ║", "    return x", "return x"),                     # the editor indented already
    ("def f():\n    ║", "\treturn x\n    y = 1", "return x\n    y = 1"),   # later lines keep theirs
    ("def f():\n║", "    return x", "    return x"),                     # column 0: the indent is needed
    ("x = ║", " 1", " 1"),                                              # not at indentation
])
def test_drop_retyped_indent(document, text, expected):
    assert drop_retyped_indent(text, site("python", document), True) == expected


@pytest.mark.parametrize("document,text,expected", [
    ("x = ║", "________________", ""),
    ("# ║", "--------------------", "--------------------"),   # decoration in a comment
    ("mask = 0b║", "11111111", "11111111"),                      # a number
    ("x = ║", "foo foo foo foo foo foo foo foo", ""),
    ("x = ║", ")))))))))", ""),
    ("║", "x = 1\nx = 1\nx = 1\nx = 1", ""),
    ("║", "foo bar foo bar foo bar foo bar", ""),
    ("║", "0, 0, 0, 0, 0, 0, 0, 0", "0, 0, 0, 0, 0, 0, 0, 0"),
    ("║", "# ---------------- section", "# ---------------- section"),
    ("║", "x = 1\nx = 1\nx = 1", "x = 1\nx = 1\nx = 1"),
    ("x = ║", ")))", ")))"),
])
def test_drop_repetitive_junk(document, text, expected):
    assert drop_repetitive_junk(text, site("python", document), True) == expected


LOOP_TEXTS = [
    "a = 1\nb = 2\na = 1\nb = 2\na = 1\nb = 2\na = 1\nb",
    "x = f(1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2)\ny = 1",
    "pass\n" * 7,
    "if a:\n    b()\nif a:\n    b()\nelse:\n    c()\n",
]


@pytest.mark.parametrize("text,expected", [
    ("a = 1\nb = 2\n" * 3, "a = 1\nb = 2"),
    ("a = 1\nb = 2\n" * 2, "a = 1\nb = 2\n" * 2),                    # twice is not a loop
    ("x.append(0)\n" * 4 + "return x", "x.append(0)\n" * 4 + "return x"),   # four times is code
    ("x.append(0)\n" * 5 + "return x", "x.append(0)"),
    ("# " + "=" * 40 + "\nx = 1", "# " + "=" * 40 + "\nx = 1"),       # a rule line is decoration
    ("y = 2\nf(" + "a, " * 16 + "\n", "y = 2"),
    ("f(" + "a, b, " * 16, ""),
    ("    return 1\nif x:\n" + "    return 1\nif x:\n" * 2, "    return 1\nif x:\n    return 1"),
])
def test_cut_at_loop(text, expected):
    assert cut_at_loop(text, site("python", "def f():\n    ║"), True) == expected


@pytest.mark.parametrize("text", LOOP_TEXTS)
def test_loop_cut_never_moves_as_text_grows(text):
    """should_stop relies on it: the first cut found stays where it is whatever follows."""
    first = None
    for n in range(len(text) + 1):
        cut = find_loop(text[:n])
        if first is None and cut is not None and cut < n:
            first = cut
        if first is not None:
            assert cut == first, (n, text[:n])


# --- never raise ---------------------------------------------------------------------------

BROKEN_SITE = CompletionSite("python", None, None, None, None)   # type: ignore[arg-type]


@pytest.mark.parametrize("apply_rule", RULES, ids=lambda r: r.__name__)
def test_rules_never_raise_and_hand_back_their_input(apply_rule):
    assert apply_rule("x = 1", BROKEN_SITE, True) == "x = 1"


def test_public_functions_never_raise():
    assert is_multiline(BROKEN_SITE) is False
    assert should_stop("x = 1\n", BROKEN_SITE, True) is False
    assert postprocess("x = 1", BROKEN_SITE, True) == "x = 1"
