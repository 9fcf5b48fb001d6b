"""Greedy generation that prefills a batch's shared prompt prefix once (the judge's prompts are mostly one text).

Why: every judge prompt starts with the same chat header, instructions and project guidelines
(about 420 of 740 tokens with the sample project and SmolLM2), and on a CPU prefill dominates
the cost (decoding 24 tokens is small next to it). Batching alone does not make prefill cheaper;
computing the shared prefix's keys and values once and prefilling only each request's own suffix
does (issue 19, local judge and `rlhf serve` throughput).

Layout of one batch of B token sequences, each = prefix (P tokens, common to all) + suffix:

    columns:  [ prefix (P) | left padding | suffix_b ]      then one column per generated token
    mask:     [ 1 ... 1    | 0 ... 0      | 1 ... 1  ]
    position: [ 0 .. P-1   | (unused)     | P .. P+len_b-1 ]

so each row sees exactly its own prompt at exactly the positions it has when fed alone: the
padding sits between prefix and suffix, masked, and the suffix's position ids continue from P
(not from the column index). Each step appends one column (mask 1, position = previous + 1).

`PrefixCache` keeps the keys and values of the last prefix computed, keyed by its token ids: a
later batch reuses the longest part of it that its own prefix starts with (the server's batches
differ in prompts but share the header and guidelines) and prefills only the rest.

Decoding is greedy (argmax), the same as `model.generate(do_sample=False)` one request at a time;
`tests/test_judge_shared_prefix.py` checks the tokens are identical.
"""

from __future__ import annotations

import inspect
import threading
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch


def common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """Length of the longest token prefix that every sequence starts with (0 for an empty list)."""
    if not sequences:
        return 0
    first = sequences[0]
    length = min(len(s) for s in sequences)
    for other in sequences[1:]:
        n = 0
        while n < length and other[n] == first[n]:
            n += 1
        length = n
    return length


def _cache_kwarg(model) -> str:
    """Transformers 5 names the cache argument `cache` (`past_key_values` before; deprecated alias until 5.40)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _output_cache(outputs):
    return getattr(outputs, "cache", None) if getattr(outputs, "cache", None) is not None else outputs.past_key_values


@dataclass
class PrefixCache:
    """The keys and values of the last prompt prefix prefilled (batch 1), keyed by its token ids; thread-safe."""

    tokens: tuple[int, ...] = ()
    layers: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    """Per layer (keys, values), each (1, kv_heads, len(tokens), head_dim)."""
    hits: int = 0
    """Prefix tokens served from the cache rather than prefilled (for the tests and the benchmark)."""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def prefix_layers(self, model, prefix: Sequence[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-layer keys and values of `prefix` (batch 1): the cached part reused, the rest prefilled; the cache then holds `prefix`."""
        from transformers import DynamicCache

        prefix = tuple(int(t) for t in prefix)
        with self.lock:
            reuse = common_prefix_length([self.tokens, prefix]) if self.tokens else 0
            if reuse == len(prefix) and reuse == len(self.tokens):
                self.hits += reuse
                return self.layers
            device = next(model.parameters()).device
            cache = DynamicCache(ddp_cache_data=[(k[:, :, :reuse], v[:, :, :reuse]) for k, v in self.layers]) if reuse else DynamicCache()
            if reuse < len(prefix):
                ids = torch.tensor([prefix[reuse:]], dtype=torch.long, device=device)  # (1, P - reuse)
                positions = torch.arange(reuse, len(prefix), device=device).unsqueeze(0)
                mask = torch.ones((1, len(prefix)), dtype=torch.long, device=device)
                with torch.inference_mode():  # no autograd graph for the prefix's forward
                    outputs = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **{_cache_kwarg(model): cache})
                cache = _output_cache(outputs)
            self.hits += reuse
            self.tokens = prefix
            self.layers = [(layer.keys[:, :, : len(prefix)], layer.values[:, :, : len(prefix)]) for layer in cache.layers]
            return self.layers


