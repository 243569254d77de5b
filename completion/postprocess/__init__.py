"""Post-processing of model completions: single/multi-line decision, early stop while streaming,
and the final cleanup pipeline (one rule per module in rules/, their order in pipeline.py).

    multiline = is_multiline(site)
    ... stream tokens; stop when should_stop(text_so_far, site, multiline) ...
    shown = postprocess(text, site, multiline)     # "" means show nothing
"""
from .completion_site import CompletionSite
from .multiline import is_multiline
from .pipeline import RULES, postprocess
from .stop import should_stop

__all__ = ["CompletionSite", "is_multiline", "should_stop", "postprocess", "RULES"]
