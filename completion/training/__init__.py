"""Training: the pocket target, drafter data synthesis from the target, the drafter trainers.

    corpus.py          target greedy traces (tokens, fused states, labels), draft vocabulary
    drafter_fit.py     quick in-memory teacher-forced EAGLE-3 + P-EAGLE fit (`eyas train drafter-fit`)
    synthesis.py       prompts from the corpus's train split -> target greedy continuations, aux and
                       final hidden states in safetensors shards + manifest (`eyas train synth`)
    peagle_trainer.py  P-EAGLE (COD sampling, parallel-group mask, sequence partitioning) and the
                       EAGLE-3 baseline (training-time test) on synthesized data (`eyas train drafter`)
    synthetic.py       random Qwen3 / Qwen3-MoE targets for tests and benchmarks
"""
import os
import sys
import time
from pathlib import Path

JEMALLOC = Path("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")   # Debian's libjemalloc2


def relaunch_with_jemalloc() -> None:
    """Re-run this command under jemalloc when the machine has it (apt install libjemalloc2).
    Training steps allocate and free tens of megabytes of activations each; glibc hands big blocks
    back to the kernel, so every step page-faults them in again: on the real target's drafter,
    1M faults and 30% system time per 10 s, 2.6 s a step, against 1.3 s under jemalloc with
    decay off (memory kept for reuse). EYAS_JEMALLOC=0 keeps glibc."""
    if (os.environ.get("EYAS_JEMALLOC") == "0" or not JEMALLOC.exists()
            or "jemalloc" in os.environ.get("LD_PRELOAD", "")):
        return
    env = {**os.environ, "LD_PRELOAD": f"{JEMALLOC} {os.environ.get('LD_PRELOAD', '')}".strip(),
           "MALLOC_CONF": os.environ.get("MALLOC_CONF", "dirty_decay_ms:-1,muzzy_decay_ms:-1")}
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def log_line(log: Path | None, msg: str) -> None:
    """A timestamped progress line on stderr, appended to `log` too when given."""
    line = f"{time.strftime('%H:%M:%S')} {msg}"
    print(line, file=sys.stderr, flush=True)
    if log is not None:
        with open(log, "a") as fh:
            fh.write(line + "\n")


class TimeBudget:
    """Fits a run's total steps to a wall-clock budget (`--minutes`), so its LR schedule still ends
    at its floor: the step rate is measured after the first step (which may include compilation),
    and every `calibrate` steps the total becomes the steps that fit in the time left at the rate
    so far, never more than planned. Re-fitting keeps up with steps that change speed: `eyas
    adapt`'s first steps ran 0.65 s and its later ones 0.4, and one fit after 20 steps ended the
    cosine at 70% of the budget. Sized for a borrowed GPU whose speed is unknown until it runs."""

    def __init__(self, minutes: float, calibrate: int = 20, margin: float = 0.95, clock=None):
        self.seconds, self.calibrate, self.margin = minutes * 60, calibrate, margin
        self.clock = clock or time.perf_counter
        self.start = self.clock()
        self.mark: tuple[float, int] | None = None
        self.planned: int | None = None   # the total before any fit: a ceiling

    def fit(self, step: int, total: int, log: Path | None = None) -> int:
        """Call after every step; returns the total (changed every `calibrate` steps; logged when
        it moves by 5% or more)."""
        if self.seconds <= 0:
            return total
        now = self.clock()
        if self.mark is None:
            self.mark, self.planned = (now, step), total
        elif (step - self.mark[1]) % self.calibrate == 0:
            rate = (step - self.mark[1]) / (now - self.mark[0])
            left = self.seconds - (now - self.start)
            fitted = max(step, min(self.planned, step + int(self.margin * rate * left)))
            if abs(fitted - total) >= 0.05 * total:
                log_line(log, f"--minutes {self.seconds / 60:g}: {total} -> {fitted} steps (the cosine ends there)")
            return fitted
        return total
