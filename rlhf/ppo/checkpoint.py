"""PPO checkpoints: everything needed to continue a run exactly where it stopped.

Layout of `<out>/checkpoints/iter-000010/` (the number counts finished iterations):

    policy/adapter_config.json, adapter_model.safetensors   the policy adapter (loads on its own)
    value/adapter_model.safetensors                         the value adapter
    value_head.safetensors                                  the value head
    optimizer.pt, scheduler.pt                              Adam moments, learning-rate schedule
    rng/rank-<r>.pt                                         Python, NumPy, torch (CPU and CUDA) RNG states per process
    state.json                                              iteration, KL controller, config, last metrics

A checkpoint is written under a temporary name and renamed into place, so a crash while
saving never leaves a half checkpoint where `resume` would find it.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlhf.ppo.core import KLController

CHECKPOINTS = "checkpoints"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from (missing, incomplete, incompatible)."""


@dataclass
class ResumedState:
    """What a checkpoint restores besides the tensors: the number of finished iterations."""

    iteration: int
    path: Path
    metrics: dict[str, Any]


def checkpoint_dir(out: str | Path, iteration: int) -> Path:
    return Path(out) / CHECKPOINTS / f"iter-{iteration:06d}"


def list_checkpoints(out: str | Path) -> list[Path]:
    """Complete checkpoints under `out`, oldest first."""
    root = Path(out) / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("iter-") and (p / "state.json").is_file())


def latest_checkpoint(out: str | Path) -> Path | None:
    found = list_checkpoints(out)
    return found[-1] if found else None


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    out: str | Path,
    iteration: int,
    *,
    model,
    optimizer,
    scheduler,
    kl_controller: KLController,
    config: dict[str, Any],
    metrics: dict[str, Any],
    base_model_name: str,
    accelerator=None,
    keep: int | None = None,
) -> Path:
    """Write the checkpoint after `iteration` finished iterations; returns its directory.

    Every process writes its own RNG state; the main process writes the rest and renames the
    directory into place once all are done, then prunes to the newest `keep`.
    """
    from safetensors.torch import save_file

    final = checkpoint_dir(out, iteration)
    tmp = final.with_name(f".{final.name}.tmp")
    main = accelerator is None or accelerator.is_main_process
    rank = 0 if accelerator is None else accelerator.process_index
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "rng").mkdir(parents=True)
    _barrier(accelerator)
    torch.save(rng_state(), tmp / "rng" / f"rank-{rank}.pt")
    if main:
        model.save_policy_adapter(tmp / "policy", base_model_name)
        (tmp / "value").mkdir()
        save_file(_contiguous(model.adapter_state_dict("value")), str(tmp / "value" / "adapter_model.safetensors"))
        save_file(_contiguous(model.value_head.state_dict()), str(tmp / "value_head.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        state = {
            "format_version": FORMAT_VERSION,
            "iteration": iteration,
            "kl_controller": kl_controller.state_dict(),
            "world_size": 1 if accelerator is None else accelerator.num_processes,
            "config": config,
            "metrics": metrics,
        }
        (tmp / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True, default=str))
    _barrier(accelerator)
    if main:
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        if keep is not None and keep > 0:
            for old in list_checkpoints(out)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
    _barrier(accelerator)
    return final


def load_checkpoint(path: str | Path, *, model, optimizer, scheduler, kl_controller: KLController, accelerator=None) -> ResumedState:
    """Restore model adapters, value head, optimiser, scheduler and KL controller from `path`.

    The RNG states are returned to the caller to restore last (`restore_rng`), after everything
    that still draws random numbers while the run is being set up.
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / "state.json").is_file():
        raise CheckpointError(f"checkpoint {str(path)!r}: no state.json (not a complete PPO checkpoint)")
    state = json.loads((path / "state.json").read_text())
    if state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {str(path)!r}: format version {state.get('format_version')} is not {FORMAT_VERSION}")
    device = model.device
    try:
        model.load_adapter_state_dict("policy", load_file(str(path / "policy" / "adapter_model.safetensors"), device=str(device)))
        model.load_adapter_state_dict("value", load_file(str(path / "value" / "adapter_model.safetensors"), device=str(device)))
        model.value_head.load_state_dict(load_file(str(path / "value_head.safetensors"), device=str(device)))
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=device, weights_only=False))
        scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
    except (FileNotFoundError, RuntimeError, KeyError) as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} does not fit this model/config: {exc}") from exc
    kl_controller.load_state_dict(state["kl_controller"])
    return ResumedState(iteration=int(state["iteration"]), path=path, metrics=state.get("metrics", {}))


def restore_rng(path: str | Path, rank: int = 0) -> bool:
    """Restore this process's RNG states from a checkpoint; False when it has none for `rank`."""
    file = Path(path) / "rng" / f"rank-{rank}.pt"
    if not file.is_file():
        return False
    set_rng_state(torch.load(file, weights_only=False))
    return True


def resolve_resume(out: str | Path, resume: str | None) -> Path | None:
    """The checkpoint directory `resume` names: None, `latest` (newest under `out`) or a path."""
    if resume is None:
        return None
    if resume == "latest":
        found = latest_checkpoint(out)
        if found is None:
            raise CheckpointError(f"resume='latest': no checkpoint under {str(Path(out) / CHECKPOINTS)!r}")
        return found
    path = Path(resume)
    if not path.is_dir():
        raise CheckpointError(f"resume: no such checkpoint directory {resume!r}")
    return path


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def _barrier(accelerator) -> None:
    if accelerator is not None and accelerator.num_processes > 1:
        accelerator.wait_for_everyone()
