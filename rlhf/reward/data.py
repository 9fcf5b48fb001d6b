"""Preference data for reward models: reading exports, the exact text format, tokenisation with explicit truncation.

One formatting rule serves training and scoring (so a score reproduces its training-time
value): the prompt is rendered as the model would see it before answering (chat template with
the generation prompt, for chat-style tokenizers), the response follows, and the sequence ends
with the EOS token. The reward is read at that EOS. With SmolLM2 the pad token IS the EOS
token, so padding is never found by token id: the attention mask says where each sequence ends.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from rlhf.export import ExportError, ExportManifest, grouped_split, read_export_rows, read_manifest
from rlhf.generate import ChatMessages, PromptInput, render_prompt


class RewardDataError(ValueError):
    """Preference or scoring data in the wrong schema; the message names the file, row and field."""


# --------------------------------------------------------------------------- reading


def prompt_value(value: Any, where: str) -> PromptInput:
    """A prompt as plain text or a list of {role, content} messages (Parquet / datasets give arrays of dicts)."""
    if isinstance(value, str):
        if not value.strip():
            raise RewardDataError(f"{where}: empty prompt")
        return value
    messages = _messages(value, where)
    if not messages:
        raise RewardDataError(f"{where}: empty prompt")
    return messages


def response_value(value: Any, where: str) -> str:
    """A response as text: a string, or TRL's conversational `[{"role": "assistant", "content": ...}]`."""
    if isinstance(value, str):
        return value
    messages = _messages(value, where)
    assistant = [m["content"] for m in messages if m["role"] == "assistant"]
    if len(assistant) != 1:
        raise RewardDataError(f"{where}: expected one assistant message, found {len(assistant)}")
    return assistant[0]


def _messages(value: Any, where: str) -> ChatMessages:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise RewardDataError(f"{where}: expected text or a list of {{role, content}} messages, got {type(value).__name__}")
    messages = []
    for index, message in enumerate(value):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str) or not isinstance(message.get("content"), str):
            raise RewardDataError(f"{where}[{index}]: expected a {{role, content}} message with text values")
        messages.append({"role": message["role"], "content": message["content"]})
    return messages


def _require_columns(frame: pd.DataFrame, columns: Sequence[str], source: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise RewardDataError(
            f"{source}: missing column(s) {', '.join(repr(c) for c in missing)} (found: {', '.join(map(str, frame.columns)) or 'none'})"
        )


@dataclass
class PreferenceData:
    """Pairs ready for training: `train` and `test` frames with columns prompt, chosen, rejected, margin, agreement."""

    train: pd.DataFrame
    test: pd.DataFrame
    manifest: ExportManifest | None
    source: str
    ties_skipped: int = 0


def read_preference_pairs(path: str | os.PathLike) -> tuple[pd.DataFrame, ExportManifest | None]:
    """Rows of a TRL preference export (any format), validated and normalised, with a `split` column.

    Raises RewardDataError naming the file, row and field on a wrong schema.
    """
    source = str(path)
    try:
        frame = read_export_rows(path)
    except ExportError as exc:
        raise RewardDataError(str(exc)) from None
    _require_columns(frame, ["prompt", "chosen", "rejected"], source)
    if frame.empty:
        raise RewardDataError(f"{source}: no rows")
    prompts, chosen, rejected = [], [], []
    for row_number, (prompt, good, bad) in enumerate(zip(frame["prompt"], frame["chosen"], frame["rejected"]), start=1):
        where = f"{source}: row {row_number}"
        prompts.append(prompt_value(prompt, f"{where}: field 'prompt'"))
        chosen.append(response_value(good, f"{where}: field 'chosen'"))
        rejected.append(response_value(bad, f"{where}: field 'rejected'"))
    pairs = pd.DataFrame({"prompt": prompts, "chosen": chosen, "rejected": rejected, "split": frame["split"].astype(str)})
    pairs["margin"] = _numeric_column(frame, "margin", source)
    pairs["agreement"] = _numeric_column(frame, "agreement", source)
    pairs["tie"] = frame["tie"].fillna(False).astype(bool).to_numpy() if "tie" in frame.columns else False
    if "group_id" in frame.columns:  # rankings: the pairs of one ranking share it (rlhf.reward.listwise)
        pairs["group_id"] = frame["group_id"].to_numpy()
    return pairs, read_manifest(path)


def _numeric_column(frame: pd.DataFrame, column: str, source: str) -> np.ndarray:
    if column not in frame.columns:
        return np.full(len(frame), np.nan)
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() & frame[column].notna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0]) + 1
        raise RewardDataError(f"{source}: row {row}: field {column!r}: expected a number, got {frame[column].iloc[row - 1]!r}")
    return values.to_numpy(dtype=float)


def prompt_key(prompt: PromptInput) -> str:
    """A stable text key for grouping rows by prompt."""
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)


