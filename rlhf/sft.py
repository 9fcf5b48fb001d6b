"""Supervised fine-tuning on demonstrations through TRL's `SFTTrainer`: `train_sft(config, *, reporter=None) -> SFTResult`.

The recipe, in order:
1. data: an SFT export (`rlhf export --format sft`: JSONL, Parquet or a datasets directory)
   whose rows carry `messages` (the last turn is the assistant's reply to learn) or TRL's
   `prompt` + `completion`, plus `split`; read by `read_sft_rows`, every error naming the
   file, line (row) and field; held-out rows from the export's test split, else prompts held
   out by `grouped_split`;
2. tokens: the prompt exactly as `rlhf generate` and PPO render it (chat template with the
   generation prompt), then the reply and EOS (`rlhf.reward.data.encode_pairs`, one formatting
   rule for the whole loop). Over-long examples are truncated explicitly (prompt from the
   left, then the reply on the right) and counted, never dropped: TRL would drop an example
   its own truncation left without a reply token;
3. loss on the reply tokens only: the rows go to `SFTTrainer` tokenised, with a
   `completion_mask`, and `completion_only_loss=True` (TRL 1.16 builds the labels from it).
   Not `assistant_only_loss`: it needs `{% generation %}` markers in the chat template (SmolLM2
   has none), and it would also train on earlier assistant turns of a multi-turn prompt, which
   the annotator did not write;
4. model: `full` trains every weight, `lora` an adapter on the frozen base, `qlora` the same on
   an NF4 base with double quantisation. Before loading, the memory a run needs (weights,
   gradients, optimiser state) is estimated and a `full` run that cannot fit is refused;
5. train: fp32 compute and no activation checkpointing on CPU (bf16 matmuls are ~20x slower
   here; checkpointing only trades time for memory), bf16 and checkpointing on CUDA; batches of
   similar length; checkpoints beside the output for `resume`; a non-finite loss stops the run;
6. evaluate: held-out loss and perplexity on the reply tokens, before and after;
7. save: a PEFT adapter (lora / qlora) or a full checkpoint, with the tokenizer, metrics.json
   and lineage.json, written to a temporary directory renamed into place.

The output is a policy wherever one is accepted (`rlhf ppo|dpo|generate --policy`); PPO's
reference is then this policy. This module imports only the standard library at import time
(the CLI reads `SFTRunConfig`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf.ppo.config import PACKAGED_POLICY, ConfigFile

METHODS = ("full", "lora", "qlora")
OVERLONG = ("truncate", "error")
PAGED_OPTIMIZERS_CPU_FALLBACK = {"paged_adamw_8bit": "adamw_torch", "paged_adamw_32bit": "adamw_torch", "paged_adamw": "adamw_torch"}


class SFTError(ValueError):
    """An SFT run that cannot start or had to stop; the message says why (and names the place)."""


class SFTDataError(SFTError):
    """SFT data in the wrong shape; the message names the file, line (or row) and field."""


@dataclass
class SFTRunConfig(ConfigFile):
    data: str = ""
    """SFT export: a .jsonl / .parquet file or a datasets directory whose rows carry `messages` (the last turn is
    the assistant's reply to learn) or `prompt` + `completion`, and `split` (train / test)."""
    project: str | None = None
    """Instead of `data`: export this project's demonstrations (`rlhf export --format sft`) and train on them."""
    database_url: str | None = None
    """Database URL used with `project` (default: $RLHF_DATABASE_URL or data/rlhf.db)."""
    out: str = "runs/sft"
    """Output directory: the policy (adapter or full checkpoint), tokenizer, metrics.json, lineage.json."""
    method: str = "lora"
    """full (every weight), lora (adapter on a frozen base) or qlora (adapter on a 4-bit NF4 base, double quantisation)."""
    policy: str = PACKAGED_POLICY
    """Starting model: a hub id, a local checkpoint, the packaged alias, or a PEFT adapter directory
    (lora / qlora continue that adapter; full merges it into the base first)."""
    device: str | None = None
    """"cpu", "cuda", "cuda:1", ...; None picks CUDA when present."""
    lora_r: int = 16
    """LoRA rank (lora / qlora)."""
    lora_alpha: int = 32
    """LoRA scaling numerator (lora / qlora)."""
    lora_target_modules: str = "all-linear"
    """Modules that carry LoRA: `all-linear` or a comma-separated list of module names."""
    optim: str = "adamw_torch"
    """Transformers optimiser name (adamw_torch, adafactor, sgd, paged_adamw_8bit, paged_adamw_32bit, ...).
    The paged ones (QLoRA's) need CUDA."""
    learning_rate: float = 1e-4
    """Peak learning rate (linear decay). Full fine-tuning usually wants ~1e-5."""
    num_epochs: float = 1.0
    """Passes over the training examples (ignored when `max_steps` > 0)."""
    max_steps: int = -1
    """Stop after this many optimiser steps; -1 runs `num_epochs`."""
    batch_size: int = 8
    """Examples per step and device."""
    gradient_accumulation_steps: int = 1
    """Micro-batches accumulated per optimiser step."""
    max_length: int = 512
    """Tokens per example (prompt + reply + EOS)."""
    overlong: str = "truncate"
    """An example longer than `max_length`: `truncate` (prompt from the left, then the reply on the right; counted
    in metrics.json) or `error` (stop, naming the first such row)."""
    chat_template: bool = True
    """Render prompts with the tokenizer's chat template (when it has one), as generation and PPO do."""
    gradient_checkpointing: bool | None = None
    """Recompute activations in the backward pass (less memory, ~30% slower); None: on CUDA only."""
    group_by_length: bool = True
    """Batches of examples of similar length (less padding)."""
    eval_fraction: float = 0.1
    """Share of prompts held out when the export has no test split (0: none)."""
    eval_batch_size: int = 8
    """Examples per forward pass when measuring held-out loss."""
    logging_steps: int = 5
    """Report the loss every this many steps."""
    save_steps: int = 50
    """Checkpoint every this many steps (in `<out>.checkpoints` until the run finishes)."""
    resume: bool = False
    """Continue from the newest checkpoint of an interrupted run into the same `out`."""
    overwrite: bool = False
    """Replace an existing `out`."""
    seed: int = 0
    """Seeds the adapter initialisation and the data order."""

    def validate(self) -> "SFTRunConfig":
        if not self.data and not self.project:
            raise ValueError("give data (an SFT export) or project (exported on the fly)")
        if self.data and self.project:
            raise ValueError("give data or project, not both")
        if self.method not in METHODS:
            raise ValueError(f"config field 'method' must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.overlong not in OVERLONG:
            raise ValueError(f"config field 'overlong' must be one of {', '.join(OVERLONG)}, got {self.overlong!r}")
        for name in ("lora_r", "batch_size", "gradient_accumulation_steps", "eval_batch_size", "logging_steps", "save_steps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"config field {name!r} must be positive, got {getattr(self, name)!r}")
        if self.max_length < 16:
            raise ValueError(f"config field 'max_length' must be at least 16 tokens, got {self.max_length}")
        if not self.learning_rate > 0:
            raise ValueError(f"config field 'learning_rate' must be positive, got {self.learning_rate}")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f"config field 'eval_fraction' must be in [0, 1), got {self.eval_fraction}")
        return self


@dataclass
class SFTResult:
    """What a finished SFT run produced; `output_dir` loads with `rlhf.models.resolve_model`."""

    output_dir: Path
    steps: int
    metrics: dict[str, Any]
    lineage: dict[str, Any]


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class SFTExample:
    """One demonstration: the prompt (text or chat turns before the reply) and the reply to learn."""

    prompt: str | list[dict[str, str]]
    completion: str
    split: str
    where: str
    """`file: line N` (JSONL) or `file: row N`: for error messages."""


def _numbered_records(path: Path):
    """(where, record) for every row of an export; JSONL keeps its line numbers."""
    from rlhf.export import ExportError, read_export_rows

    if path.is_file() and path.suffix in (".jsonl", ".json"):
        with open(path, encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                where = f"{path}: line {line_number}"
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise SFTDataError(f"{where}: not valid JSON ({exc.msg})") from None
                if not isinstance(record, dict):
                    raise SFTDataError(f"{where}: expected a JSON object, got {type(record).__name__}")
                yield where, record
        return
    try:
        frame = read_export_rows(path)
    except ExportError as exc:
        raise SFTDataError(str(exc)) from None
    for row_number, record in enumerate(frame.to_dict("records"), start=1):
        yield f"{path}: row {row_number}", record


def parse_sft_record(record: dict[str, Any], where: str) -> SFTExample:
    """One export row → an `SFTExample`; raises SFTDataError naming `where` and the field."""
    from rlhf.reward.data import RewardDataError, _messages, prompt_value, response_value

    split = record.get("split", "train")
    split = "train" if split is None or (isinstance(split, float) and math.isnan(split)) else split
    if split not in ("train", "test"):
        raise SFTDataError(f"{where}: field 'split': expected 'train' or 'test', got {split!r}")
    try:
        if _present(record.get("messages")):
            field_where = f"{where}: field 'messages'"
            messages = _messages(record["messages"], field_where)
            if not any(m["role"] == "assistant" for m in messages):
                raise SFTDataError(f"{field_where}: no assistant turn (the last turn must be the assistant's reply to learn)")
            if messages[-1]["role"] != "assistant":
                raise SFTDataError(f"{field_where}: the last turn is {messages[-1]['role']!r}; it must be the assistant's reply to learn")
            if len(messages) < 2:
                raise SFTDataError(f"{field_where}: only an assistant turn; the reply needs a prompt before it")
            prompt: str | list[dict[str, str]] = messages[:-1]
            completion, completion_where = messages[-1]["content"], f"{field_where}[{len(messages) - 1}]"
        elif _present(record.get("prompt")) or _present(record.get("completion")):
            for name in ("prompt", "completion"):
                if not _present(record.get(name)):
                    raise SFTDataError(f"{where}: missing field {name!r} (prompt-completion rows need both)")
            prompt = prompt_value(record["prompt"], f"{where}: field 'prompt'")
            completion_where = f"{where}: field 'completion'"
            completion = response_value(record["completion"], completion_where)
        else:
            found = ", ".join(sorted(map(str, record))) or "none"
            raise SFTDataError(f"{where}: missing field 'messages' (or 'prompt' and 'completion'); found: {found}")
    except RewardDataError as exc:
        raise SFTDataError(str(exc)) from None
    if not completion.strip():
        raise SFTDataError(f"{completion_where}: empty reply (nothing to learn)")
    if isinstance(prompt, list) and not any(m["role"] == "user" for m in prompt):
        # A reply to no user turn teaches the policy to answer what nobody asked (generation never renders such a prompt).
        field = "messages" if _present(record.get("messages")) else "prompt"
        raise SFTDataError(f"{where}: field {field!r}: the prompt has no user turn (nothing for the assistant to reply to)")
    return SFTExample(prompt=prompt, completion=completion, split=split, where=where)


def _present(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, float) and math.isnan(value):
        return False
    return True


def read_sft_rows(path: str | os.PathLike) -> list[SFTExample]:
    """Every demonstration of an SFT export, validated; raises SFTDataError naming the file, line and field."""
    path = Path(path)
    if not path.exists():
        raise SFTDataError(f"SFT data {str(path)!r}: no such file or directory")
    examples = [parse_sft_record(record, where) for where, record in _numbered_records(path)]
    if not examples:
        raise SFTDataError(f"{path}: no rows (an SFT export holds one demonstration per line)")
    return examples


@dataclass
class SFTData:
    train: list[SFTExample]
    test: list[SFTExample]
    manifest: Any
    source: str


def load_sft_data(path: str | os.PathLike, *, eval_fraction: float, seed: int) -> SFTData:
    """Training and held-out demonstrations: the export's own test split, or else prompts held out by `grouped_split`."""
    from rlhf.export import grouped_split, read_manifest
    from rlhf.reward.data import prompt_key

    examples = read_sft_rows(path)
    if any(e.split == "test" for e in examples):
        is_test = [e.split == "test" for e in examples]
    else:
        is_test = list(grouped_split([prompt_key(e.prompt) for e in examples], eval_fraction, seed))
    train = [e for e, test in zip(examples, is_test) if not test]
    test = [e for e, held in zip(examples, is_test) if held]
    if not train:
        raise SFTDataError(f"{path}: no training rows (every row is in the test split)")
    return SFTData(train=train, test=test, manifest=read_manifest(path), source=str(path))


# --------------------------------------------------------------------------- tokens


@dataclass
class EncodedExamples:
    """Token ids and reply masks (1 = a reply token the loss is computed on), plus what truncation did."""

    input_ids: list[list[int]]
    completion_mask: list[list[int]]
    prompts_truncated: int
    replies_truncated: int
    overlong_rows: list[str]


def encode_examples(tokenizer, examples: list[SFTExample], *, max_length: int, use_chat_template: bool) -> EncodedExamples:
    """Prompt rendered as generation renders it, then reply + EOS, fitted to `max_length` (see module docstring).

    A reply cut on the right keeps its last slot for the EOS token (`fit_to_length`); that EOS
    is no real end, so it is masked out of the loss: the model is never taught to stop mid-reply.
    """
    from rlhf.reward.data import encode_pairs

    batch = encode_pairs(
        tokenizer, [e.prompt for e in examples], [e.completion for e in examples], max_length=max_length, use_chat_template=use_chat_template
    )
    masks, overlong = [], []
    for example, ids, cut, reply in zip(examples, batch.ids, batch.cuts, batch.response_lengths):
        mask = [0] * (len(ids) - reply) + [1] * reply
        if cut.response_tokens:
            mask[-1] = 0
        if cut.prompt_tokens or cut.response_tokens:
            overlong.append(example.where)
        masks.append(mask)
    return EncodedExamples(batch.ids, masks, batch.prompts_truncated, batch.responses_truncated, overlong)


# --------------------------------------------------------------------------- memory


@dataclass
class MemoryEstimate:
    """Bytes a training run holds besides activations: weights, gradients and optimiser state."""

    weights: int
    gradients: int
    optimizer_state: int
    parameters: int
    trainable_parameters: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer_state

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self) | {"total": self.total}


def optimizer_bytes_per_parameter(optim: str) -> float:
    """Optimiser state per trainable parameter: Adam keeps two moments (fp32, or 8-bit), SGD none, Adafactor ~factored."""
    name = optim.lower()
    if "8bit" in name:
        return 2.0
    if "adafactor" in name:
        return 0.1
    if name.startswith("sgd"):
        return 0.0
    return 8.0


def estimate_training_memory(
    parameters: int, *, method: str, trainable_parameters: int, optim: str, weight_bytes: float = 4.0
) -> MemoryEstimate:
    """Weights + gradients + optimiser state of a run, without activations (they scale with batch × length).

    full: every parameter is trainable (fp32 gradient and optimiser state for each); lora: the
    base at `weight_bytes` per parameter plus a small trainable adapter; qlora: the base at ~0.56
    bytes per parameter (NF4 + double-quantised scales; embeddings stay at `weight_bytes`, which
    this ignores). Adapter parameters are fp32.
    """
    base = parameters * (0.5625 if method == "qlora" else weight_bytes)
    adapter = 0 if method == "full" else trainable_parameters * 4
    return MemoryEstimate(
        weights=int(base + adapter),
        gradients=int(trainable_parameters * 4),
        optimizer_state=int(trainable_parameters * optimizer_bytes_per_parameter(optim)),
        parameters=int(parameters),
        trainable_parameters=int(trainable_parameters),
    )


def count_parameters(model_path: str, lora_r: int) -> tuple[int, int]:
    """(parameters, LoRA parameters on every linear layer but the output head) of a checkpoint's architecture,
    counted on the meta device: no weight is read."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    output = model.get_output_embeddings()
    lora = sum(
        lora_r * (m.in_features + m.out_features) for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not output
    )
    return sum(p.numel() for p in model.parameters()), lora


def available_memory_bytes(device) -> int:
    """Free memory where the weights will live: the GPU's free memory, or the machine's available RAM."""
    if device.type == "cuda":
        import torch

        return int(torch.cuda.mem_get_info(device)[0])
    import psutil

    return int(psutil.virtual_memory().available)


def check_fits(estimate: MemoryEstimate, available: int, *, method: str, model_name: str, device) -> None:
    """Refuse a run whose weights, gradients and optimiser state alone exceed the free memory (before loading)."""
    if estimate.total <= available:
        return
    gib = 2**30
    advice = "use --method lora or --method qlora" if method == "full" else "use --method qlora or a smaller base"
    raise SFTError(
        f"--method {method} on {model_name!r} needs about {estimate.total / gib:.1f} GiB on {device} before activations "
        f"(weights {estimate.weights / gib:.1f}, gradients {estimate.gradients / gib:.1f}, optimiser state "
        f"{estimate.optimizer_state / gib:.1f} GiB for {estimate.parameters / 1e9:.2f}B parameters) but only "
        f"{available / gib:.1f} GiB is free: {advice}. Nothing was loaded."
    )


# --------------------------------------------------------------------------- optimiser


def check_optimizer(optim: str, device) -> None:
    """A Transformers optimiser name usable on `device`; the paged ones (QLoRA's) need CUDA."""
    from transformers.training_args import OptimizerNames

    names = [o.value for o in OptimizerNames]
    if optim not in names:
        raise SFTError(f"optimiser {optim!r} is not a Transformers optimiser name; some: adamw_torch, adafactor, sgd, paged_adamw_8bit, paged_adamw_32bit")
    if optim.startswith("paged_") and device.type != "cuda":
        instead = PAGED_OPTIMIZERS_CPU_FALLBACK.get(optim, "adamw_torch")
        raise SFTError(
            f"optimiser {optim!r} pages its state between GPU and CPU memory and needs CUDA, but this run is on {device}: "
            f"use --optim {instead} on CPU (or run on a GPU)"
        )


# --------------------------------------------------------------------------- evaluation


def held_out_loss(model, input_ids: list[list[int]], masks: list[list[int]], *, pad_id: int, batch_size: int, device) -> dict[str, float] | None:
    """Mean negative log-likelihood per reply token over held-out examples, and its perplexity (exp of it).

    Token-weighted over the whole set (not a mean of batch means), teacher-forced, reply tokens only.
    """
    import torch

    if not input_ids:
        return None
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    try:
        with torch.no_grad():
            for start in range(0, len(input_ids), batch_size):
                rows, row_masks = input_ids[start : start + batch_size], masks[start : start + batch_size]
                width = max(len(r) for r in rows)
                ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
                attention = torch.zeros((len(rows), width), dtype=torch.long)
                target = torch.zeros((len(rows), width), dtype=torch.bool)
                for i, (row, mask) in enumerate(zip(rows, row_masks)):
                    ids[i, : len(row)] = torch.tensor(row)
                    attention[i, : len(row)] = 1
                    target[i, : len(row)] = torch.tensor(mask, dtype=torch.bool)
                ids, attention, target = ids.to(device), attention.to(device), target.to(device)
                labels = ids.masked_fill(~target, -100)
                # A model TRL has fitted with its fused LM head returns log p(label) without building the
                # (B, S, V) logits (~400 MB for SmolLM2 at 8 x 256); any other model returns logits.
                out = model(input_ids=ids, attention_mask=attention, labels=labels, fused_lm_head=True, use_cache=False)
                if getattr(out, "log_probs", None) is not None:
                    total -= float(out.log_probs.float().sum())
                    tokens += int(out.label_mask.sum())
                    continue
                logits = out.logits[:, :-1].float()  # (B, S-1, V)
                nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")  # (B, S-1)
                keep = target[:, 1:]
                total += float(nll[keep].sum())
                tokens += int(keep.sum())
    finally:
        model.train(was_training)
    if tokens == 0:
        return None
    loss = total / tokens
    return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "tokens": tokens}


# --------------------------------------------------------------------------- training


def _resolve_device(config: SFTRunConfig):
    import torch

    if config.device:
        return torch.device(config.device)
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def reply_token_loss(model, inputs: dict[str, Any], num_items_in_batch=None):
    """Next-token loss of the labelled (reply) positions, with the LM head applied to those positions only.

    Returns (loss, logits) where `logits` is (N, V) for the N labelled positions. The loss is the
    sum of -log p(label) over labelled positions divided by `num_items_in_batch` (their count when
    None), exactly the loss of the full-logits forward and of TRL's fused LM head. Why: on CPU
    TRL's fused head scores every position (it compacts to labelled ones only on Triton devices),
    so a prompt token or a pad costs a projection onto the whole vocabulary (49k for SmolLM2),
    forward and backward. Here the backbone runs once, the hidden states at labelled positions
    are gathered, and only they are projected.
    """
    import torch

    labels = inputs["labels"]
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT injects LoRA in place
    backbone_inputs = {k: v for k, v in inputs.items() if k not in ("labels", "num_items_in_batch", "completion_mask")}
    hidden = base.base_model(**backbone_inputs, use_cache=False).last_hidden_state  # (B, S, H)
    targets = labels[:, 1:]  # (B, S-1): position t predicts token t+1
    mask = targets != -100
    lm_head = base.get_output_embeddings()
    selected = hidden[:, :-1][mask]  # (N, H)
    logits = lm_head(selected).float()  # (N, V)
    count = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
    loss = torch.nn.functional.cross_entropy(logits, targets[mask], reduction="sum") / count
    return loss, logits


def _make_trainer_class():
    """SFTTrainer with length-grouped batches and, where TRL scores every position, the reply-only LM head (built lazily: TRL is heavy)."""
    import torch
    from trl import SFTTrainer

    from rlhf.reward.train import LengthGroupedBatches

    class DemonstrationTrainer(LengthGroupedBatches, SFTTrainer):
        """TRL's SFTTrainer; the batch order differs (examples of similar length together) and, off CUDA, the
        loss is `reply_token_loss` (same value and gradients, the LM head only where the loss is)."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            on_cuda = self.args.device.type == "cuda"
            if on_cuda or return_outputs or self.compute_loss_func is not None or self.label_smoother is not None or self.args.loss_type != "nll":
                return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
            mode = "train" if self.model.training else "eval"
            loss, logits = reply_token_loss(model, inputs, num_items_in_batch)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * (self.accelerator.num_processes // self.get_tp_size())
            # The metrics TRL logs, on the labelled positions only (as TRL's are).
            with torch.no_grad():
                labelled = (inputs["labels"][:, 1:] != -100)
                targets = inputs["labels"][:, 1:][labelled]
                log_probs = logits.detach().log_softmax(-1)
                count = max(int(targets.numel()), 1)
                entropy = float(-(log_probs.exp() * log_probs).sum()) / count
                accuracy = float((logits.detach().argmax(-1) == targets).sum()) / count
            self._metrics[mode]["entropy"].append(entropy if targets.numel() else 0.0)
            self._metrics[mode]["mean_token_accuracy"].append(accuracy if targets.numel() else 0.0)
            if mode == "train":
                self._total_train_tokens += int(inputs["attention_mask"].sum()) // self._tp_size
            self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
            return loss

    return DemonstrationTrainer


def _finite_loss_guard():
    from transformers import TrainerCallback

    class FiniteLoss(TrainerCallback):
        """Stop at the first logged non-finite loss (the run is then refused, nothing written)."""

        bad_step: int | None = None

        def on_log(self, args, state, control, logs=None, **kwargs):
            loss = (logs or {}).get("loss")
            if isinstance(loss, (int, float)) and not math.isfinite(loss):
                self.bad_step = state.global_step
                control.should_training_stop = True
            return control

    return FiniteLoss()


def _export_project(config: SFTRunConfig, scratch: Path, reporter) -> Path:
    """Export the project's demonstrations (format sft) into `scratch`; a clear error while that format does not exist."""
    from rlhf import export as export_module
    from rlhf.db import database_url as default_url, make_engine
    from rlhf.roles import SYSTEM

    formats = getattr(export_module, "EXPORT_FORMATS", ())
    if "sft" not in formats:
        raise SFTError(
            f"--project needs `rlhf export --format sft`, which this installation does not have (formats: {', '.join(formats)}); "
            "export demonstrations yourself and pass --data"
        )
    engine = make_engine(config.database_url or default_url())
    reporter.log(f"exporting the demonstrations of project {config.project!r}")
    out = scratch / "sft"
    options = export_module.ExportOptions(test_size=config.eval_fraction, seed=config.seed)
    export_module.export_project(engine, SYSTEM, config.project, format="sft", out=out, options=options, record_artifact=False)
    return out


def train_sft(config: SFTRunConfig, *, reporter=None) -> SFTResult:
    """Fine-tune a policy on demonstrations; write it with metrics.json and lineage.json to `config.out`.

    Raises SFTDataError (unusable data, naming the file, line and field), SFTError (bad options,
    a run that cannot fit, a paged optimiser without CUDA, a non-finite loss, an existing
    output), ModelNotFoundError (unknown model), ValueError (bad config). When
    `reporter.should_stop()` turns true, a checkpoint is saved and `Cancelled` is raised;
    `resume=True` continues from it. Nothing is written to `out` unless training finished.
    """
    from rlhf.progress import NullReporter

    reporter = reporter or NullReporter()
    config.validate()
    out = Path(config.out)
    if out.exists() and not config.overwrite:
        raise SFTError(f"output {str(out)!r} exists (pass overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = None
    try:
        data_path = Path(config.data) if config.data else None
        if config.project:
            scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=out.parent))
            data_path = _export_project(config, scratch, reporter)
        return _train(config, out, data_path, reporter)
    except Exception as exc:
        from rlhf.progress import Cancelled
        from rlhf.reward.train import checkpoint_dir_for

        # A run that failed before its first checkpoint leaves nothing to resume: leave nothing at all.
        checkpoints = checkpoint_dir_for(out)
        if not isinstance(exc, Cancelled) and checkpoints.is_dir() and not any(checkpoints.glob("checkpoint-*")):
            shutil.rmtree(checkpoints, ignore_errors=True)
        raise
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _train(config: SFTRunConfig, out: Path, data_path: Path, reporter) -> SFTResult:
    import torch
    from datasets import Dataset
    from trl import SFTConfig

    from rlhf.dpo import _reporter_callback
    from rlhf.models import ModelNotFoundError, load_causal_lm, load_tokenizer, lora_config, resolve_model, trainable_to_fp32
    from rlhf.progress import Cancelled
    from rlhf.reward.data import uses_chat_template
    from rlhf.reward.train import RewardTrainingError, _prepare_checkpoints, checkpoint_dir_for

    started = time.perf_counter()
    device = _resolve_device(config)
    on_cuda = device.type == "cuda"
    check_optimizer(config.optim, device)  # at once: before the data or the model is read

    # 1. data
    data = load_sft_data(data_path, eval_fraction=config.eval_fraction, seed=config.seed)
    reporter.log(f"{len(data.train)} training demonstrations, {len(data.test)} held out")

    # 2. tokens
    source = resolve_model(config.policy)
    tokenizer = load_tokenizer(source, padding_side="right")
    use_template = bool(config.chat_template and uses_chat_template(tokenizer))
    train_tokens = encode_examples(tokenizer, data.train, max_length=config.max_length, use_chat_template=use_template)
    test_tokens = encode_examples(tokenizer, data.test, max_length=config.max_length, use_chat_template=use_template)
    # In file order (each `where` ends with its line or row number), so the error names the first.
    overlong = sorted(train_tokens.overlong_rows + test_tokens.overlong_rows, key=lambda where: int(where.rsplit(" ", 1)[-1]))
    if overlong and config.overlong == "error":
        raise SFTDataError(
            f"{overlong[0]}: longer than max_length={config.max_length} tokens ({len(overlong)} such rows); "
            "raise --max-length or pass --overlong truncate"
        )
    truncation = {
        "prompts_truncated": train_tokens.prompts_truncated + test_tokens.prompts_truncated,
        "replies_truncated": train_tokens.replies_truncated + test_tokens.replies_truncated,
        "first_truncated": overlong[:5],
    }
    if overlong:
        reporter.log(
            f"truncated to {config.max_length} tokens: {truncation['prompts_truncated']} prompts (from the left), "
            f"{truncation['replies_truncated']} replies (from the right, the cut end not learnt as an end); no example dropped"
        )

    # 3. memory: estimated before any weight is loaded
    base_path = source.adapter_of if source.kind == "adapter" else source.path
    try:
        parameters, lora_parameters = count_parameters(base_path, config.lora_r)
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"model {config.policy!r}: {exc}") from exc
    trainable_guess = parameters if config.method == "full" else lora_parameters
    estimate = estimate_training_memory(
        parameters, method=config.method, trainable_parameters=trainable_guess, optim=config.optim,
        weight_bytes=4.0 if (config.method == "full" or not on_cuda) else 2.0,
    )
    check_fits(estimate, available_memory_bytes(device), method=config.method, model_name=config.policy, device=device)

    # 4. checkpoints and model
    checkpoints = checkpoint_dir_for(out)
    fingerprint = {
        "config": {k: v for k, v in config.to_dict().items() if k not in ("resume", "overwrite", "out", "device", "max_steps", "num_epochs", "logging_steps")},
        "data": _rows_hash(train_tokens),
    }
    try:
        resume_from = _prepare_checkpoints(checkpoints, fingerprint, config.resume, reporter)
    except RewardTrainingError as exc:
        raise SFTError(str(exc)) from None
    torch.manual_seed(config.seed)
    full = config.method == "full"
    peft_config = None
    if full:
        # fp32 master weights everywhere; CUDA computes in bf16 through autocast (bf16=True below).
        model = load_causal_lm(source, device=device, dtype=torch.float32)
        if source.kind == "adapter":
            model = model.merge_and_unload()
        model.requires_grad_(True)  # every weight (an adapter loads its base frozen)
        model.train()
    elif source.kind == "adapter":
        model = load_causal_lm(source, load_in_4bit=config.method == "qlora", device=device, trainable_adapter=True)
    else:
        model = load_causal_lm(source, load_in_4bit=config.method == "qlora", device=device)
        targets = config.lora_target_modules
        targets = targets if targets == "all-linear" else [t.strip() for t in targets.split(",") if t.strip()]
        peft_config = lora_config("CAUSAL_LM", r=config.lora_r, alpha=config.lora_alpha, target_modules=targets)

    train_set = Dataset.from_dict({
        "input_ids": train_tokens.input_ids,
        "completion_mask": train_tokens.completion_mask,
        "length": [len(ids) for ids in train_tokens.input_ids],
    })
    checkpointing = on_cuda if config.gradient_checkpointing is None else config.gradient_checkpointing
    args = SFTConfig(
        output_dir=str(checkpoints),
        completion_only_loss=True,  # labels from completion_mask: the loss sees reply tokens only
        max_length=config.max_length,
        learning_rate=config.learning_rate,
        num_train_epochs=config.num_epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        optim=config.optim,
        bf16=on_cuda,
        gradient_checkpointing=checkpointing,
        use_cpu=not on_cuda,
        logging_steps=config.logging_steps,
        # Transformers would log a NaN step's loss as the mean of the others: the guard must see it.
        logging_nan_inf_filter=False,
        save_steps=config.save_steps,
        save_total_limit=2,
        eval_strategy="no",
        report_to=[],
        seed=config.seed,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    trainer = _make_trainer_class()(
        model=model, args=args, train_dataset=train_set, processing_class=tokenizer, peft_config=peft_config,
        group_by_length=config.group_by_length,
    )
    if len(trainer.train_dataset) != len(train_set):  # TRL drops rows left without a label; ours always keep one
        raise SFTError(f"TRL dropped {len(train_set) - len(trainer.train_dataset)} training examples; nothing was trained")
    if not on_cuda:
        trainable_to_fp32(trainer.model)  # TRL casts a 4-bit model's adapter to bf16; CPU computes in fp32
    callback = _reporter_callback(reporter)
    guard = _finite_loss_guard()
    trainer.add_callback(callback)
    trainer.add_callback(guard)

    # 5. evaluate before, train, evaluate after
    pad_id = tokenizer.pad_token_id
    before = held_out_loss(trainer.model, test_tokens.input_ids, test_tokens.completion_mask, pad_id=pad_id, batch_size=config.eval_batch_size, device=device)
    if before is not None:
        reporter.log(f"held-out loss before {before['loss']:.4f} (perplexity {before['perplexity']:.2f})")
    train_started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume_from)
    train_seconds = time.perf_counter() - train_started
    if callback.cancelled:
        raise Cancelled(f"SFT cancelled at step {trainer.state.global_step}; resume continues from {checkpoints}")
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    if guard.bad_step is not None or not all(math.isfinite(x) for x in losses) or not math.isfinite(result.training_loss):
        raise SFTError(
            f"SFT loss became non-finite at step {guard.bad_step or trainer.state.global_step} (last losses {losses[-3:]}); "
            f"nothing was written to {out}; lower --learning-rate (checkpoints kept in {checkpoints})"
        )
    after = held_out_loss(trainer.model, test_tokens.input_ids, test_tokens.completion_mask, pad_id=pad_id, batch_size=config.eval_batch_size, device=device)
    if after is not None and not math.isfinite(after["loss"]):
        raise SFTError(f"held-out loss is non-finite after training; nothing was written to {out}")

    # 6. metrics, lineage, outputs
    memory = measured_memory(trainer)
    tokens_seen = sum(len(ids) for ids in train_tokens.input_ids)
    metrics = {
        "method": config.method,
        "held_out": {"before": before, "after": after, "examples": len(data.test)},
        "train": {
            "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
            "train_loss": result.training_loss, "steps": trainer.state.global_step, "seconds": train_seconds,
        },
        "data": {"train_examples": len(data.train), "test_examples": len(data.test), "train_tokens": tokens_seen,
                 "reply_tokens": sum(sum(m) for m in train_tokens.completion_mask), **truncation},
        "memory": {"estimate": estimate.as_dict(), "measured": memory},
        "export_hash": data.manifest.content_hash if data.manifest else None,
        "timings": {"total_s": time.perf_counter() - started, "train_s": train_seconds},
    }
    lineage = _save_policy(trainer, tokenizer, config, source, data, data_path, metrics, resume_from, out)
    shutil.rmtree(checkpoints, ignore_errors=True)
    if after is not None:
        reporter.log(f"held-out loss after {after['loss']:.4f} (perplexity {after['perplexity']:.2f})")
    reporter.log(f"SFT done: {trainer.state.global_step} steps ({config.method}); policy in {out}")
    return SFTResult(out, trainer.state.global_step, metrics, lineage)


