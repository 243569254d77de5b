"""The typed-through cache: hits while the user types into the ghost text, misses otherwise."""
from completion.cache import BEFORE_CHARS, CompletionCache

DOC = "import os\n\ndef area(w, h):\n    \n\nprint(area(2, 3))\n"
CURSOR = DOC.index("    \n") + 4


def typed(n, completion="return w * h"):
    """The document after typing the first n characters of the completion."""
    return DOC[:CURSOR] + completion[:n] + DOC[CURSOR:], CURSOR + n


def test_typing_into_the_completion_hits_with_the_rest():
    cache = CompletionCache()
    cache.put("u", DOC, CURSOR, "return w * h")
    assert cache.get("u", DOC, CURSOR) == "return w * h"
    for n in range(1, 12):
        assert cache.get("u", *typed(n)) == "return w * h"[n:]
    assert cache.get("u", *typed(12)) is None          # all of it typed: nothing left to show
    assert cache.hits == 12 and cache.misses == 1


def test_typing_something_else_or_changing_the_suffix_misses():
    cache = CompletionCache()
    cache.put("u", DOC, CURSOR, "return w * h")
    assert cache.get("u", *typed(3, "ref")) is None
    changed_after = DOC[:CURSOR] + "x" + DOC[CURSOR + 1:]
    assert cache.get("u", changed_after, CURSOR) is None
    assert cache.get("other", DOC, CURSOR) is None


def test_edits_far_from_the_cursor_keep_the_entry():
    cache = CompletionCache()
    far = "# a long header comment\n" * 40
    doc = far + DOC
    cache.put("u", doc, len(far) + CURSOR, "return w * h")
    edited = "# edited\n" + doc                       # more than BEFORE_CHARS above the cursor
    assert len(far) > BEFORE_CHARS
    assert cache.get("u", edited, len(far) + CURSOR + len("# edited\n")) == "return w * h"


def test_lru_per_document_and_forget():
    cache = CompletionCache(per_document=2)
    for i in range(3):
        doc = f"x{i} = " + DOC
        cache.put("u", doc, 5, f"value{i}")
    assert cache.get("u", "x0 = " + DOC, 5) is None     # evicted
    assert cache.get("u", "x2 = " + DOC, 5) == "value2"
    cache.forget("u")
    assert cache.get("u", "x2 = " + DOC, 5) is None


def test_short_document_matches_exactly_from_the_start():
    cache = CompletionCache()
    cache.put("u", "de", 2, "f main():")
    assert cache.get("u", "def", 3) == " main():"
    assert cache.get("u", "x = 1\ndef", 9) is None       # the stored start was the file's start


def test_nothing_to_show_is_remembered_only_at_the_same_place():
    cache = CompletionCache()
    cache.put("u", DOC, CURSOR, "")
    assert cache.get("u", DOC, CURSOR) == ""
    assert cache.get("u", *typed(1)) is None
    assert cache.has("u", DOC, CURSOR)