def load_preference_data(path: str | os.PathLike, *, eval_fraction: float, seed: int) -> PreferenceData:
    """Training and held-out pairs from an export: its own test split, or else prompts held out by `grouped_split`.

    Ties (exports made with keep_ties) are skipped and counted: the Bradley–Terry loss has no tie term.
    """
    pairs, manifest = read_preference_pairs(path)
    ties = int(pairs["tie"].sum())
    pairs = pairs[~pairs["tie"]].reset_index(drop=True)
    if pairs.empty:
        raise RewardDataError(f"{path}: no usable preference pairs ({ties} ties skipped)")
    if (pairs["split"] == "test").any():
        is_test = (pairs["split"] == "test").to_numpy()
    else:
        is_test = grouped_split([prompt_key(p) for p in pairs["prompt"]], eval_fraction, seed)
    train, test = pairs[~is_test].reset_index(drop=True), pairs[is_test].reset_index(drop=True)
    if train.empty:
        raise RewardDataError(f"{path}: no training pairs (every pair is in the test split)")
    return PreferenceData(train=train, test=test, manifest=manifest, source=str(path), ties_skipped=ties)


def read_scoring_rows(path: str | os.PathLike) -> pd.DataFrame:
    """Prompt/response rows to score: JSONL/Parquet with `prompt` and `response`, or an export's chosen/rejected.

    Returns columns prompt, response, and `role` (`response`, `chosen` or `rejected`) and `row`
    (the source row number, from 1); an export's pair gives two rows.
    """
    source = str(path)
    try:
        frame = read_export_rows(path)
    except ExportError as exc:
        raise RewardDataError(str(exc)) from None
    if "prompt" not in frame.columns or not ({"response"} <= set(frame.columns) or {"chosen", "rejected"} <= set(frame.columns)):
        raise RewardDataError(
            f"{source}: expected columns 'prompt' and 'response', or 'prompt', 'chosen' and 'rejected' "
            f"(found: {', '.join(map(str, frame.columns)) or 'none'})"
        )
    roles = ["response"] if "response" in frame.columns else ["chosen", "rejected"]
    records = []
    for row_number, row in enumerate(frame.to_dict("records"), start=1):
        where = f"{source}: row {row_number}"
        prompt = prompt_value(row["prompt"], f"{where}: field 'prompt'")
        for role in roles:
            records.append({"row": row_number, "role": role, "prompt": prompt, "response": response_value(row[role], f"{where}: field {role!r}")})
    if not records:
        raise RewardDataError(f"{source}: no rows")
    return pd.DataFrame.from_records(records)


# --------------------------------------------------------------------------- formatting and tokens


def uses_chat_template(tokenizer) -> bool:
    """Chat-style bases (the tokenizer has a chat template) see prompts through it."""
    return bool(getattr(tokenizer, "chat_template", None))


def render_prompt_text(tokenizer, prompt: PromptInput, *, use_chat_template: bool) -> str:
    """The prompt exactly as generation renders it for the policy (`rlhf.generate.render_prompt`):
    the chat template with the generation prompt for chat-style tokenizers; otherwise plain
    text as is, or a chat as "role: content" lines ending "assistant:". The response follows
    directly, as a generated continuation would."""
    return render_prompt(tokenizer, prompt, use_chat_template=use_chat_template)[0]


def end_token(tokenizer) -> tuple[str, int]:
    """The token that closes a scored response, as (text, id): the EOS of a decoder, else the
    separator of an encoder (BERT-style tokenizers have [SEP] and no EOS). The reward is read there."""
    for text, token_id in ((tokenizer.eos_token, tokenizer.eos_token_id), (getattr(tokenizer, "sep_token", None), getattr(tokenizer, "sep_token_id", None))):
        if text is not None and token_id is not None:
            return text, token_id
    raise ValueError("the tokenizer has no EOS or separator token: the reward could not be read at the end of a response")


def format_pair(tokenizer, prompt: PromptInput, response: str, *, use_chat_template: bool | None = None) -> str:
    """The exact text a (prompt, response) pair is scored as: rendered prompt + response + end token (EOS, or SEP for encoders)."""
    use_template = uses_chat_template(tokenizer) if use_chat_template is None else use_chat_template
    return render_prompt_text(tokenizer, prompt, use_chat_template=use_template) + response + end_token(tokenizer)[0]


@dataclass(frozen=True)
class Truncation:
    """What `fit_to_length` cut from one sequence."""

    prompt_tokens: int = 0
    response_tokens: int = 0


