"""What every rule is: a pure `(text, site, multiline) -> text` that never raises.

Returning "" means "discard the completion". A rule that fails inside hands back its input
untouched: a bug in one rule must cost that rule's cleanup, never the whole completion.
"""
from __future__ import annotations

import functools
import logging
from typing import Callable

from ..completion_site import CompletionSite

Rule = Callable[[str, CompletionSite, bool], str]

log = logging.getLogger("eyas.postprocess")


def rule(fn: Rule) -> Rule:
    @functools.wraps(fn)
    def guarded(text: str, site: CompletionSite, multiline: bool) -> str:
        try:
            return fn(text, site, multiline)
        except Exception:
            log.debug("postprocess rule %s failed; completion left as it was", fn.__name__,
                      exc_info=True)
            return text
    return guarded
