"""Training: the pocket target, drafter data synthesis from the target, the drafter trainers.

    corpus.py          target greedy traces (tokens, fused states, labels), draft vocabulary
    drafter_fit.py     quick in-memory teacher-forced EAGLE-3 + P-EAGLE fit (`eyas train drafter-fit`)
    synthesis.py       prompts from the corpus's train split -> target greedy continuations, aux and
                       final hidden states in safetensors shards + manifest (`eyas train synth`)
    peagle_trainer.py  P-EAGLE (COD sampling, parallel-group mask, sequence partitioning) and the
                       EAGLE-3 baseline (training-time test) on synthesized data (`eyas train drafter`)
    synthetic.py       random Qwen3 / Qwen3-MoE targets for tests and benchmarks
"""
import sys
import time
from pathlib import Path


def log_line(log: Path | None, msg: str) -> None:
    """A timestamped progress line on stderr, appended to `log` too when given."""
    line = f"{time.strftime('%H:%M:%S')} {msg}"
    print(line, file=sys.stderr, flush=True)
    if log is not None:
        with open(log, "a") as fh:
            fh.write(line + "\n")
