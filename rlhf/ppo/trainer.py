"""The PPO loop: `train_ppo(config, *, reporter=None) -> PPOResult`.

Each iteration: 1. draw prompts; 2. roll out (generate, reference pass, critic, score);
3. rewards and advantages; 4. `ppo_epochs` passes of shuffled mini-batches, each one optimiser
step on the clipped policy loss and the clipped value loss; 5. update the KL coefficient, log,
checkpoint. See `rlhf.ppo.core` for the maths and `rlhf.ppo.model` for the shared base.

Several processes (`accelerate launch`): each samples its own slice of prompts and keeps a full
model copy; gradients are averaged across processes before every optimiser step (an explicit
all-reduce of the trainable parameters' gradients: a step has two backward passes through
different adapters, which DDP's wrapper does not model, and LoRA gradients are small), and
logged metrics are averaged too. The main process writes files.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlhf.ppo import core
from rlhf.ppo.checkpoint import CheckpointError, checkpoint_dir, load_checkpoint, resolve_resume, restore_rng, save_checkpoint
from rlhf.ppo.config import PPOConfig
from rlhf.ppo.model import AdapterSettings, PolicyValueModel, base_model_path, build_policy_value_model, portable_base_name
from rlhf.ppo.prompts import PPOPrompt, batch_indices, encode_prompts, load_ppo_prompts, prompt_for_reward
from rlhf.ppo.reward import RewardDirectory, RewardError, checked_scores, load_reward_function, value_head_init_weight
from rlhf.ppo.rollout import Advantages, PhaseTimer, Rollout, collect_rollout, compute_advantages
from rlhf.progress import Cancelled, NullReporter, Reporter, check_stop
from rlhf.redact import redact


class PPOError(RuntimeError):
    """A PPO run that had to stop; the message says why and what was kept."""


class SelfCheckError(PPOError):
    """The start-up check found the training forward pass disagreeing with the sampler."""


class NonFiniteLossError(PPOError):
    """A loss or gradient became NaN/inf; no optimiser step was taken and nothing was saved."""


@dataclass
class PPOResult:
    """What a finished run produced. `output_dir` is also a PEFT adapter dir (`resolve_model` loads it)."""

    output_dir: Path
    iterations: int
    metrics: list[dict[str, float]]
    samples: list[dict[str, Any]]
    lineage: dict[str, Any]
    checkpoint: Path | None

    @property
    def final_metrics(self) -> dict[str, float]:
        return self.metrics[-1] if self.metrics else {}


@dataclass
class PPORun:
    """The pieces of one run, built once by `setup_run`; `run_iteration` advances it by one iteration."""

    config: PPOConfig
    accelerator: Any
    device: torch.device
    tokenizer: Any
    prompts: list[PPOPrompt]
    prompt_ids: list[list[int]]
    truncated_prompts: int
    reward: Any
    model: PolicyValueModel
    optimizer: torch.optim.Optimizer
    scheduler: Any
    kl: core.KLController
    base_name: str
    base_path: str
    start_iteration: int = 0
    resumed_from: Path | None = None
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def world(self) -> int:
        return self.accelerator.num_processes


# --------------------------------------------------------------------------- entry point


def train_ppo(config: PPOConfig, *, reporter: Reporter | None = None, reward_function=None) -> PPOResult:
    """Run PPO as configured and write the policy adapter, lineage.json, metrics and samples to `config.out`.

    `reward_function` (a `rlhf.ppo.reward.RewardFunction`) replaces loading `config.reward`.
    Polls `reporter.should_stop()` between iterations: on cancel it saves a checkpoint of the
    finished iterations and raises `Cancelled`. Raises PPOError subclasses (self-check,
    non-finite loss), RewardError, PromptError, CheckpointError with messages naming the cause.
    """
    reporter = reporter or NullReporter()
    config.validate()
    run = setup_run(config, reporter, reward_function)
    out = Path(config.out)
    samples_before = _samples_before(run, reporter)

    last_checkpoint = run.resumed_from
    finished = run.start_iteration
    timer = PhaseTimer()
    try:
        while finished < config.total_iterations:
            _check_stop(run, reporter)
            metrics = run_iteration(run, finished, timer, self_check=config.self_check and finished == run.start_iteration)
            finished += 1
            run.history.append(metrics)
            _report(run, reporter, finished, metrics)
            if finished == config.total_iterations or (config.checkpoint_every and finished % config.checkpoint_every == 0):
                last_checkpoint = _save(run, finished, metrics)
    except Cancelled:
        if run.history and (last_checkpoint is None or last_checkpoint != checkpoint_dir(out, finished)):
            last_checkpoint = _save(run, finished, run.history[-1])
        reporter.log(f"cancelled after {finished} iterations; checkpoint: {last_checkpoint}")
        raise
    except NonFiniteLossError as exc:
        kept = str(last_checkpoint) if last_checkpoint else "none (no checkpoint was saved before)"
        raise NonFiniteLossError(f"{exc}; no step was taken for it and nothing was saved; last good checkpoint: {kept}") from None

    samples = _samples_after(run, samples_before, reporter)
    lineage = _write_outputs(run, samples)
    end_distributed(run)
    return PPOResult(out, config.total_iterations, _read_history(out), samples, lineage, last_checkpoint)


def end_distributed(run: PPORun) -> None:
    """Under torchrun, take the process group down once every process is done: left to the interpreter's
    exit, gloo's threads were sometimes destroyed while still joinable and the process aborted
    ("terminate called without an active exception") after a run that had finished and saved."""
    if run.world > 1:
        run.accelerator.wait_for_everyone()
        run.accelerator.end_training()


# --------------------------------------------------------------------------- setup


def _make_accelerator(config: PPOConfig):
    from accelerate import Accelerator

    cpu = config.device is not None and torch.device(config.device).type == "cpu"
    return Accelerator(cpu=cpu)


def _check_stop(run: PPORun, reporter: Reporter) -> None:
    """`check_stop`, agreed across processes (any process asked to stop → all stop together)."""
    if run.world == 1:
        check_stop(reporter)
        return
    flag = torch.tensor([1.0 if reporter.should_stop() else 0.0], device=run.device)
    if run.accelerator.reduce(flag, reduction="sum").item() > 0:
        raise Cancelled("cancelled")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def setup_run(config: PPOConfig, reporter: Reporter | None = None, reward_function=None) -> PPORun:
    """Load prompts, tokenizer, model (+ reward), optimiser and schedule; restore a checkpoint if asked."""
    reporter = reporter or NullReporter()
    from rlhf.models import load_tokenizer, resolve_model

    accelerator = _make_accelerator(config)
    if accelerator.num_processes > 1 or config.device is None:
        device = accelerator.device
    else:
        device = torch.device(config.device)
    # Same seed on every process while the adapters and the value head are initialised (they
    # must start identical); each process gets its own sampling stream at the end of setup.
    _seed_everything(config.seed)

    source = resolve_model(config.policy)
    tokenizer = load_tokenizer(source, padding_side="left")
    prompts = load_ppo_prompts(config.prompts, database_url=config.database_url)
    encoded = encode_prompts(
        prompts, tokenizer, max_length=config.max_prompt_length, truncate=config.truncate_prompts, chat_template=config.chat_template
    )
    if encoded.truncated:
        reporter.log(f"left-truncated {encoded.truncated} of {len(prompts)} prompts to {config.max_prompt_length} tokens")

    base_path = base_model_path(source)
    reward_dir = None
    if reward_function is None:
        if not config.reward:
            raise RewardError("no reward model given (config field 'reward')")
        reward_dir = RewardDirectory(config.reward)
    head = value_head_init_weight(reward_function or reward_dir, base_path, config.value_head_init)

    model = build_policy_value_model(
        source,
        load_in_4bit=config.load_in_4bit,
        device=device,
        adapters=AdapterSettings(config.lora_r, config.lora_alpha, config.lora_target_modules, config.value_adapter_layers),
        value_head_weight=head,
    )
    if reward_dir is not None:
        problem = reward_dir.sharing_problem(base_path, tokenizer, config.load_in_4bit) if config.reward_on_policy_base else "reward_on_policy_base is off"
        reward_function = load_reward_function(
            reward_dir, device=device, batch_size=config.reward_batch_size, share_with=model if problem is None else None
        )
        reporter.log(
            "reward model: LoRA adapter on the policy's base (no second copy of the base)"
            if problem is None else f"reward model: loaded on its own base ({problem})"
        )
    probe = encoded.token_ids[: min(2, len(encoded.token_ids))]
    from rlhf.generate import left_pad

    probe_ids, probe_mask = left_pad(probe, tokenizer.pad_token_id)
    shortcut = model.validate_value_shortcut(probe_ids.to(device), probe_mask.to(device))
    reporter.log(
        f"critic: value adapter on the top {model.value_layers} of {model.num_layers} layers"
        + ("" if shortcut else " (short path did not match a full forward on this architecture: using the full forward)")
        + f"; value head from {'the reward score head' if head is not None else 'a random init'}"
    )

    optimizer = torch.optim.Adam(model.trainable_parameters(), lr=config.learning_rate, eps=config.adam_eps)
    total = config.total_iterations
    schedule = (lambda step: max(0.0, 1.0 - step / total)) if config.anneal_lr else (lambda step: 1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    kl = core.KLController(config.kl_coef, config.adaptive_kl, config.kl_target, config.kl_horizon)

    run = PPORun(
        config=config, accelerator=accelerator, device=device, tokenizer=tokenizer, prompts=prompts,
        prompt_ids=encoded.token_ids, truncated_prompts=encoded.truncated, reward=reward_function, model=model,
        optimizer=optimizer, scheduler=scheduler, kl=kl, base_name=portable_base_name(config.policy, source),
        base_path=base_path,
    )
    _seed_everything(config.seed + accelerator.process_index)
    checkpoint = resolve_resume(config.out, config.resume)
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, model=model, optimizer=optimizer, scheduler=scheduler, kl_controller=kl, accelerator=accelerator)
        if state.iteration > total:
            raise CheckpointError(f"checkpoint {str(checkpoint)!r} is at iteration {state.iteration}, past total_iterations={total}")
        run.start_iteration, run.resumed_from = state.iteration, checkpoint
        _truncate_history(Path(config.out), state.iteration, run.main)
        # Last: restoring the RNG after everything that drew from it during setup makes the
        # next iteration draw exactly what the uninterrupted run drew.
        if not restore_rng(checkpoint, accelerator.process_index):
            reporter.log(f"checkpoint has no RNG state for process {accelerator.process_index}: sampling differs from the original run")
        reporter.log(f"resumed from {checkpoint} at iteration {state.iteration}")
    return run


# --------------------------------------------------------------------------- one iteration


def run_iteration(run: PPORun, iteration: int, timer: PhaseTimer | None = None, *, self_check: bool = False) -> dict[str, float]:
    """Roll out, compute advantages, update; returns the iteration's metrics (`iteration` = number done)."""
    timer = timer or PhaseTimer()
    config = run.config
    rows = batch_indices(
        len(run.prompt_ids), iteration, config.batch_size, seed=config.seed,
        rank=run.accelerator.process_index, world_size=run.world,
    )
    with timer.phase("iteration"):
        rollout = collect_rollout(
            run.model, run.tokenizer, [run.prompt_ids[i] for i in rows], [prompt_for_reward(run.prompts[i]) for i in rows],
            run.reward, response_length=config.response_length, temperature=config.temperature,
            missing_eos_penalty=config.missing_eos_penalty, generation_batch_size=config.generation_batch_size,
            forward_batch_size=config.forward_batch_size, timer=timer,
        )
        advantages = compute_advantages(
            rollout, kl_coef=run.kl.value, kl_estimator=config.kl_estimator, gamma=config.gamma, lam=config.lam,
            whiten_rewards=config.whiten_rewards,
        )
        with timer.phase("train"):
            update = ppo_update(run, rollout, advantages, self_check=self_check, iteration=iteration)
        lr = run.scheduler.get_last_lr()[0]
        run.scheduler.step()
    metrics = _iteration_metrics(run, rollout, advantages, update, timer.reset(), lr)
    metrics["iteration"] = iteration + 1
    metrics["episodes"] = (iteration + 1) * config.batch_size * run.world
    run.kl.update(metrics["objective/kl"], config.batch_size * run.world)
    return metrics


