"""Sampling responses from an OpenAI-compatible server: `rlhf generate --endpoint URL --model NAME`.

The same rows as in-process generation (`rlhf.generate.generate_responses`): n samples per prompt,
sample i at temperatures[i % len], each request seeded from (seed, prompt, sample) so servers that
honour `seed` (vLLM, llama.cpp) reproduce a run. Requests go through `ChatClient` (bounded
concurrency, retries, rate limit). A request that fails for good fails the whole sampling before
anything is imported.
"""

from __future__ import annotations

from typing import Any, Sequence

from rlhf.generate import GeneratedResponse, SamplingConfig, _now_iso, batch_seed
from rlhf.judge.client import ChatClient, EndpointError


def endpoint_responses(client: ChatClient, prompts: Sequence[Any], config: SamplingConfig, reporter=None) -> list[list[GeneratedResponse]]:
    """`config.n` responses per prompt (same order as `prompts`), each list ordered by sample index."""
    rows = [(p, s) for p in range(len(prompts)) for s in range(config.n)]
    out: list[list[GeneratedResponse]] = [[] for _ in prompts]
    if reporter is not None:
        reporter.progress(0, len(rows), "sampling from the endpoint")
    done = 0
    for start in range(0, len(rows), max(config.batch_size, client.config.concurrency)):
        chunk = rows[start:start + max(config.batch_size, client.config.concurrency)]
        by_temperature: dict[float, list[tuple[int, int]]] = {}
        for row in chunk:
            by_temperature.setdefault(config.temperature_for(row[1]), []).append(row)
        for temperature, group in by_temperature.items():
            conversations = [[{"role": "user", "content": prompts[p]}] if isinstance(prompts[p], str) else list(prompts[p]) for p, _ in group]
            # One seed per request: a server that honours it reproduces the run whatever the concurrency.
            seeds = [None if config.seed is None else batch_seed(config.seed, p * config.n + s) % (2**31) for p, s in group]
            replies = client.complete_many(conversations, seeds=seeds, max_tokens=config.max_new_tokens, temperature=temperature,
                                           top_p=config.top_p if temperature > 0 else None)
            stamp = _now_iso()
            for (p, s), reply in zip(group, replies):
                if reply.text is None:
                    raise EndpointError(f"{client.where}: prompt {p}, sample {s}: {reply.error}")
                out[p].append(GeneratedResponse(
                    text=reply.text.strip(), sample_index=s, temperature=temperature, top_p=config.top_p, top_k=config.top_k,
                    max_new_tokens=config.max_new_tokens, seed=config.seed, finished=reply.finish_reason != "length",
                    num_tokens=reply.tokens or 0, generated_at=stamp,
                ))
        done += len(chunk)
        if reporter is not None:
            reporter.progress(done, len(rows), "sampling from the endpoint")
    return [sorted(per_prompt, key=lambda r: r.sample_index) for per_prompt in out]