def _rows_hash(tokens: EncodedExamples) -> str:
    from rlhf.hashing import content_hash

    return content_hash({"input_ids": tokens.input_ids, "completion_mask": tokens.completion_mask})


def measured_memory(trainer) -> dict[str, int]:
    """Bytes held by the trained model's weights, by its trainable parameters' gradients, and by the optimiser's state."""
    from rlhf.models import weights_footprint_bytes

    model = trainer.model
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer_state = 0
    optimizer = getattr(trainer, "optimizer", None)
    for state in (getattr(optimizer, "state", {}) or {}).values():
        for value in state.values():
            if hasattr(value, "element_size"):
                optimizer_state += value.numel() * value.element_size()
    return {
        "weights": weights_footprint_bytes(model),
        "gradients": sum(p.numel() * p.element_size() for p in trainable),
        "optimizer_state": optimizer_state,
        "trainable_parameters": sum(p.numel() for p in trainable),
    }


def _save_policy(trainer, tokenizer, config: SFTRunConfig, source, data: SFTData, data_path: Path, metrics, resume_from, out: Path) -> dict[str, Any]:
    """Write the policy (adapter or full checkpoint), tokenizer, metrics.json and lineage.json to a staging dir, then rename it onto `out`."""
    from datetime import datetime, timezone

    from rlhf import __version__
    from rlhf.export import ExportError, _place
    from rlhf.hashing import content_hash, file_sha256
    from rlhf.ppo.model import portable_base_name
    from rlhf.redact import redact
    from rlhf.reward.train import json_safe

    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        base_name = portable_base_name(config.policy, source)
        if config.method == "full":
            trainer.model.save_pretrained(str(staging), safe_serialization=True)
            weights_file = staging / "model.safetensors"
        else:
            trainer.model.save_pretrained(str(staging), selected_adapters=["default"])
            adapter_config = json.loads((staging / "adapter_config.json").read_text())
            adapter_config["base_model_name_or_path"] = base_name
            (staging / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2, sort_keys=True))
            weights_file = staging / "adapter_model.safetensors"
        tokenizer.save_pretrained(str(staging))
        lineage = {
            "kind": "sft",
            "method": config.method,
            "output": "full checkpoint" if config.method == "full" else "PEFT adapter",
            "rlhf_version": __version__,
            "base_model": base_name,
            "policy_start": config.policy,
            "data": {
                "path": "exported from the project for this run" if config.project else str(data_path.resolve()),
                "project": config.project,
                "export_hash": data.manifest.content_hash if data.manifest else None,
                "export_manifest": json_safe(dataclasses.asdict(data.manifest)) if data.manifest else None,
                "train_examples": len(data.train),
                "test_examples": len(data.test),
            },
            "config": config.to_dict(),
            "config_hash": content_hash(config.to_dict()),
            "weights_sha256": file_sha256(weights_file) if weights_file.is_file() else None,
            "resumed_from": resume_from,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "metrics": {"held_out": metrics["held_out"], "train": metrics["train"]},
        }
        lineage = redact(json_safe(lineage))  # paths, the database URL and the config may carry a credential
        (staging / "lineage.json").write_text(json.dumps(lineage, indent=2, sort_keys=True, default=str))
        (staging / "metrics.json").write_text(json.dumps(redact(json_safe(metrics)), indent=2, sort_keys=True, default=str))
        try:
            _place(staging, out, config.overwrite)
        except ExportError as exc:
            raise SFTError(str(exc)) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return lineage