def ppo_update(run: PPORun, rollout: Rollout, adv: Advantages, *, self_check: bool, iteration: int) -> dict[str, list[float]]:
    """`ppo_epochs` passes over the rollout in shuffled mini-batches; one optimiser step per mini-batch.

    The policy's and the critic's backward passes run one after the other (their activations
    are never alive together), accumulating into disjoint parameters; then gradients are
    averaged across processes, clipped by global norm, and applied.
    """
    config, model, optimizer = run.config, run.model, run.optimizer
    params = model.trainable_parameters()
    stats: dict[str, list[float]] = {k: [] for k in (
        "loss/policy", "loss/value", "policy/clipfrac", "policy/approx_kl", "policy/entropy", "policy/ratio",
        "value/clipfrac", "train/grad_norm")}
    batch, length = rollout.responses.size(0), rollout.response_length
    for epoch in range(config.ppo_epochs):
        order = torch.randperm(batch).to(rollout.responses.device)
        for mb_index, start in enumerate(range(0, batch, config.mini_batch_size)):
            mb_inds = order[start : start + config.mini_batch_size]
            mb_mask = rollout.mask[mb_inds]
            where = f"iteration {iteration + 1}, epoch {epoch + 1}, mini-batch {mb_index + 1}"

            logits = model.policy_logits(rollout.query_responses[mb_inds], rollout.attention_mask[mb_inds], length)
            new_logprobs = core.logprobs_from_logits(logits, rollout.responses[mb_inds], config.temperature)
            with torch.no_grad():
                entropy = core.masked_mean(core.entropy_from_logits(logits, config.temperature), mb_mask)
            del logits
            if self_check and epoch == 0 and mb_index == 0:
                _self_check(new_logprobs.detach(), rollout.logprobs[mb_inds], mb_mask, _self_check_tolerance(run))
            pg = core.policy_loss(new_logprobs, rollout.logprobs[mb_inds], adv.advantages[mb_inds], mb_mask, config.clip_range)
            _require_finite(pg.loss, "loss/policy", where)
            pg.loss.backward()
            del new_logprobs

            new_values = model.values(
                rollout.query_responses[mb_inds], rollout.attention_mask[mb_inds], length, rollout.features[mb_inds]
            )
            vf = core.value_loss(new_values, rollout.values[mb_inds], adv.returns[mb_inds], mb_mask, config.clip_range_value)
            _require_finite(vf.loss, "loss/value", where)
            (config.vf_coef * vf.loss).backward()

            _average_gradients(run, params)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            _require_finite(grad_norm, "gradient norm", where)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

            stats["loss/policy"].append(pg.loss.item())
            stats["loss/value"].append(vf.loss.item())
            stats["policy/clipfrac"].append(pg.clipfrac.item())
            stats["policy/approx_kl"].append(pg.approx_kl.item())
            stats["policy/entropy"].append(entropy.item())
            stats["policy/ratio"].append(pg.ratio.item())
            stats["value/clipfrac"].append(vf.clipfrac.item())
            stats["train/grad_norm"].append(float(grad_norm))
    return stats


