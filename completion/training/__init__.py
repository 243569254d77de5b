"""Training: data synthesis from the target, and (for now) a small drafter fit.

    corpus.py       target greedy traces (tokens, fused states, labels), draft vocabulary
    drafter_fit.py  teacher-forced EAGLE-3 + P-EAGLE parallel-group fit; `main` is the CLI
    synthetic.py    random Qwen3 / Qwen3-MoE targets for tests and benchmarks
"""