def fit_to_length(prompt_ids: Sequence[int], response_ids: Sequence[int], max_length: int) -> tuple[list[int], Truncation]:
    """Concatenate prompt and response ids within `max_length`, truncating explicitly.

    The prompt loses tokens from the left first (its end, next to the response, matters most).
    A response longer than `max_length - min(len(prompt), max_length // 4)` is cut on the right
    but keeps its final token (the EOS the score is read at). Returns the ids and what was cut.
    """
    prompt_ids, response_ids = list(prompt_ids), list(response_ids)
    if len(prompt_ids) + len(response_ids) <= max_length:
        return prompt_ids + response_ids, Truncation()
    response_cut = 0
    room_for_response = max_length - min(len(prompt_ids), max_length // 4)
    if len(response_ids) > room_for_response:
        response_cut = len(response_ids) - room_for_response
        response_ids = response_ids[: room_for_response - 1] + response_ids[-1:]
    keep = max_length - len(response_ids)
    prompt_cut = len(prompt_ids) - keep
    return prompt_ids[prompt_cut:] + response_ids, Truncation(prompt_tokens=prompt_cut, response_tokens=response_cut)


@dataclass
class EncodedBatch:
    """Token ids of (prompt, response) sequences, and truncation counts."""

    ids: list[list[int]]
    prompts_truncated: int
    responses_truncated: int
    cuts: list[Truncation] = field(default_factory=list)
    """Per sequence, what was cut (SFT masks the kept end token of a cut response: it is no real end)."""
    response_lengths: list[int] = field(default_factory=list)
    """Per sequence, how many of its final tokens are the response (end token included)."""


def encode_pairs(
    tokenizer, prompts: Sequence[PromptInput], responses: Sequence[str], *, max_length: int, use_chat_template: bool
) -> EncodedBatch:
    """Token ids for each (prompt, response): rendered prompt ids + response ids + end token, fitted to `max_length`.

    Prompt and response are tokenised separately (then joined), so the response's tokens are
    the same whatever the prompt, and a policy's generated tokens line up with training's.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    eos = end_token(tokenizer)[1]
    prompt_texts = [render_prompt_text(tokenizer, p, use_chat_template=use_chat_template) for p in prompts]
    # A chat template writes its own special tokens; plain text gets the tokenizer's usual ones (e.g. BOS).
    prompt_ids = tokenizer(prompt_texts, add_special_tokens=not use_chat_template)["input_ids"] if prompt_texts else []
    response_ids = tokenizer(list(responses), add_special_tokens=False)["input_ids"] if responses else []
    encoded, prompts_cut, responses_cut, cuts, lengths = [], 0, 0, [], []
    for p_ids, r_ids in zip(prompt_ids, response_ids):
        ids, cut = fit_to_length(p_ids, list(r_ids) + [eos], max_length)
        encoded.append(ids)
        cuts.append(cut)
        lengths.append(len(r_ids) + 1 - cut.response_tokens)
        prompts_cut += cut.prompt_tokens > 0
        responses_cut += cut.response_tokens > 0
    return EncodedBatch(encoded, prompts_cut, responses_cut, cuts, lengths)


def add_off_prompt_pairs(train: pd.DataFrame, share: float, seed: int) -> pd.DataFrame:
    """`train` plus about share × len(train) pairs that teach the model to read the prompt, in mirrored twos.

    Take two training pairs from different prompts, P with chosen reply x and Q with chosen reply y, and add
    (P: x over y) and (Q: y over x). Both replies are ones annotators preferred, and each is once the winner
    and once the loser, so anything a reply has on its own (finishing its sentences, its length, looping)
    gets no net push: the only lesson is that a reply should answer *its* prompt. Preferences within one
    prompt never force that lesson (both replies answer it), which is why a cross-encoder can memorise the
    training prompts' winners and miss how well a new prompt's replies address it.

    Why mirrored (e2e simulation, seed 1): one-sided pairs (P: x over y) taught topicality (held-out pairs
    decided by the prompt's key terms 0.54 → 0.72-0.78) but, since y is as often the better-finished reply
    as x, told the model finishing matters less (pairs decided by it 0.95 → 0.79-0.83). Margin 0 (plain
    Bradley–Terry), agreement 1.
    """
    count = int(round(share * len(train) / 2))
    if count <= 0:
        return train
    keys = np.array([prompt_key(p) for p in train["prompt"]])
    if len(set(keys)) < 2:
        raise RewardDataError(f"off-prompt pairs need training pairs from at least two prompts (found {len(set(keys))})")
    rng = np.random.default_rng(seed)
    anchors = rng.choice(len(train), size=count, replace=count > len(train))
    donors = rng.integers(0, len(train), size=count)
    for _ in range(100):  # redraw donors that share the anchor's prompt; 2+ prompts make this end quickly
        same = keys[donors] == keys[anchors]
        if not same.any():
            break
        donors[same] = rng.integers(0, len(train), size=int(same.sum()))
    keep = keys[donors] != keys[anchors]
    anchors, donors = anchors[keep], donors[keep]
    # Interleaved: pair 2k is (P: x over y), pair 2k + 1 its mirror (Q: y over x).
    firsts, seconds = np.empty(2 * len(anchors), dtype=int), np.empty(2 * len(anchors), dtype=int)
    firsts[0::2], firsts[1::2] = anchors, donors
    seconds[0::2], seconds[1::2] = donors, anchors
    added = pd.DataFrame({
        "prompt": train["prompt"].iloc[firsts].tolist(),
        "chosen": train["chosen"].iloc[firsts].tolist(),
        "rejected": train["chosen"].iloc[seconds].tolist(),
        "split": "train",
        "margin": 0.0,
        "agreement": 1.0,
        "tie": False,
    })
    return pd.concat([train, added], ignore_index=True)