def _self_check(new_logprobs: torch.Tensor, sampler_logprobs: torch.Tensor, mask: torch.Tensor, tolerance: float) -> None:
    """Before any update, the training forward must reproduce the sampler: ratio 1, KL 0.

    A mismatch means the two passes compute different distributions: temperature missing from
    one of them, position ids not following the left padding, dropout left on, a padding mask
    off by one. PPO would then optimise a biased objective without any visible error.
    """
    log_ratio = torch.where(mask, new_logprobs - sampler_logprobs, torch.zeros_like(new_logprobs))
    mean_diff = core.masked_mean(log_ratio.abs(), mask).item()
    ratio = core.masked_mean(torch.exp(log_ratio), mask).item()
    kl = core.masked_mean(core.kl_estimators(torch.zeros_like(log_ratio), log_ratio).k3, mask).item()
    if not math.isfinite(mean_diff) or mean_diff > tolerance:
        raise SelfCheckError(
            "PPO self-check failed: on the first mini-batch, before any update, the policy's log-probs differ from "
            f"the sampler's by {mean_diff:.3g} nats/token on average (mean ratio {ratio:.4f}, should be 1; "
            f"KL(sampler || policy) {kl:.3g}, should be 0; tolerance {tolerance:g}). The training forward pass "
            "does not compute the distribution that was sampled: check the temperature (logits / T in every "
            "log-prob), position ids for left-padded prompts, dropout, and the response mask."
        )


