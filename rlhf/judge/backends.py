"""The judges: a local causal LM (batched), an OpenAI-compatible endpoint, or a reward model.

A text judge (`LocalJudge`, `EndpointJudge`) turns conversations into `ChatReply`s; the runner
builds the prompts and parses the replies. A score judge (`RewardJudge`) scores each response
and compares the scores, so it needs no prompt and no parsing (it is order-blind by build: both
orders of a pair, or of a ranking group, are the same scores). Each has `identity()`: what a judgment records as the
judge's lineage (never a credential).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from rlhf.judge.client import ChatClient, ChatReply


@dataclass
class LocalJudge:
    """A Transformers causal LM in this process: greedy decoding, `batch_size` conversations at a time.

    With `shared_prefix` (the default) the prompts' common prefix (chat header, instructions,
    guidelines) is prefilled once and reused across batches (`rlhf.judge.shared_prefix`); off, each
    batch goes through `model.generate` with its full prompts. Both give the same greedy tokens.
    """

    model_ref: str
    batch_size: int = 16
    device: Optional[str] = None
    load_in_4bit: bool = False
    shared_prefix: bool = True

    def __post_init__(self) -> None:
        from rlhf.generate import load_model_for_generation
        from rlhf.judge.shared_prefix import PrefixCache
        from rlhf.models import resolve_model

        self.source = resolve_model(self.model_ref)
        self.model, self.tokenizer, self.display_name = load_model_for_generation(self.source, load_in_4bit=self.load_in_4bit, device=self.device)
        self.model.eval()
        self.prefix_cache = PrefixCache()

    def identity(self) -> dict[str, Any]:
        return {
            "backend": "local", "model": self.display_name, "model_ref": str(self.model_ref), "resolved": self.source.path,
            "kind": self.source.kind, "base_model": self.source.adapter_of, "load_in_4bit": self.load_in_4bit,
            "decoding": "greedy", "device": str(next(self.model.parameters()).device),
        }

    def complete_many(self, requests: Sequence[Any], *, max_tokens: int, reporter=None) -> list[ChatReply]:
        """Replies to `requests` (anything with `.messages`), in order."""
        from rlhf.generate import generate_responses

        started = time.perf_counter()
        if self.shared_prefix:
            from rlhf.judge.shared_prefix import greedy_responses

            outputs = greedy_responses(self.model, self.tokenizer, [list(r.messages) for r in requests], max_new_tokens=max_tokens,
                                       batch_size=self.batch_size, prefix_cache=self.prefix_cache)
            seconds = (time.perf_counter() - started) / max(len(requests), 1)
            return [ChatReply(text=o.text, finish_reason="stop" if o.finished else "length", seconds=seconds) for o in outputs]
        # One sample per conversation, temperature 0 (greedy); sorted by length inside, so a batch pads little.
        outputs = generate_responses(
            self.model, self.tokenizer, [list(r.messages) for r in requests], n=1, temperatures=(0.0,), max_new_tokens=max_tokens,
            seed=0, batch_size=self.batch_size,
        )
        seconds = (time.perf_counter() - started) / max(len(requests), 1)
        return [ChatReply(text=o[0].text, finish_reason="stop" if o[0].finished else "length", seconds=seconds) for o in outputs]


@dataclass
class EndpointJudge:
    """A model behind an OpenAI-compatible chat-completions server (greedy: temperature 0)."""

    client: ChatClient

    def identity(self) -> dict[str, Any]:
        return {**self.client.identity(), "decoding": "temperature 0"}

    def complete_many(self, requests: Sequence[Any], *, max_tokens: int, reporter=None) -> list[ChatReply]:
        """Replies to `requests` (anything with `.messages`), in order."""
        return self.client.complete_many([list(r.messages) for r in requests], max_tokens=max_tokens, temperature=0.0, seed=0)


@dataclass
class RewardJudge:
    """A reward model trained here as a judge of pairs (the higher-scored response wins; within `tie_margin` a tie) and of
    ranking groups (replies by score, best first; within `tie_margin` of a group's best, tied with it)."""

    directory: str
    tie_margin: float = 0.1
    """Normalised score difference (training responses have std 1) below which two replies tie."""
    batch_size: int = 16
    device: Optional[str] = None

    def __post_init__(self) -> None:
        from rlhf.reward import RewardModel

        self.reward = RewardModel.load(self.directory, device=self.device)

    def identity(self) -> dict[str, Any]:
        from rlhf.hashing import file_sha256

        weights = Path(self.directory) / "adapter_model.safetensors"
        return {
            "backend": "reward", "model": str(self.directory), "base_model": self.reward.base_model_path,
            "weights_sha256": file_sha256(weights) if weights.is_file() else None, "tie_margin": self.tie_margin,
        }

    def scores(self, prompts: Sequence[Any], responses: Sequence[str]) -> list[float]:
        return [float(x) for x in self.reward.score(list(prompts), list(responses), batch_size=self.batch_size)]
