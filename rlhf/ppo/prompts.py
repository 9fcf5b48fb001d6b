"""Prompts for PPO: read from a project or a JSONL file, tokenised once, drawn in a resumable order.

A prompt is plain text or a chat (list of messages), as everywhere in RLHF Studio; files are
read by `rlhf.generate.load_prompts` (same format and errors as `rlhf generate`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlhf.generate import PromptInput, PromptsFileError, load_prompts, render_prompt


class PromptError(ValueError):
    """Prompts that cannot be used (missing project, empty, too long); the message names them."""


@dataclass(frozen=True)
class PPOPrompt:
    """One training prompt and where it came from (for error messages)."""

    prompt: PromptInput
    where: str


def load_ppo_prompts(source: str, *, database_url: str | None = None) -> list[PPOPrompt]:
    """Prompts from a JSONL/.txt file (if `source` is a file) or else from the project it names.

    A path-looking `source` that does not exist is an error about the file, not a project
    lookup, so a typo in a file name is reported as such.
    """
    path = Path(source)
    if path.is_file() or path.suffix.lower() in (".jsonl", ".json", ".txt") or "/" in source:
        try:
            specs = load_prompts(path)
        except PromptsFileError as exc:
            raise PromptError(str(exc)) from None
        return [PPOPrompt(spec.prompt, f"{path}:{spec.line}") for spec in specs]
    return _project_prompts(source, database_url)


def _project_prompts(project: str, database_url: str | None) -> list[PPOPrompt]:
    from sqlmodel import Session, select

    from rlhf.db import make_engine
    from rlhf.frames import ProjectNotFound, project_id_of
    from rlhf.schema import Prompt

    engine = make_engine(database_url)
    try:
        try:
            project_id = project_id_of(engine, project)
        except ProjectNotFound:
            raise PromptError(f"prompts {project!r}: no such file, and no project of that name or id") from None
        with Session(engine) as session:
            rows = session.exec(select(Prompt).where(Prompt.project_id == project_id).order_by(Prompt.id)).all()
            prompts = [PPOPrompt(row.messages if row.messages else row.text, f"project {project!r} prompt {row.id}") for row in rows]
    finally:
        engine.dispose()
    if not prompts:
        raise PromptError(f"project {project!r} has no prompts")
    return prompts


@dataclass
class EncodedPrompts:
    """Token ids of each prompt as the policy sees it (chat template applied), and the truncations made."""

    token_ids: list[list[int]]
    truncated: int


def encode_prompts(
    prompts: list[PPOPrompt], tokenizer, *, max_length: int, truncate: bool, chat_template: bool = True
) -> EncodedPrompts:
    """Render and tokenise each prompt; refuse (or, with `truncate`, left-truncate) those over `max_length`.

    Left truncation keeps the end of the prompt, next to where the response starts. Refusal
    names up to three offending prompts and their lengths.
    """
    encoded: list[list[int]] = []
    too_long: list[tuple[str, int]] = []
    use_template = None if chat_template else False
    for item in prompts:
        text, templated = render_prompt(tokenizer, item.prompt, use_chat_template=use_template)
        ids = tokenizer(text, add_special_tokens=not templated)["input_ids"]
        if not ids:
            raise PromptError(f"{item.where}: the prompt encodes to no tokens")
        if len(ids) > max_length:
            too_long.append((item.where, len(ids)))
            ids = ids[-max_length:]
        encoded.append(list(ids))
    if too_long and not truncate:
        shown = "; ".join(f"{where} has {n} tokens" for where, n in too_long[:3])
        raise PromptError(
            f"{len(too_long)} prompt(s) longer than max_prompt_length={max_length} tokens ({shown}); "
            "raise max_prompt_length or pass --truncate-prompts to keep their last tokens"
        )
    return EncodedPrompts(encoded, len(too_long))


def batch_indices(num_prompts: int, iteration: int, batch_size: int, *, seed: int, rank: int = 0, world_size: int = 1) -> list[int]:
    """The prompts of one process in one iteration: a pure function of its arguments.

    Iterations walk through successive shuffled passes over the prompts (a new permutation per
    pass, seeded by `seed` and the pass number); process `rank` takes its slice of each global
    batch. Being stateless, it needs nothing saved for an exact resume.
    """
    global_batch = batch_size * world_size
    start = iteration * global_batch + rank * batch_size
    indices: list[int] = []
    cached: dict[int, list[int]] = {}
    for position in range(start, start + batch_size):
        epoch, offset = divmod(position, num_prompts)
        if epoch not in cached:
            generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            cached[epoch] = torch.randperm(num_prompts, generator=generator).tolist()
        indices.append(cached[epoch][offset])
    return indices


def prompt_for_reward(item: PPOPrompt) -> Any:
    """The prompt as the reward model was trained on it: TRL form (string or messages)."""
    return item.prompt
