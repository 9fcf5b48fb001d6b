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

Rows may share more than the batch's prefix: the two orders of a pair share the prompt text, and
pairs of one prompt that show the same response first share that response too (about a fifth of
the suffix tokens on the sample project). `plan_segments` groups such rows; each group's segment
is prefilled once (a batch of groups, padded like the suffixes) and copied to its rows:

    columns:  [ prefix (P) | padding | segment_g (up to cut_g) | padding | suffix_b (from cut_g) ]

Keys and values go into per-layer buffers allocated once for the whole generation (no torch.cat
per token); rows that stop early leave the batch when the copy that takes costs less than the
reads it saves.

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


@dataclass(frozen=True)
class SegmentPlan:
    """How a batch's rows split after the shared prefix: groups of rows that share a segment, prefilled once per group.

    Row b's tokens are prefix (P) + its group's segment [P, cuts[group_of[b]]) + its own suffix.
    The two orders of a pair, and pairs of one prompt that show the same response first, share the
    prompt text and the first response (issue 19); without groups every row is one group with cut P.
    """

    group_of: tuple[int, ...]
    """Per row: the index of its group."""
    cuts: tuple[int, ...]
    """Per group: where its segment ends (P ≤ cut ≤ the group's common prefix, and below every member's length)."""

    def segment_width(self, prefix_len: int) -> int:
        return max((cut - prefix_len for cut in self.cuts), default=0)

    def suffix_width(self, lengths: Sequence[int]) -> int:
        return max(length - self.cuts[group] for length, group in zip(lengths, self.group_of))


def plan_segments(sequences: Sequence[Sequence[int]], prefix_len: int) -> SegmentPlan:
    """The grouping of rows after `prefix_len` that prefills the fewest token columns (padding counted).

    Cost of a plan: groups × segment width + rows × suffix width (a forward's work is its padded
    batch × width). Rows are sorted by their tokens so that rows sharing a segment are neighbours;
    each threshold among the neighbours' common prefix lengths gives a grouping (runs of rows whose
    neighbours share at least that much), and for each grouping the suffix width is chosen at the
    breakpoints of the cost. The plan without groups (every row alone, cut at `prefix_len`) wins ties.
    """
    lengths = [len(s) for s in sequences]
    rows = len(sequences)
    flat = SegmentPlan(tuple(range(rows)), (prefix_len,) * rows)
    best, best_cost = flat, rows * flat.suffix_width(lengths)
    order = sorted(range(rows), key=lambda b: list(sequences[b][prefix_len:]))
    neighbours = [common_prefix_length([sequences[a], sequences[b]]) for a, b in zip(order, order[1:])]
    for threshold in sorted({n for n in neighbours if n > prefix_len}):
        runs = [[order[0]]]
        common = [lengths[order[0]] - 1]
        for row, lcp in zip(order[1:], neighbours):
            if lcp >= threshold:
                runs[-1].append(row)
                common[-1] = min(common[-1], lcp, lengths[row] - 1)
            else:
                runs.append([row])
                common.append(lengths[row] - 1)
        longest = [max(lengths[b] for b in run) for run in runs]
        # The suffix width must let every group cut within its common prefix; past that, widths where a group's segment vanishes.
        low = max(top - cp for top, cp in zip(longest, common))
        for width in sorted({low} | {top - prefix_len for top in longest if top - prefix_len > low}):
            cuts = [max(prefix_len, top - width) for top in longest]
            cost = len(runs) * max(cut - prefix_len for cut in cuts) + rows * width
            if cost < best_cost:
                group_of = [0] * rows
                for g, run in enumerate(runs):
                    for b in run:
                        group_of[b] = g
                best, best_cost = SegmentPlan(tuple(group_of), tuple(cuts)), cost
    return best