def _self_check_tolerance(run: PPORun) -> float:
    if run.config.self_check_tolerance is not None:
        return run.config.self_check_tolerance
    from rlhf.models import compute_dtype

    return 1e-3 if compute_dtype(run.device) == torch.float32 else 5e-2


def _require_finite(value: torch.Tensor, name: str, where: str) -> None:
    if not torch.isfinite(value).all():
        raise NonFiniteLossError(f"non-finite {name} ({float(value.detach())}) at {where}")


def _average_gradients(run: PPORun, params: list[torch.nn.Parameter]) -> None:
    """Mean of each trainable parameter's gradient over processes (one flat all-reduce)."""
    if run.world == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    flat = run.accelerator.reduce(flat, reduction="mean")
    offset = 0
    for param, grad in zip(params, grads):
        n = grad.numel()
        param.grad = flat[offset : offset + n].view_as(param).clone()
        offset += n


def _iteration_metrics(
    run: PPORun, rollout: Rollout, adv: Advantages, update: dict[str, list[float]], times: dict[str, float], lr: float
) -> dict[str, float]:
    """The logged figures of one iteration, averaged over processes. Keys grouped as `objective/…`."""
    mask = rollout.mask
    per_row = lambda t: (t * mask).sum(1).mean()  # noqa: E731 - a sum over each response, averaged over rows
    local = {
        "objective/kl": per_row(adv.kl),
        "objective/kl_k3": per_row(adv.kl_k3),
        "objective/entropy": per_row(-rollout.logprobs),
        "objective/non_score_reward": per_row(adv.non_score_rewards),
        "objective/score": rollout.scores.mean(),
        "objective/raw_score": rollout.raw_scores.mean(),
        "objective/rlhf_reward": rollout.scores.mean() + per_row(adv.non_score_rewards),
        "response/length": rollout.lengths.float().mean(),
        "response/eos_rate": rollout.has_eos.float().mean(),
        "value/mean": core.masked_mean(rollout.values, mask),
        "value/returns_mean": core.masked_mean(adv.returns, mask),
    }
    values = {k: float(v) for k, v in local.items()}
    values.update({k: float(np.mean(v)) for k, v in update.items() if v})
    values.update({f"time/{k}": v for k, v in times.items()})
    if run.world > 1:
        keys = sorted(values)
        stacked = torch.tensor([values[k] for k in keys], device=run.device, dtype=torch.float64)
        stacked = run.accelerator.reduce(stacked, reduction="mean")
        values = dict(zip(keys, stacked.tolist()))
    values["objective/kl_coef"] = run.kl.value
    values["train/lr"] = lr
    return values


