"""Typed-through completion cache: answer from what was already computed, with no engine call.

A completion is stored with the text just before and after its cursor. A later request hits when
the text after the cursor is unchanged and the text before it is the stored text plus a beginning
of the completion (the user typed into the ghost text, or accepted part of it): the answer is the
rest. Only the text near the cursor is compared, so edits elsewhere in the file and scrolling keep
entries alive. Pre-fetched completions (as if the shown one were accepted) land here too, which is
what makes Tab-Tab chains answer at once. An empty completion is kept too: "nothing worth showing
here" is an answer, and asking the engine again at the same place would only repeat it.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

BEFORE_CHARS = 160    # text before the cursor that identifies a site
AFTER_CHARS = 160     # text after the cursor that must not have changed
PER_DOCUMENT = 16     # entries kept per document (LRU)
MAX_TEXT_CHARS = 4096


@dataclass(frozen=True)
class Entry:
    before: str
    after: str
    text: str


class CompletionCache:
    def __init__(self, per_document: int = PER_DOCUMENT):
        self.per_document = per_document
        self._docs: dict[str, OrderedDict[tuple[str, str], Entry]] = {}
        self.hits = self.misses = 0

    def put(self, uri: str, text: str, cursor: int, completion: str) -> None:
        if len(completion) > MAX_TEXT_CHARS:
            return
        entry = Entry(text[max(0, cursor - BEFORE_CHARS):cursor], text[cursor:cursor + AFTER_CHARS], completion)
        entries = self._docs.setdefault(uri, OrderedDict())
        entries[(entry.before, entry.after)] = entry
        entries.move_to_end((entry.before, entry.after))
        while len(entries) > self.per_document:
            entries.popitem(last=False)

    def get(self, uri: str, text: str, cursor: int) -> str | None:
        """The rest of a cached completion that the text around `cursor` continues ("" for a place
        known to have nothing to show), or None."""
        entries = self._docs.get(uri)
        found = self._lookup(entries, text, cursor) if entries else None
        if found is None:
            self.misses += 1
            return None
        self.hits += 1
        entry, typed = found
        entries.move_to_end((entry.before, entry.after))
        return entry.text[typed:]

    def has(self, uri: str, text: str, cursor: int) -> bool:
        """Whether `get` would hit, without counting it."""
        entries = self._docs.get(uri)
        return bool(entries) and self._lookup(entries, text, cursor) is not None

    @staticmethod
    def _lookup(entries, text: str, cursor: int) -> tuple[Entry, int] | None:
        after = text[cursor:cursor + AFTER_CHARS]
        for entry in reversed(entries.values()):   # the newest first
            if entry.after != after:
                continue
            if not entry.text:   # nothing to show: only at the very same place
                if text[max(0, cursor - BEFORE_CHARS):cursor] == entry.before:
                    return entry, 0
                continue
            # typed = how much of the completion sits just before the cursor now (0 = same place)
            for typed in range(min(len(entry.text), cursor + 1)):
                start = cursor - typed
                if (text[start:cursor] == entry.text[:typed]
                        and text[max(0, start - BEFORE_CHARS):start] == entry.before
                        and entry.text[typed:].strip()):
                    return entry, typed
        return None

    def forget(self, uri: str) -> None:
        self._docs.pop(uri, None)

    def clear(self) -> None:
        self._docs.clear()
