"""`rlhf ppo` and `rlhf dpo`: improve a policy against a reward model (PPO) or on preferences (DPO).

Every field of `PPOConfig` / `DPORunConfig` is an option (its help is the field's docstring),
and `--config file.json` supplies any of them; options given on the command line win over
the file. torch is imported only inside the command bodies.

Several GPUs: `accelerate launch --multi_gpu --num_processes 4 "$(which rlhf)" ppo ...` (see the README).
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from rlhf.cli import app, fail
from rlhf.dpo import DPORunConfig
from rlhf.configdoc import field_docs, field_types
from rlhf.ppo.config import PPOConfig

# Short aliases the examples use.
ALIASES = {"load_in_4bit": ["--4bit"], "data": ["--data"]}
ENVVARS = {"database_url": "RLHF_DATABASE_URL"}


def _none_or(kind: type, raw: str, flag: str) -> Any:
    if raw.lower() in ("none", "null", ""):
        return None
    try:
        return kind(raw)
    except ValueError:
        raise typer.BadParameter(f"expected {kind.__name__} or 'none', got {raw!r}", param_hint=flag) from None


def config_command(cls: type, name: str, run: Callable[[Any], None], summary: str) -> None:
    """Register `rlhf <name>` with one option per field of the dataclass `cls`, plus --config.

    Options default to "not given" so that a --config file's values survive; the dataclass
    defaults apply last. An optional field (`int | None`) takes the word `none`.
    """
    docs, types_ = field_docs(cls), field_types(cls)
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    parameters = [
        inspect.Parameter(
            "config_file", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
            default=typer.Option(None, "--config", help="JSON file of field values (command-line options win)."),
        )
    ]
    converters: dict[str, Callable[[Any], Any]] = {}
    for field_name, (kind, optional) in types_.items():
        flag = "--" + field_name.replace("_", "-")
        help_text = f"{docs.get(field_name, '')} [default: {defaults[field_name]!r}]"
        if kind is bool:
            decls = [f"{flag}/--no-{flag[2:]}", *ALIASES.get(field_name, [])]
            annotation: Any = Optional[bool]
        elif optional:
            decls = [flag, *ALIASES.get(field_name, [])]
            annotation = Optional[str]
            converters[field_name] = lambda raw, kind=kind, flag=flag: _none_or(kind, raw, flag)
        else:
            decls = [flag, *ALIASES.get(field_name, [])]
            annotation = Optional[kind]
        option = typer.Option(None, *dict.fromkeys(decls), help=help_text, envvar=ENVVARS.get(field_name), show_default=False)
        parameters.append(inspect.Parameter(field_name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=option))

    def command(**given: Any) -> None:
        config_file = given.pop("config_file")
        try:
            config = cls.from_json(config_file) if config_file else cls()
            values = {k: converters.get(k, lambda v: v)(v) for k, v in given.items() if v is not None}
            config = dataclasses.replace(config, **values)
            config.validate()
        except ValueError as exc:
            raise fail(str(exc)) from None
        run(config)

    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__doc__ = summary
    command.__name__ = f"{name}_command"
    app.command(name, help=summary)(command)


# --------------------------------------------------------------------------- ppo


def _run_ppo(config: PPOConfig) -> None:
    from rlhf.models import ModelNotFoundError
    from rlhf.ppo.checkpoint import CheckpointError
    from rlhf.ppo.model import ModelSetupError
    from rlhf.ppo.prompts import PromptError
    from rlhf.ppo.reward import RewardError
    from rlhf.ppo.trainer import PPOError, train_ppo
    from rlhf.progress import ConsoleReporter

    if not config.prompts:
        raise fail("--prompts is required (a project name or id, or a JSONL file)")
    if not config.reward:
        raise fail("--reward is required (a reward model directory from `rlhf train-reward`)")
    import os

    from rlhf.progress import NullReporter

    # Under `accelerate launch` / torchrun only the first process talks to the console.
    main_process = int(os.environ.get("RANK", "0")) == 0
    reporter = ConsoleReporter("ppo", unit="iter") if main_process else NullReporter()
    try:
        result = train_ppo(config, reporter=reporter)
    except (PromptError, RewardError, CheckpointError, ModelNotFoundError, ModelSetupError, PPOError, ValueError) as exc:
        getattr(reporter, "close", lambda: None)()
        raise fail(str(exc)) from None
    getattr(reporter, "close", lambda: None)()
    if not main_process:
        return
    final = result.final_metrics
    typer.echo(
        f"PPO done: {result.iterations} iterations; score {final.get('objective/score', float('nan')):.3f}, "
        f"KL {final.get('objective/kl', float('nan')):.2f} nats; policy adapter in {result.output_dir} "
        f"(samples: {result.output_dir / 'samples.md'})"
    )


config_command(
    PPOConfig, "ppo", _run_ppo,
    "Improve a policy with PPO against a reward model (QLoRA: policy, value and reference share one base).",
)


# --------------------------------------------------------------------------- dpo


def _run_dpo(config: DPORunConfig) -> None:
    from rlhf.dpo import DPOError, train_dpo
    from rlhf.models import ModelNotFoundError
    from rlhf.progress import ConsoleReporter
    from rlhf.reward.data import RewardDataError

    reporter = ConsoleReporter("dpo", unit="step")
    try:
        result = train_dpo(config, reporter=reporter)
    except (DPOError, RewardDataError, ModelNotFoundError, ValueError) as exc:
        reporter.close()
        raise fail(str(exc)) from None
    reporter.close()
    typer.echo(f"DPO done: {result.steps} steps, train loss {result.metrics.get('train_loss', float('nan')):.4f}; adapter in {result.output_dir}")


config_command(DPORunConfig, "dpo", _run_dpo, "Train a policy on preference pairs with DPO (TRL DPOTrainer, LoRA, optional 4-bit base).")