def _report(run: PPORun, reporter: Reporter, step: int, metrics: dict[str, float]) -> None:
    reporter.metrics(step, metrics)
    reporter.progress(
        step, run.config.total_iterations,
        f"score {metrics['objective/score']:.3f} kl {metrics['objective/kl']:.2f} len {metrics['response/length']:.1f}",
    )
    if run.main:
        out = Path(run.config.out)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "metrics.jsonl", "a") as handle:
            handle.write(json.dumps(metrics, sort_keys=True) + "\n")


def _read_history(out: Path) -> list[dict[str, float]]:
    path = out / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _truncate_history(out: Path, iteration: int, main: bool) -> None:
    """On resume, forget logged iterations after the checkpoint (the resumed run redoes them)."""
    if not main:
        return
    kept = [row for row in _read_history(out) if row.get("iteration", 0) <= iteration]
    path = out / "metrics.jsonl"
    if path.exists():
        _atomic_write(path, "".join(json.dumps(row, sort_keys=True) + "\n" for row in kept))


def _save(run: PPORun, done: int, metrics: dict[str, float]) -> Path:
    return save_checkpoint(
        run.config.out, done, model=run.model, optimizer=run.optimizer, scheduler=run.scheduler, kl_controller=run.kl,
        config=redact(run.config.to_dict()), metrics=metrics, base_model_name=run.base_name, accelerator=run.accelerator,
        keep=run.config.keep_checkpoints,
    )


# --------------------------------------------------------------------------- samples and outputs


def _sample_table(run: PPORun) -> list[dict[str, Any]]:
    """Greedy responses and their scores for the first `sample_count` prompts (no RNG drawn)."""
    from rlhf.generate import left_pad

    count = min(run.config.sample_count, len(run.prompts))
    if count == 0:
        return []
    ids, mask = left_pad(run.prompt_ids[:count], run.tokenizer.pad_token_id)
    responses, _ = run.model.generate(
        ids.to(run.device), mask.to(run.device), max_new_tokens=run.config.sample_max_new_tokens or run.config.response_length,
        temperature=1.0, eos_token_id=run.tokenizer.eos_token_id, pad_token_id=run.tokenizer.pad_token_id, greedy=True,
    )
    cut = core.truncate_after_eos(responses, run.tokenizer.eos_token_id, run.tokenizer.pad_token_id)
    texts = [run.tokenizer.decode(row[: int(n)].tolist(), skip_special_tokens=True) for row, n in zip(cut.tokens.cpu(), cut.lengths.cpu())]
    prompts = [prompt_for_reward(p) for p in run.prompts[:count]]
    scores = checked_scores(run.reward.score(prompts, texts), count, run.reward).tolist()
    return [{"prompt": _prompt_text(p), "response": t, "score": s} for p, t, s in zip(run.prompts[:count], texts, scores)]


