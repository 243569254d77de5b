"""A generation read while it streams (completion.service.Generation): the first line of a block as
soon as it is complete, the rest once it ends, and a request that typed what it produces joining
it. The pure rule (`next_line`) on made-up text; the generation itself on the pocket model."""
import asyncio

import pytest

from completion.postprocess import CompletionSite
from completion.service import next_line

BLOCK = CompletionSite(language="python", prefix="def total(xs):\n    ", suffix="\n", line_prefix="    ",
                       line_suffix="", cursor_node="block")


@pytest.mark.parametrize("raw, typed, multiline, expected", [
    ("result = 0", "", True, ""),                          # the first line is still being written
    ("result = 0\n    for", "", True, "result = 0"),       # complete: shown while the block goes on
    ("    result = 0\n", "", True, "result = 0"),          # re-typed indentation dropped, as postprocess does
    ("result = 0\n    for x in xs:\n", "result = 0", True, "\n    for x in xs:"),   # the next line
    ("result = 0\n    fo", "result = 0", True, ""),        # ... once it is complete
    ("result = 0\n", "res", True, "ult = 0"),              # typed into the line: its rest
    ("res", "result", True, ""),                           # typed ahead of the model: wait
    ("result = 0\n", "return", True, None),                # typed something else: left behind
    ("result = 0\n", "", False, ""),                       # a single line is shown when it has ended
    ("\n\n", "", True, ""),                                # nothing but line ends yet
])
def test_next_line(raw, typed, multiline, expected):
    assert next_line(raw, typed, BLOCK, multiline) == expected


TEXT = "def total(xs):\n    result = 0\n    for x in xs:\n        \n"
CURSOR = TEXT.index("xs:\n        ") + len("xs:\n        ")


@pytest.fixture(scope="module")
def completer():
    from completion.context import DocumentTrees
    from completion.engine import load_engine
    from completion.service import Completer

    trees = DocumentTrees()
    trees.open("file:///g.py", "python", TEXT)
    return Completer(load_engine("torch", "pocket", precision="float32", device="cpu"), trees)


def test_first_line_first_then_the_block(completer):
    async def go():
        whole = await completer.run(completer.prepare("file:///g.py", CURSOR), max_tokens=48)
        generation = completer.start(completer.prepare("file:///g.py", CURSOR), max_tokens=48)
        first = await generation.suggestion("")
        running = not generation.done
        await generation.task
        return whole, first, running, generation
    whole, first, running, generation = asyncio.run(go())
    line, rest = whole.text.split("\n", 1)   # the fixture's site gives pocket a block
    assert whole.multiline and running and first == line
    assert asyncio.run(generation.suggestion(line)) == "\n" + rest
    assert asyncio.run(generation.suggestion(line + "\n")) == rest
    assert asyncio.run(generation.suggestion("zz")) is None
    assert generation.result.text == whole.text and generation.stats.generated_tokens > 0


def test_a_request_joins_with_what_it_typed(completer):
    async def go():
        whole = await completer.run(completer.prepare("file:///g.py", CURSOR), max_tokens=48)
        generation = completer.start(completer.prepare("file:///g.py", CURSOR), max_tokens=48)
        joined = await generation.suggestion(whole.text[:3])
        left = await generation.suggestion("zz")
        generation.cancel()
        return whole, joined, left
    whole, joined, left = asyncio.run(go())
    assert joined == whole.text.split("\n")[0][3:] and left is None


@pytest.mark.parametrize("raw, typed, multiline, expected", [
    ("result = compute(x", "", False, "result = compute("),   # a word still being written is left out
    ("result = comp", "", False, "result ="),
    ("resu", "", False, ""),                                 # no whole word yet
    ("result = 0\n    for x in", "result = 0", True, "\n    for x"),
])
def test_next_line_past_the_first_answer_budget(raw, typed, multiline, expected):
    assert next_line(raw, typed, BLOCK, multiline, partial=True) == expected


def test_past_its_budget_a_generation_shows_the_line_so_far(completer):
    async def go():
        generation = completer.start(completer.prepare("file:///g.py", CURSOR), max_tokens=48)
        early = await generation.suggestion("", budget_s=0)
        await generation.task
        return early, generation.result.text, generation.first_text_at
    early, whole, began = asyncio.run(go())
    assert early and whole.startswith(early) and began is not None