def _buffered_cache(batch: int, capacity: int):
    """A transformers Cache whose layers write into preallocated (batch, kv_heads, capacity, head_dim) buffers."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    class _Layer(DynamicLayer):
        def lazy_initialization(self, key_states, value_states) -> None:
            self.device = key_states.device
            shape = (batch, key_states.shape[1], capacity, key_states.shape[-1])
            self.key_buffer = torch.empty(shape, dtype=key_states.dtype, device=self.device)
            self.value_buffer = torch.empty((*shape[:3], value_states.shape[-1]), dtype=value_states.dtype, device=self.device)
            self.keys, self.values = self.key_buffer[:, :, :0], self.value_buffer[:, :, :0]
            self.is_initialized = True

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            start, stop = self.keys.shape[-2], self.keys.shape[-2] + key_states.shape[-2]
            if stop > self.key_buffer.shape[-2]:
                raise ValueError(f"the cache holds {self.key_buffer.shape[-2]} columns; {stop} asked")
            self.key_buffer[:, :, start:stop] = key_states  # broadcasts an expanded (1 → batch) prefix
            self.value_buffer[:, :, start:stop] = value_states
            self.keys, self.values = self.key_buffer[:, :, :stop], self.value_buffer[:, :, :stop]
            return self.keys, self.values

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            """Keep the rows `indices` (a copy into smaller buffers: later steps read fewer rows)."""
            self.key_buffer, self.value_buffer = self.key_buffer[indices], self.value_buffer[indices]
            stop = self.keys.shape[-2]
            self.keys, self.values = self.key_buffer[:, :, :stop], self.value_buffer[:, :, :stop]

    cache = DynamicCache()
    cache.layers = []
    cache.layer_class_to_replicate = _Layer
    return cache


def _padded_block(pieces: Sequence[Sequence[int]], starts: Sequence[int], width: int, pad_id: int):
    """(ids, mask, positions), each (B, width): piece b right-aligned (left padding), its positions from starts[b]."""
    batch = len(pieces)
    ids = torch.full((batch, width), pad_id, dtype=torch.long)
    mask = torch.zeros((batch, width), dtype=torch.long)
    positions = torch.zeros((batch, width), dtype=torch.long)
    for row, (piece, start) in enumerate(zip(pieces, starts)):
        if piece:
            ids[row, width - len(piece):] = torch.tensor(list(piece), dtype=torch.long)
            mask[row, width - len(piece):] = 1
            positions[row, width - len(piece):] = torch.arange(start, start + len(piece))
    return ids, mask, positions


def greedy_shared_prefix(
    model,
    sequences: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    stop_ids: set[int] | frozenset[int],
    pad_id: int,
    prefix_cache: Optional[PrefixCache] = None,
    segments: bool = True,
) -> list[list[int]]:
    """Greedy continuations of `sequences` (token id lists), generated together; each list ends at its first stop token (kept).

    The longest prefix common to all sequences is prefilled once (or taken from `prefix_cache`),
    then (with `segments`) each group's shared segment once (`plan_segments`), then only each row's
    own suffix; see the module docstring for the padding, mask and positions that keep each row
    identical to generating it alone. Keys and values live in buffers allocated once; rows that
    stop leave the batch once that pays.
    """
    if not sequences:
        return []
    if any(len(s) == 0 for s in sequences):
        raise ValueError("every sequence needs at least one token")
    device = next(model.parameters()).device
    batch = len(sequences)
    lengths = [len(s) for s in sequences]
    cache_arg = _cache_kwarg(model)
    # 1. The shared prefix, leaving every row at least one suffix token (its logits give the first new token).
    prefix_len = min(common_prefix_length(sequences), min(lengths) - 1)
    cache_store = prefix_cache if prefix_cache is not None else PrefixCache()
    layers = cache_store.prefix_layers(model, sequences[0][:prefix_len]) if prefix_len > 0 else []

    # 2. Groups of rows sharing a segment after the prefix, and the widths of the two padded blocks.
    plan = plan_segments(sequences, prefix_len) if segments else SegmentPlan(tuple(range(batch)), (prefix_len,) * batch)
    seg_width, suffix_width = plan.segment_width(prefix_len), plan.suffix_width(lengths)
    cache = _buffered_cache(batch, prefix_len + seg_width + suffix_width + max_new_tokens)
    mask_parts = [torch.ones((batch, prefix_len), dtype=torch.long)]
    with torch.inference_mode():
        # 3. Each group's segment prefilled once (padding between prefix and segment), then copied to its rows.
        if seg_width:
            groups = len(plan.cuts)
            members = [plan.group_of.index(g) for g in range(groups)]
            ids, seg_mask, positions = _padded_block([sequences[b][prefix_len:plan.cuts[g]] for g, b in enumerate(members)],
                                                     [prefix_len] * groups, seg_width, pad_id)
            group_cache = _buffered_cache(groups, prefix_len + seg_width)
            for index, (k, v) in enumerate(layers):
                group_cache.update(k.expand(groups, -1, -1, -1), v.expand(groups, -1, -1, -1), index)
            mask = torch.cat([torch.ones((groups, prefix_len), dtype=torch.long), seg_mask], dim=1).to(device)
            model(input_ids=ids.to(device), attention_mask=mask, position_ids=positions.to(device), use_cache=True,
                  logits_to_keep=1, **{cache_arg: group_cache})
            rows = torch.tensor(plan.group_of, device=device)
            for index, layer in enumerate(group_cache.layers):
                keys, values = layer.keys[rows], layer.values[rows]  # (B, kv_heads, P + S, head_dim)
                if prefix_len:
                    keys, values = keys[:, :, prefix_len:], values[:, :, prefix_len:]
                    cache.update(layers[index][0].expand(batch, -1, -1, -1), layers[index][1].expand(batch, -1, -1, -1), index)
                cache.update(keys, values, index)
            mask_parts.append(seg_mask[list(plan.group_of)])
        else:
            for index, (k, v) in enumerate(layers):
                cache.update(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1), index)

        # 4. Suffixes left-padded after the segments; positions continue from each row's cut.
        cuts = [plan.cuts[g] for g in plan.group_of]
        input_ids, suffix_mask, positions = _padded_block([s[cut:] for s, cut in zip(sequences, cuts)], cuts, suffix_width, pad_id)
        mask_parts.append(suffix_mask)
        mask = torch.cat(mask_parts, dim=1).to(device)  # (B, P + S + W)
        input_ids, positions = input_ids.to(device), positions.to(device)
        next_position = torch.tensor(lengths, dtype=torch.long, device=device).unsqueeze(1)  # (B, 1)

        # 5. Greedy steps. A row that stops feeds padding until the stopped rows are worth dropping from the batch:
        #    dropping copies the kept rows' keys and values once (about 2 reads of a row), it saves one read per
        #    stopped row and step left.
        generated: list[list[int]] = [[] for _ in range(batch)]
        active = list(range(batch))
        stopped: set[int] = set()
        for step in range(max_new_tokens):
            outputs = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True,
                            logits_to_keep=1, **{cache_arg: cache})
            chosen = outputs.logits[:, -1, :].argmax(dim=-1)  # (active,)
            for row, token in zip(active, chosen.tolist()):
                if row not in stopped:
                    generated[row].append(int(token))
                    if int(token) in stop_ids:
                        stopped.add(row)
            steps_left = max_new_tokens - 1 - step
            if len(stopped) == batch or steps_left == 0:
                break
            keep = [slot for slot, row in enumerate(active) if row not in stopped]
            if len(keep) < len(active) and (len(active) - len(keep)) * steps_left >= 2 * len(keep):
                index = torch.tensor(keep, device=device)
                for layer in cache.layers:
                    layer.batch_select_indices(index)
                active = [active[slot] for slot in keep]
                chosen, mask, next_position = chosen[index], mask[index], next_position[index]
            is_stopped = torch.tensor([row in stopped for row in active], device=device)
            input_ids = torch.where(is_stopped, torch.full_like(chosen, pad_id), chosen).unsqueeze(1)  # (active, 1)
            positions = next_position
            next_position = next_position + 1
            mask = torch.cat([mask, torch.ones((len(active), 1), dtype=torch.long, device=device)], dim=1)
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
