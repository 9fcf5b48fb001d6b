"""Sampling responses from a causal LM: prompts file → batched generation → importer-shaped JSONL.

Three layers, so each caller takes only what it needs:

1. `load_prompts(path)` parses a prompts file (JSONL or plain text) into `PromptSpec`s, naming
   file, line and field on bad input.
2. `generate_responses(model, tokenizer, prompts, ...)` samples `n` responses per prompt from
   an already-loaded model (PPO and the simulator reuse it); no loading, no files, no database.
3. `generate_file(...)` loads a model, samples, and writes records in the importer's shape (a)
   atomically; `generate_round(...)` samples a trained policy on a project's prompts and
   imports the outputs as a new round paired against the previous one (closing the loop).

Determinism contract: with a `seed`, the output is a pure function of (model weights, prompts,
sampling config including `batch_size`, device, torch/transformers versions). Each batch
reseeds torch from `(seed, batch index)` inside a forked RNG, so the caller's global RNG
state is left untouched and a batch's samples do not depend on what ran before it. Changing
`batch_size` (or the prompt list) changes which rows share a batch and hence the random
stream; greedy decoding (temperature 0) does not depend on batching, up to floating-point
differences in padded attention. `seed=None` samples from the ambient torch RNG instead.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import torch

from rlhf.progress import Reporter, check_stop

if TYPE_CHECKING:  # the database side is imported only by generate_round
    from sqlalchemy.engine import Engine

ChatMessages = list[dict[str, str]]
PromptInput = Union[str, ChatMessages]
"""A prompt: plain text, or a chat as [{"role": ..., "content": ...}, ...] ending with a user turn."""

CHAT_ROLES = ("system", "user", "assistant")
PROMPT_FIELDS = ("prompt", "category", "id", "meta")


class PromptsFileError(ValueError):
    """A prompts file that cannot be used; the message names the file, line and field."""


# --------------------------------------------------------------------------- prompts files


@dataclass(frozen=True)
class PromptSpec:
    """One prompt read from a prompts file."""

    prompt: PromptInput
    """Plain text, or a list of chat messages."""
    category: str | None = None
    id: str | None = None
    """Stable identifier chosen by whoever wrote the file (kept through to the records)."""
    meta: dict[str, Any] | None = None
    line: int = 0
    """1-based line in the source file (0 when not read from a file)."""


def validate_messages(messages: Any, where: str) -> ChatMessages:
    """Check a chat message list; return it as plain dicts. `where` prefixes error messages.

    Rules: a non-empty list of {role, content} objects, role in system/user/assistant,
    content a non-empty string, and the last message not from the assistant (generation
    starts a new assistant turn).
    """
    if not isinstance(messages, list) or not messages:
        raise PromptsFileError(f"{where}: field 'prompt': a chat prompt must be a non-empty list of messages")
    checked: ChatMessages = []
    for index, message in enumerate(messages):
        place = f"{where}: field 'prompt[{index}]"
        if not isinstance(message, dict):
            raise PromptsFileError(f"{place}': expected an object with 'role' and 'content'")
        role, content = message.get("role"), message.get("content")
        if role not in CHAT_ROLES:
            raise PromptsFileError(f"{place}.role': expected one of {', '.join(CHAT_ROLES)}, got {role!r}")
        if not isinstance(content, str) or not content.strip():
            raise PromptsFileError(f"{place}.content': expected a non-empty string")
        checked.append({"role": role, "content": content})
    if checked[-1]["role"] == "assistant":
        raise PromptsFileError(f"{where}: field 'prompt': the last message must not be from the assistant")
    return checked


def parse_prompt_record(record: Any, where: str, line: int = 0) -> PromptSpec:
    """Validate one decoded JSON value from a prompts file. `where` is "file:line" for errors."""
    if not isinstance(record, dict):
        raise PromptsFileError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if "prompt" not in record:
        raise PromptsFileError(f"{where}: field 'prompt' is missing")
    prompt = record["prompt"]
    if isinstance(prompt, str):
        if not prompt.strip():
            raise PromptsFileError(f"{where}: field 'prompt': empty prompt")
    elif isinstance(prompt, list):
        prompt = validate_messages(prompt, where)
    else:
        raise PromptsFileError(f"{where}: field 'prompt': expected a string or a list of messages, got {type(prompt).__name__}")
    category = record.get("category")
    if category is not None and not isinstance(category, str):
        raise PromptsFileError(f"{where}: field 'category': expected a string, got {type(category).__name__}")
    prompt_id = record.get("id")
    if prompt_id is not None:
        if isinstance(prompt_id, bool) or not isinstance(prompt_id, (str, int)):
            raise PromptsFileError(f"{where}: field 'id': expected a string or an integer, got {type(prompt_id).__name__}")
        prompt_id = str(prompt_id)
    meta = record.get("meta")
    if meta is not None and not isinstance(meta, dict):
        raise PromptsFileError(f"{where}: field 'meta': expected an object, got {type(meta).__name__}")
    return PromptSpec(prompt=prompt, category=category or None, id=prompt_id, meta=meta, line=line)


def parse_prompts_text(text: str, source: str, *, plain: bool) -> list[PromptSpec]:
    """Parse a prompts file's text. `plain`: one prompt per non-blank line; else JSONL.

    Raises PromptsFileError naming `source`, the line and the field; duplicate ids are errors.
    """
    specs: list[PromptSpec] = []
    seen_ids: dict[str, int] = {}
    for line_no, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"{source}:{line_no}"
        if plain:
            specs.append(PromptSpec(prompt=raw.strip(), line=line_no))
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise PromptsFileError(f"{where}: invalid JSON: {exc.msg} (column {exc.colno})") from None
        spec = parse_prompt_record(record, where, line_no)
        if spec.id is not None:
            if spec.id in seen_ids:
                raise PromptsFileError(f"{where}: field 'id': duplicate id {spec.id!r} (first on line {seen_ids[spec.id]})")
            seen_ids[spec.id] = line_no
        specs.append(spec)
    if not specs:
        raise PromptsFileError(f"{source}: no prompts in file")
    return specs


def load_prompts(path: str | os.PathLike) -> list[PromptSpec]:
    """Read a prompts file: `.txt` is one prompt per line; anything else is JSONL with fields
    `prompt` (string or message list), optional `category`, `id`, `meta`.
    """
    path = Path(path)
    if not path.is_file():
        raise PromptsFileError(f"{path}: no such file")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line_no = data[: exc.start].count(b"\n") + 1
        raise PromptsFileError(f"{path}:{line_no}: not valid UTF-8") from None
    return parse_prompts_text(text, str(path), plain=path.suffix.lower() == ".txt")


# --------------------------------------------------------------------------- sampling config


@dataclass(frozen=True)
class SamplingConfig:
    """How responses are sampled; every field is recorded with each response."""

    n: int = 2
    """Responses per prompt."""
    temperatures: tuple[float, ...] = (0.7,)
    """Sample i of a prompt uses temperatures[i % len]; 0 means greedy decoding."""
    top_p: float = 0.95
    """Nucleus sampling mass (1.0 = off); like top_k, used only when the temperature is above 0."""
    top_k: int = 0
    """Keep only the k most likely tokens (0 = off); set explicitly so a model's own default cannot leak in."""
    max_new_tokens: int = 128
    """Generated tokens per response at most (a response that hits it has finished=False)."""
    seed: int | None = 0
    """Base seed; each batch reseeds from (seed, batch index). None: the ambient torch RNG."""
    batch_size: int = 8
    """Rows (prompt × sample) generated together."""

    def __post_init__(self) -> None:
        problems = []
        if self.n < 1:
            problems.append(f"n must be at least 1, got {self.n}")
        if not self.temperatures:
            problems.append("temperatures must not be empty")
        for t in self.temperatures:
            if not math.isfinite(t) or t < 0:
                problems.append(f"temperature must be a finite number >= 0, got {t}")
        if not (math.isfinite(self.top_p) and 0 < self.top_p <= 1):
            problems.append(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            problems.append(f"top_k must be >= 0, got {self.top_k}")
        if self.max_new_tokens < 1:
            problems.append(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.batch_size < 1:
            problems.append(f"batch_size must be at least 1, got {self.batch_size}")
        if problems:
            raise ValueError("; ".join(problems))

    def temperature_for(self, sample_index: int) -> float:
        return self.temperatures[sample_index % len(self.temperatures)]

    def as_dict(self) -> dict[str, Any]:
        """The fields as plain JSON values; also the sampling keywords of `generate_responses`."""
        return {
            "n": self.n,
            "temperatures": list(self.temperatures),
            "top_p": self.top_p,
            "top_k": self.top_k,
            "max_new_tokens": self.max_new_tokens,
            "seed": self.seed,
            "batch_size": self.batch_size,
        }


def parse_temperatures(text: str) -> tuple[float, ...]:
    """'0.3,0.8,1.2' → (0.3, 0.8, 1.2); ValueError naming the bad item."""
    values = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            value = float(item)
        except ValueError:
            raise ValueError(f"temperatures: {item!r} is not a number") from None
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"temperatures: {item!r} must be a finite number >= 0")
        values.append(value)
    if not values:
        raise ValueError("temperatures: give at least one value, e.g. 0.3,0.8,1.2")
    return tuple(values)


# --------------------------------------------------------------------------- pure helpers


@dataclass(frozen=True)
class GeneratedResponse:
    """One sampled response and how it was produced."""

    text: str
    """Decoded without special tokens, EOS and padding removed, surrounding whitespace stripped."""
    sample_index: int
    """Which of the prompt's n samples this is (0-based)."""
    temperature: float
    top_p: float
    top_k: int
    max_new_tokens: int
    seed: int | None
    """The run's base seed (the batch's own seed is derived from it)."""
    finished: bool
    """True when the model emitted EOS; False when it was cut at max_new_tokens."""
    num_tokens: int
    """Generated tokens, counting the EOS when finished (padding excluded)."""
    token_ids: tuple[int, ...] = field(default=(), repr=False)
    """The generated token ids, including the EOS when finished."""
    generated_at: str = ""
    """ISO-8601 UTC time the batch finished."""


@dataclass(frozen=True)
class GenerationRow:
    """One row of the generation plan: sample `sample_index` of prompt `prompt_index`."""

    prompt_index: int
    sample_index: int
    temperature: float


def plan_batches(prompt_lengths: Sequence[int], config: SamplingConfig) -> list[list[GenerationRow]]:
    """Split the n × len(prompts) rows into batches that share one temperature.

    A batch needs one temperature (generate() takes a scalar). Within a temperature, rows are
    ordered by prompt length, longest first, so batches hold similar lengths (less padding)
    and the slowest batch runs first. The plan depends only on its inputs (determinism).
    """
    by_temperature: dict[float, list[GenerationRow]] = {}
    for prompt_index in range(len(prompt_lengths)):
        for sample_index in range(config.n):
            t = config.temperature_for(sample_index)
            by_temperature.setdefault(t, []).append(GenerationRow(prompt_index, sample_index, t))
    batches: list[list[GenerationRow]] = []
    for t in sorted(by_temperature):
        rows = sorted(by_temperature[t], key=lambda r: (-prompt_lengths[r.prompt_index], r.prompt_index, r.sample_index))
        batches.extend(rows[i : i + config.batch_size] for i in range(0, len(rows), config.batch_size))
    return batches


def batch_seed(seed: int, batch_index: int) -> int:
    """A 63-bit seed for one batch, derived from the run's seed (distinct seeds never share streams)."""
    digest = hashlib.sha256(f"rlhf-generate:{seed}:{batch_index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token id lists into (input_ids, attention_mask), both (B, T_max) long tensors.

    Left padding keeps every row's last real token in the last column, where generation
    continues; the mask is 0 on padding so it is neither attended to nor positioned.
    """
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, tokens in enumerate(sequences):
        if tokens:
            input_ids[row, width - len(tokens) :] = torch.tensor(list(tokens), dtype=torch.long)
            attention_mask[row, width - len(tokens) :] = 1
    return input_ids, attention_mask


def truncate_at_stop(tokens: Sequence[int], stop_ids: set[int] | frozenset[int]) -> tuple[list[int], bool]:
    """Cut generated tokens at the first stop (EOS) token, keeping it.

    Returns (tokens up to and including the first stop token, finished). When the pad token
    is the EOS (SmolLM2), everything after the first EOS is padding and is dropped here.
    """
    for position, token in enumerate(tokens):
        if token in stop_ids:
            return list(tokens[: position + 1]), True
    return list(tokens), False


def render_prompt(tokenizer, prompt: PromptInput, *, use_chat_template: bool | None = None) -> tuple[str, bool]:
    """The text fed to the model, and whether the chat template produced it.

    `use_chat_template=None` applies the template when the tokenizer has one. Without a
    template, a plain prompt is used as is and a chat is rendered as "role: content" lines
    ending with "assistant:" (a base model's best guess at a dialogue).
    """
    has_template = bool(getattr(tokenizer, "chat_template", None))
    use_template = has_template if use_chat_template is None else use_chat_template
    if use_template and not has_template:
        raise ValueError("the tokenizer has no chat template")
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    if use_template:
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False), True
    if isinstance(prompt, str):
        return prompt, False
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:", False


def encode_prompt(tokenizer, prompt: PromptInput, *, use_chat_template: bool | None = None) -> list[int]:
    """The token ids fed to the model for `prompt` (templated text already carries its special tokens)."""
    text, templated = render_prompt(tokenizer, prompt, use_chat_template=use_chat_template)
    return list(tokenizer(text, add_special_tokens=not templated)["input_ids"])


def stop_token_ids(model, tokenizer) -> set[int]:
    """EOS ids from the model's generation config and the tokenizer (some models have several)."""
    ids: set[int] = set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(int(i) for i in configured)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    if not ids:
        raise ValueError("the model and tokenizer define no EOS token: generation could never finish")
    return ids


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- the sampler


def generate_responses(
    model,
    tokenizer,
    prompts: Sequence[PromptInput],
    *,
    n: int = 2,
    temperatures: Sequence[float] = (0.7,),
    top_p: float = 0.95,
    top_k: int = 0,
    max_new_tokens: int = 128,
    seed: int | None = 0,
    batch_size: int = 8,
    use_chat_template: bool | None = None,
    reporter: Reporter | None = None,
) -> list[list[GeneratedResponse]]:
    """Sample `n` responses for each prompt from an already-loaded causal LM.

    Returns one list per prompt (same order), each holding its n responses ordered by
    sample_index. Sample i uses temperatures[i % len(temperatures)]. The chat template is
    applied with add_generation_prompt=True when the tokenizer has one (see `render_prompt`);
    rows are left-padded and generated `batch_size` at a time; generation stops at EOS.
    Reports progress in rows (prompt × sample) and raises `Cancelled` between batches when the
    reporter asks to stop. See the module docstring for the determinism guarantee.
    """
    config = SamplingConfig(
        n=n, temperatures=tuple(float(t) for t in temperatures), top_p=top_p, top_k=top_k,
        max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size,
    )
    if not prompts:
        return []
    # 1. Render and tokenise every prompt once (templated text already carries its specials).
    encoded = [encode_prompt(tokenizer, prompt, use_chat_template=use_chat_template) for prompt in prompts]
    stops = stop_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(stops)
    device = next(model.parameters()).device

    # 2. Plan batches of one temperature each, then generate them in order.
    batches = plan_batches([len(e) for e in encoded], config)
    total_rows = len(prompts) * config.n
    results: list[list[GeneratedResponse | None]] = [[None] * config.n for _ in prompts]
    done_rows = 0
    if reporter is not None:
        reporter.progress(0, total_rows, "generating")
    for batch_index, rows in enumerate(batches):
        check_stop(reporter)
        temperature = rows[0].temperature
        input_ids, attention_mask = left_pad([encoded[r.prompt_index] for r in rows], pad_id)
        sequences = _generate_batch(
            model, input_ids.to(device), attention_mask.to(device),
            temperature=temperature, config=config, stops=stops, pad_id=pad_id,
            seed=None if config.seed is None else batch_seed(config.seed, batch_index),
        )
        # 3. Cut each row at its first EOS and decode without special tokens.
        generated = sequences[:, input_ids.shape[1] :].tolist()  # (B, T_new)
        stamp = _now_iso()
        for row, tokens in zip(rows, generated):
            kept, finished = truncate_at_stop(tokens, stops)
            text_tokens = kept[:-1] if finished else kept
            results[row.prompt_index][row.sample_index] = GeneratedResponse(
                text=tokenizer.decode(text_tokens, skip_special_tokens=True).strip(),
                sample_index=row.sample_index,
                temperature=temperature,
                top_p=config.top_p,
                top_k=config.top_k,
                max_new_tokens=config.max_new_tokens,
                seed=config.seed,
                finished=finished,
                num_tokens=len(kept),
                token_ids=tuple(kept),
                generated_at=stamp,
            )
        done_rows += len(rows)
        if reporter is not None:
            reporter.progress(done_rows, total_rows, f"T={temperature:g}")
    return [[r for r in per_prompt if r is not None] for per_prompt in results]


def _generate_batch(model, input_ids, attention_mask, *, temperature, config, stops, pad_id, seed):
    """model.generate for one batch → (B, T_prompt + T_new) token ids, RNG isolated and seeded."""
    sampling = temperature > 0
    kwargs: dict[str, Any] = {
        "max_new_tokens": config.max_new_tokens,
        "do_sample": sampling,
        "eos_token_id": sorted(stops),
        "pad_token_id": pad_id,
    }
    if sampling:
        kwargs.update(temperature=temperature, top_p=config.top_p, top_k=config.top_k)
    else:
        # Greedy: clear any sampling defaults the model's generation config may carry.
        kwargs.update(temperature=None, top_p=None, top_k=None)
    if seed is None:  # the caller's RNG stream drives sampling (and advances)
        with torch.inference_mode():
            return model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    devices = [input_ids.device] if input_ids.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.inference_mode():
        torch.manual_seed(seed)
        return model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)


# --------------------------------------------------------------------------- records and files


def response_record(response: GeneratedResponse, model_name: str, extra_meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """One response in the importer's shape (a): {"text", "model", "meta": provenance}."""
    from rlhf import __version__

    meta = {
        "temperature": response.temperature,
        "top_p": response.top_p,
        "top_k": response.top_k,
        "max_new_tokens": response.max_new_tokens,
        "seed": response.seed,
        "sample_index": response.sample_index,
        "finished": response.finished,
        "num_tokens": response.num_tokens,
        "generated_at": response.generated_at,
        "rlhf_studio_version": __version__,
    }
    meta.update(extra_meta or {})
    return {"text": response.text, "model": model_name, "meta": meta}


def build_records(
    specs: Sequence[PromptSpec],
    responses: Sequence[Sequence[GeneratedResponse]],
    model_name: str,
    extra_meta: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Importer shape (a): one {"prompt", "category", "id"?, "meta"?, "responses": [...]} per prompt.

    Empty responses (the model emitted EOS at once, or only whitespace) are left out: the
    importer refuses empty texts, and a file it refuses would be no use.
    """
    records = []
    for spec, sampled in zip(specs, responses, strict=True):
        record: dict[str, Any] = {"prompt": spec.prompt, "category": spec.category}
        if spec.id is not None:
            record["id"] = spec.id
        if spec.meta:
            record["meta"] = spec.meta
        record["responses"] = [response_record(r, model_name, extra_meta) for r in sampled if r.text]
        records.append(record)
    return records


def _current_umask() -> int:
    # os.umask can only be read by setting it; set it straight back.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_jsonl_atomic(path: str | os.PathLike, records: Sequence[dict[str, Any]]) -> Path:
    """Write records as JSONL to a temp file beside `path`, fsync, then rename over it.

    Readers see the old file or the complete new one, never a partial one; on any error the
    temp file is removed and `path` is left as it was. The file gets the permissions a plain
    `open()` would give it (mkstemp's are owner-only).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o666 & ~_current_umask())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


@dataclass(frozen=True)
class GenerationFileSummary:
    """What `generate_file` wrote."""

    out_path: str
    model_name: str
    prompts: int
    responses: int
    finished: int
    """Responses that ended with EOS (the rest hit max_new_tokens)."""
    empty_skipped: int
    """Empty responses left out of the file (the importer refuses empty texts)."""
    seconds: float

    def __str__(self) -> str:
        return (
            f"wrote {self.responses - self.empty_skipped} responses to {self.prompts} prompts from {self.model_name} "
            f"to {self.out_path} ({self.finished} ended with EOS, {self.empty_skipped} empty skipped) in {self.seconds:.1f}s"
        )


def load_model_for_generation(model, *, load_in_4bit: bool = False, device=None):
    """(model, tokenizer, display name) for a `ModelSource` or anything `rlhf.models.resolve_model` accepts."""
    from rlhf.models import ModelSource, load_causal_lm, load_tokenizer, resolve_model

    source = model if isinstance(model, ModelSource) else resolve_model(model)
    tokenizer = load_tokenizer(source)
    lm = load_causal_lm(source, load_in_4bit=load_in_4bit, device=device)
    return lm, tokenizer, source.display_name or str(model)


def generate_file(
    model: str | os.PathLike,
    prompts_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    config: SamplingConfig = SamplingConfig(),
    load_in_4bit: bool = False,
    model_name: str | None = None,
    use_chat_template: bool | None = None,
    reporter: Reporter | None = None,
    endpoint_client=None,
) -> GenerationFileSummary:
    """Sample `config.n` responses per prompt of `prompts_path` and write importer-shaped JSONL.

    The prompts file is validated before the model is loaded (PromptsFileError). `model_name`
    (default: the resolved model's display name) is what each response's "model" says. The
    output appears only once complete (temp file, then rename). `endpoint_client` (a
    `rlhf.judge.client.ChatClient`) samples from an OpenAI-compatible server instead of loading `model`.
    """
    specs = load_prompts(prompts_path)
    started = time.perf_counter()
    if endpoint_client is not None:
        from rlhf.judge.sampling import endpoint_responses

        name = model_name or endpoint_client.model
        responses = endpoint_responses(endpoint_client, [s.prompt for s in specs], config, reporter)
        extra = {"model_ref": endpoint_client.model, "endpoint": endpoint_client.where}
    else:
        lm, tokenizer, display_name = load_model_for_generation(model, load_in_4bit=load_in_4bit)
        name = model_name or display_name
        responses = generate_responses(
            lm, tokenizer, [s.prompt for s in specs], **config.as_dict(), use_chat_template=use_chat_template, reporter=reporter
        )
        extra = {"model_ref": str(model), "load_in_4bit": load_in_4bit}
    records = build_records(specs, responses, name, extra)
    write_jsonl_atomic(out_path, records)
    flat = [r for per_prompt in responses for r in per_prompt]
    return GenerationFileSummary(
        out_path=str(out_path), model_name=name, prompts=len(specs), responses=len(flat),
        finished=sum(r.finished for r in flat), empty_skipped=sum(not r.text for r in flat),
        seconds=time.perf_counter() - started,
    )


# --------------------------------------------------------------------------- closing the loop


class GenerationRoundError(ValueError):
    """A round that cannot be generated (unknown project, no previous round, bad lineage file...)."""


POLICY_LINEAGE_FILE = "lineage.json"
"""Written by PPO beside the adapter: export hash, reward model, base model, config."""


@dataclass(frozen=True)
class RoundPrompt:
    """A project prompt as the sampler needs it: the chat when there is one, else the text."""

    prompt_id: int
    prompt: PromptInput
    category: str | None


@dataclass(frozen=True)
class GenerationRoundSummary:
    """What `generate_round` did."""

    project: str
    round: int
    pair_against_round: int
    policy: str
    model_name: str
    prompts: int
    responses: int
    """Responses sampled (including empty ones, which are not imported)."""
    finished: int
    empty_skipped: int
    """Empty responses left out: the importer refuses empty texts."""
    responses_added: int
    pairwise_tasks_added: int
    rating_tasks_added: int
    artifact_id: int
    import_id: int | None
    seconds: float

    def __str__(self) -> str:
        return (
            f"round {self.round} of project {self.project!r} from {self.policy}: {self.responses} responses to "
            f"{self.prompts} prompts ({self.finished} ended with EOS, {self.empty_skipped} empty skipped); "
            f"imported {self.responses_added} responses as {self.model_name!r}, {self.pairwise_tasks_added} pairwise "
            f"tasks against round {self.pair_against_round}, {self.rating_tasks_added} rating tasks; "
            f"artifact {self.artifact_id}; {self.seconds:.1f}s"
        )


def read_policy_lineage(policy_dir: Path) -> dict[str, Any] | None:
    """The policy's own `lineage.json` (None when absent); GenerationRoundError when unreadable."""
    path = policy_dir / POLICY_LINEAGE_FILE
    if not path.is_file():
        return None
    try:
        lineage = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GenerationRoundError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(lineage, dict):
        raise GenerationRoundError(f"{path}: expected a JSON object, got {type(lineage).__name__}")
    return lineage


def _policy_weights_hash(policy_dir: Path) -> str | None:
    """SHA-256 of the policy's weights file (adapter or full checkpoint), None when not one file."""
    from rlhf.hashing import file_sha256

    for name in ("adapter_model.safetensors", "model.safetensors"):
        if (policy_dir / name).is_file():
            return file_sha256(policy_dir / name)
    return None


def _round_inputs(engine: Engine, project: str, round_number: int, limit: int | None) -> tuple[Any, list[RoundPrompt]]:
    """(project row, its prompts in id order) after checking there is a round N-1 to pair against."""
    from sqlalchemy import func
    from sqlmodel import select

    from rlhf.db import session_scope
    from rlhf.projects import find_project
    from rlhf.schema import Prompt, Response

    with session_scope(engine) as session:
        row = find_project(session, project)
        if row is None:
            raise GenerationRoundError(f"no project {project!r}")
        query = select(Prompt).where(Prompt.project_id == row.id).order_by(Prompt.id)
        if limit is not None:
            query = query.limit(limit)
        try:
            prompts = [
                RoundPrompt(p.id, validate_messages(p.messages, f"prompt {p.id}") if p.messages else p.text, p.category)
                for p in session.exec(query)
            ]
        except PromptsFileError as exc:  # a stored chat the sampler cannot continue
            raise GenerationRoundError(f"project {row.name!r}: {exc}") from None
        previous = session.exec(
            select(func.count(Response.id))
            .join(Prompt, Prompt.id == Response.prompt_id)
            .where(Prompt.project_id == row.id, Response.round == round_number - 1)
        ).one()
    if not prompts:
        raise GenerationRoundError(f"project {row.name!r} has no prompts to sample")
    if previous == 0:
        raise GenerationRoundError(
            f"project {row.name!r} has no responses in round {round_number - 1} to pair round {round_number} against"
        )
    return row, prompts


def _policy_artifact_ids(engine: Engine, policy_dir: Path) -> list[int]:
    """Recorded policy artifacts at this path (as given or resolved): the round's parents."""
    from sqlmodel import select

    from rlhf.db import session_scope
    from rlhf.schema import Artifact

    paths = {str(policy_dir), str(policy_dir.resolve())}
    with session_scope(engine) as session:
        rows = session.exec(select(Artifact.id).where(Artifact.kind == "policy", Artifact.path.in_(paths)).order_by(Artifact.id))
        return [int(i) for i in rows]


def generate_round(
    engine: Engine,
    actor,
    *,
    policy: str | os.PathLike,
    project: str,
    round: int,
    n: int = 1,
    temperatures: Sequence[float] = (0.7,),
    top_p: float = 0.95,
    top_k: int = 0,
    max_new_tokens: int = 128,
    seed: int | None = 0,
    batch_size: int = 8,
    load_in_4bit: bool = False,
    model_name: str | None = None,
    use_chat_template: bool | None = None,
    max_pairs_per_prompt: int = 4,
    make_rating_tasks: bool = False,
    limit: int | None = None,
    out: str | os.PathLike | None = None,
    job_id: int | None = None,
    reporter: Reporter | None = None,
    endpoint_client=None,
) -> GenerationRoundSummary:
    """Sample a trained policy on a project's prompts and import the outputs as round `round`.

    Admin only. Steps: check the inputs (project, prompts, a round N-1 to pair against, the
    policy and its lineage.json) before loading anything; sample `n` responses per prompt;
    optionally write them to `out` (importer shape (a), atomically); import them in one
    transaction with `pair_against_round=round-1`, so every pairwise task compares the new
    policy with the previous round; record an Artifact(kind="generation") whose lineage names
    the policy, its own lineage, the sampling config, the round and the counts, and whose
    parents are the policy's recorded artifacts. Responses are named `model_name`
    (default "<policy dir name>@round<N>") so the leaderboard tells rounds apart.

    Raises PermissionDenied, GenerationRoundError, ModelNotFoundError, ImportFormatError or
    Cancelled; the import and the artifact are separate transactions, so a failure while
    recording the artifact leaves the imported round in place (re-running adds nothing).
    With `endpoint_client` (a `rlhf.judge.client.ChatClient`), `policy` is the served model's name
    and the round is sampled from that server; the lineage records the endpoint (no credentials).
    """
    from rlhf import __version__
    from rlhf.hashing import content_hash
    from rlhf.importer import import_records
    from rlhf.models import resolve_model
    from rlhf.redact import redact
    from rlhf.roles import check_admin

    check_admin(engine, actor, "generate a round")
    if not isinstance(round, int) or isinstance(round, bool) or round < 1:
        raise GenerationRoundError(f"round must be an integer >= 1 (it is paired against round - 1), got {round!r}")
    config = SamplingConfig(
        n=n, temperatures=tuple(float(t) for t in temperatures), top_p=top_p, top_k=top_k,
        max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size,
    )
    started = time.perf_counter()
    # 1. Everything that can be wrong is checked before the model is loaded.
    project_row, prompts = _round_inputs(engine, project, round, limit)
    source = resolve_model(policy) if endpoint_client is None else None
    policy_dir = Path(policy)
    policy_lineage = read_policy_lineage(policy_dir) if policy_dir.is_dir() else None
    name = model_name or f"{policy_dir.resolve().name if policy_dir.exists() else str(policy)}@round{round}"

    # 2. Sample.
    if endpoint_client is not None:
        from rlhf.judge.sampling import endpoint_responses

        responses = endpoint_responses(endpoint_client, [p.prompt for p in prompts], config, reporter)
    else:
        lm, tokenizer, _ = load_model_for_generation(source, load_in_4bit=load_in_4bit)
        responses = generate_responses(
            lm, tokenizer, [p.prompt for p in prompts], **config.as_dict(), use_chat_template=use_chat_template, reporter=reporter
        )
        del lm
    check_stop(reporter)

    # 3. Records in shape (a): the prompt exactly as stored, so the importer finds the same row.
    extra = {"model_ref": str(policy), "load_in_4bit": load_in_4bit, "round": round}
    if endpoint_client is not None:
        extra["endpoint"] = endpoint_client.where
    specs = [PromptSpec(prompt=p.prompt, category=p.category) for p in prompts]
    records = build_records(specs, responses, name, extra)
    flat = [r for per_prompt in responses for r in per_prompt]
    kept = sum(len(r["responses"]) for r in records)
    if out is not None:
        write_jsonl_atomic(out, records)
    if reporter is not None:
        reporter.log(f"importing {kept} responses as round {round} of {project_row.name!r}")

    # 4. Import as round N, paired against round N-1 (one transaction, all or nothing).
    summary = import_records(
        engine, records, project_row.name,
        round=round, pair_against_round=round - 1, max_pairs_per_prompt=max_pairs_per_prompt,
        make_rating_tasks=make_rating_tasks, actor=actor, source_name=f"generate:{policy}@round{round}",
    )

    # 5. The artifact: what this round was built from.
    counts = {
        "prompts": len(prompts),
        "responses": len(flat),
        "finished": sum(r.finished for r in flat),
        "empty_skipped": len(flat) - kept,
        "mean_num_tokens": (sum(r.num_tokens for r in flat) / len(flat)) if flat else 0.0,
        **summary.counts(),
    }
    lineage = {
        "policy": str(policy),
        "policy_resolved": source.path if source else None,
        "policy_kind": source.kind if source else "endpoint",
        "base_model": source.adapter_of if source else None,
        "endpoint": endpoint_client.where if endpoint_client is not None else None,
        "policy_weights_sha256": _policy_weights_hash(policy_dir) if policy_dir.is_dir() else None,
        "policy_lineage": policy_lineage,
        "model_name": name,
        "sampling": config.as_dict(),
        "load_in_4bit": load_in_4bit,
        "use_chat_template": use_chat_template,
        "round": round,
        "pair_against_round": round - 1,
        "max_pairs_per_prompt": max_pairs_per_prompt,
        "make_rating_tasks": make_rating_tasks,
        "prompts_hash": content_hash([p.prompt for p in prompts]),
        "import_id": summary.import_id,
        "output_file": str(out) if out is not None else None,
        "counts": counts,
        "rlhf_studio_version": __version__,
    }
    # The policy's own lineage.json may predate redaction: what is recorded here carries no credential.
    lineage = redact(lineage)
    artifact_id = _record_generation_artifact(
        engine, actor, project_row, round, name, lineage, counts, summary.file_hash,
        path=str(out) if out is not None else (source.path if source else endpoint_client.where), policy_dir=policy_dir, job_id=job_id,
    )
    return GenerationRoundSummary(
        project=project_row.name, round=round, pair_against_round=round - 1, policy=str(policy), model_name=name,
        prompts=len(prompts), responses=len(flat), finished=counts["finished"], empty_skipped=counts["empty_skipped"],
        responses_added=summary.responses_added, pairwise_tasks_added=summary.pairwise_tasks_added,
        rating_tasks_added=summary.rating_tasks_added, artifact_id=artifact_id, import_id=summary.import_id,
        seconds=time.perf_counter() - started,
    )


def _record_generation_artifact(engine, actor, project_row, round_number, name, lineage, counts, records_hash, *, path, policy_dir, job_id) -> int:
    from rlhf.db import run_transaction
    from rlhf.jsonsafe import json_safe
    from rlhf.schema import Artifact

    parents = _policy_artifact_ids(engine, policy_dir)

    def work(session) -> int:
        artifact = Artifact(
            kind="generation",
            name=f"{project_row.name}-round{round_number}",
            path=path,
            content_hash=records_hash,
            project_id=project_row.id,
            job_id=job_id,
            parent_ids=parents,
            lineage=json_safe(lineage),
            metrics=json_safe(counts),
            created_by=getattr(actor, "id", None),
        )
        session.add(artifact)
        session.flush()
        return int(artifact.id)

    return run_transaction(engine, work)
