"""Two blank lines in a row (outside literals) end a completion: in every language they separate
top-level units, and a model that writes them is moving on to something new."""
from __future__ import annotations

from ..lines import is_blank
from ..scan import CompletionScan

BLANK_LINES_THAT_END = 2


def end_at_blank_lines(scan: CompletionScan) -> int | None:
    seen_code = not is_blank(scan.ctx.line_prefix + scan.lines[0])
    run_start, run_length = 0, 0
    for n in range(1, len(scan.lines)):
        line = scan.lines[n]
        if is_blank(line) and scan.is_complete(n) and scan.masked.line_states[n].in_code:
            run_start = run_start if run_length else n
            run_length += 1
            if run_length >= BLANK_LINES_THAT_END and seen_code:
                return scan.cut_before_line(run_start)
        else:
            seen_code = seen_code or not is_blank(line)
            run_length = 0
    return None