def greedy_shared_prefix(
    model,
    sequences: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    stop_ids: set[int] | frozenset[int],
    pad_id: int,
    prefix_cache: Optional[PrefixCache] = None,
) -> list[list[int]]:
    """Greedy continuations of `sequences` (token id lists), generated together; each list ends at its first stop token (kept).

    The longest prefix common to all sequences is prefilled once (or taken from `prefix_cache`),
    expanded to the batch, and only the suffixes are prefilled; see the module docstring for the
    padding, mask and positions that keep each row identical to generating it alone.
    """
    from transformers import DynamicCache

    if not sequences:
        return []
    if any(len(s) == 0 for s in sequences):
        raise ValueError("every sequence needs at least one token")
    device = next(model.parameters()).device
    batch = len(sequences)
    # 1. The shared prefix, leaving every row at least one suffix token (its logits give the first new token).
    prefix_len = min(common_prefix_length(sequences), min(len(s) for s in sequences) - 1)
    cache_store = prefix_cache if prefix_cache is not None else PrefixCache()
    if prefix_len > 0:
        layers = cache_store.prefix_layers(model, sequences[0][:prefix_len])
        # expand() is a view; the first update's torch.cat copies it into each row's own memory.
        cache = DynamicCache(ddp_cache_data=[(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)) for k, v in layers])
    else:
        cache = DynamicCache()

    # 2. Suffixes left-padded after the prefix; positions continue from the prefix.
    suffixes = [list(s[prefix_len:]) for s in sequences]
    width = max(len(s) for s in suffixes)
    input_ids = torch.full((batch, width), pad_id, dtype=torch.long)
    suffix_mask = torch.zeros((batch, width), dtype=torch.long)
    positions = torch.zeros((batch, width), dtype=torch.long)
    for row, suffix in enumerate(suffixes):
        input_ids[row, width - len(suffix):] = torch.tensor(suffix, dtype=torch.long)
        suffix_mask[row, width - len(suffix):] = 1
        positions[row, width - len(suffix):] = torch.arange(prefix_len, prefix_len + len(suffix))
    mask = torch.cat([torch.ones((batch, prefix_len), dtype=torch.long), suffix_mask], dim=1).to(device)  # (B, P + W)
    input_ids, positions = input_ids.to(device), positions.to(device)
    next_position = torch.tensor([len(s) for s in sequences], dtype=torch.long, device=device).unsqueeze(1)  # (B, 1)

    # 3. Greedy steps; a finished row keeps feeding padding (its tokens are cut at its stop below).
    generated: list[list[int]] = [[] for _ in range(batch)]
    finished = [False] * batch
    cache_arg = _cache_kwarg(model)
    with torch.inference_mode():
        for _ in range(max_new_tokens):
            outputs = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True,
                            logits_to_keep=1, **{cache_arg: cache})
            cache = _output_cache(outputs)
            chosen = outputs.logits[:, -1, :].argmax(dim=-1)  # (B,)
            for row, token in enumerate(chosen.tolist()):
                if not finished[row]:
                    generated[row].append(int(token))
                    finished[row] = int(token) in stop_ids
            if all(finished):
                break
            chosen = torch.where(torch.tensor(finished, device=device), torch.full_like(chosen, pad_id), chosen)
            input_ids = chosen.unsqueeze(1)  # (B, 1)
            positions = next_position
            next_position = next_position + 1
            mask = torch.cat([mask, torch.ones((batch, 1), dtype=torch.long, device=device)], dim=1)
    return generated


def greedy_responses(
    model, tokenizer, prompts: Sequence, *, max_new_tokens: int, batch_size: int = 16, prefix_cache: Optional[PrefixCache] = None,
) -> list:
    """One greedy `GeneratedResponse` per prompt (a string or a chat), in order, `batch_size` prompts per forward batch.

    The same texts as `rlhf.generate.generate_responses(..., n=1, temperatures=(0.0,))`, faster when
    the prompts share a prefix. Batches keep the given order (a judge's requests come grouped by
    task, and both orders of a pair share their whole prompt text up to the first response).
    """
    from rlhf.generate import GeneratedResponse, _now_iso, encode_prompt, stop_token_ids, truncate_at_stop

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    encoded = [encode_prompt(tokenizer, prompt) for prompt in prompts]
    stops = stop_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(stops)
    cache = prefix_cache if prefix_cache is not None else PrefixCache()
    out = []
    for start in range(0, len(encoded), batch_size):
        rows = greedy_shared_prefix(model, encoded[start:start + batch_size], max_new_tokens=max_new_tokens, stop_ids=stops,
                                    pad_id=pad_id, prefix_cache=cache)
        stamp = _now_iso()
        for tokens in rows:
            kept, finished = truncate_at_stop(tokens, stops)
            out.append(GeneratedResponse(
                text=tokenizer.decode(kept[:-1] if finished else kept, skip_special_tokens=True).strip(), sample_index=0,
                temperature=0.0, top_p=1.0, top_k=0, max_new_tokens=max_new_tokens, seed=None, finished=finished,
                num_tokens=len(kept), token_ids=tuple(kept), generated_at=stamp,
            ))
    return out