def _prompt_text(item: PPOPrompt) -> str:
    if isinstance(item.prompt, str):
        return item.prompt
    return " / ".join(f"{m['role']}: {m['content']}" for m in item.prompt)


def _samples_before(run: PPORun, reporter: Reporter) -> list[dict[str, Any]]:
    path = Path(run.config.out) / "samples_before.jsonl"
    if run.start_iteration > 0 and path.is_file():
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    with torch.no_grad():
        rows = _sample_table(run)
    if run.main:
        Path(run.config.out).mkdir(parents=True, exist_ok=True)
        _atomic_write(path, "".join(json.dumps(r) + "\n" for r in rows))
    return rows


def _samples_after(run: PPORun, before: list[dict[str, Any]], reporter: Reporter) -> list[dict[str, Any]]:
    with torch.no_grad():
        after = _sample_table(run)
    table = [
        {"prompt": b["prompt"], "before": b["response"], "score_before": b["score"], "after": a["response"], "score_after": a["score"]}
        for b, a in zip(before, after)
    ]
    markdown = format_samples(table)
    for line in markdown.splitlines():
        reporter.log(line)
    if run.main:
        out = Path(run.config.out)
        _atomic_write(out / "samples.jsonl", "".join(json.dumps(r) + "\n" for r in table))
        _atomic_write(out / "samples.md", markdown + "\n")
    return table


def format_samples(rows: list[dict[str, Any]], width: int = 160) -> str:
    """A markdown table of sample responses before and after training, with their scores."""

    def cell(text: str) -> str:
        text = " ".join(str(text).split()).replace("|", "\\|")
        return text if len(text) <= width else text[: width - 1] + "…"

    lines = ["| prompt | before | score | after | score |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {cell(r['prompt'])} | {cell(r['before'])} | {r['score_before']:.3f} | {cell(r['after'])} | {r['score_after']:.3f} |"
        )
    return "\n".join(lines)


def _write_outputs(run: PPORun, samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The final policy adapter (the output dir itself loads with `resolve_model`) and lineage.json."""
    from rlhf import __version__
    from rlhf.hashing import content_hash, file_sha256

    out = Path(run.config.out)
    lineage: dict[str, Any] = {}
    recorded_config = redact(run.config.to_dict())  # database_url may carry a password (issue 16, item 4)
    if run.main:
        staging = out / ".final.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        run.model.save_policy_adapter(staging, run.base_name)
        describe = getattr(run.reward, "describe", None)
        history = _read_history(out)
        lineage = {
            "kind": "ppo",
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "rlhf_version": __version__,
            "base_model": run.base_name,
            "base_model_path": run.base_path,
            "policy_start": run.config.policy,
            "reference": "frozen copy of the starting adapter" if run.model.reference_adapter else "base model (adapter disabled)",
            "reward": describe() if callable(describe) else {"kind": type(run.reward).__name__},
            "prompts": {
                "source": run.config.prompts,
                "count": len(run.prompts),
                "content_hash": content_hash([p.prompt for p in run.prompts]),
                "left_truncated": run.truncated_prompts,
            },
            "config": recorded_config,
            "config_hash": content_hash(recorded_config),
            "iterations": run.config.total_iterations,
            "processes": run.world,
            "adapter_sha256": file_sha256(staging / "adapter_model.safetensors"),
            "final_metrics": history[-1] if history else {},
        }
        lineage = redact(lineage)  # and the reward's and prompts' descriptions, which name paths and URLs
        (staging / "lineage.json").write_text(json.dumps(lineage, indent=2, sort_keys=True, default=str))
        # adapter_config.json moves last: its presence is what makes the directory a loadable adapter.
        for name in ("adapter_model.safetensors", "lineage.json", "adapter_config.json"):
            os.replace(staging / name, out / name)
        shutil.rmtree(staging, ignore_errors=True)
    if run.world > 1:
        run.accelerator.wait_for_everyone()
    return lineage


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
