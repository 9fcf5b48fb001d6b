"""Pure mappings between what annotators see and press and what the engine stores.

Pairwise: the page shows the pair as "A" (left) and "B" (right), in the order the engine chose
for this annotator (`TaskView.shown_left` says which of the task's responses, 'a' or 'b', is on
the left). The display letters are positions, not the task's terms: choosing the left response
when the left one is the task's B stores choice 'b'. `to_task_terms` / `to_display` convert.

Rating: the k-th point of a scale is pressed with a digit key (see `scale_keys`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional


@dataclass(frozen=True)
class DisplayChoice:
    """One button of the compare page."""

    id: str
    """Stable identifier, also the session-state value."""
    label: str
    key: str
    """Keyboard shortcut (a digit)."""
    side: Optional[str]
    """'left', 'right', or None for tie / both bad."""
    strength: int
    """1 better, 2 much better; 0 for tie and both bad."""
    neutral: Optional[str] = None
    """'tie' or 'both_bad' when `side` is None."""


DISPLAY_CHOICES: tuple[DisplayChoice, ...] = (
    DisplayChoice("left_much", "A much better", "1", "left", 2),
    DisplayChoice("left", "A better", "2", "left", 1),
    DisplayChoice("tie", "Tie", "3", None, 0, "tie"),
    DisplayChoice("right", "B better", "4", "right", 1),
    DisplayChoice("right_much", "B much better", "5", "right", 2),
    DisplayChoice("both_bad", "Both bad", "0", None, 0, "both_bad"),
)
CHOICES_BY_ID: Mapping[str, DisplayChoice] = {c.id: c for c in DISPLAY_CHOICES}
CHOICES_BY_KEY: Mapping[str, DisplayChoice] = {c.key: c for c in DISPLAY_CHOICES}


def _other(side: str) -> str:
    return "b" if side == "a" else "a"


def to_task_terms(display_id: str, shown_left: str) -> tuple[str, int]:
    """(choice, strength) in the task's terms for a display choice, given which response was on the left.

    >>> to_task_terms("left", "b")
    ('b', 1)
    >>> to_task_terms("right_much", "b")
    ('a', 2)
    """
    if shown_left not in ("a", "b"):
        raise ValueError(f"shown_left must be 'a' or 'b', got {shown_left!r}")
    choice = CHOICES_BY_ID[display_id]
    if choice.side is None:
        return choice.neutral, 0
    response = shown_left if choice.side == "left" else _other(shown_left)
    return response, choice.strength


def to_display(choice: str, strength: int, shown_left: str) -> str:
    """The display choice id for a stored (choice, strength) seen with `shown_left` (prefills edits)."""
    if choice in ("tie", "both_bad"):
        return choice
    if choice not in ("a", "b") or shown_left not in ("a", "b"):
        raise ValueError(f"cannot display choice {choice!r} with shown_left {shown_left!r}")
    side = "left" if choice == shown_left else "right"
    return side + ("_much" if strength == 2 else "")


def scale_keys(low: int, high: int) -> dict[int, str]:
    """Digit key for each point of a rating scale [low, high]; points beyond ten get none.

    Scales within 0–9 use the value itself (a 1–7 scale is keys 1–7). Other scales number
    their points: the first is 1, the ninth 9, the tenth 0 (a 1–10 scale: 10 is key 0).
    """
    if low > high:
        raise ValueError(f"empty scale [{low}, {high}]")
    if 0 <= low and high <= 9:
        return {value: str(value) for value in range(low, high + 1)}
    keys: dict[int, str] = {}
    for position, value in enumerate(range(low, high + 1), start=1):
        if position > 10:
            break
        keys[value] = str(position % 10)
    return keys


def scale_point_label(value: int, labels: Mapping[str, str]) -> str:
    """A scale point's button text: the value, with its anchor label when the rubric has one."""
    label = labels.get(str(value))
    return f"{value} · {label}" if label else str(value)


def next_focus(dimensions: list[str], scored: Mapping[str, int], current: int) -> int:
    """The rubric dimension to focus after scoring the one at `current`.

    The next unscored dimension after `current` (wrapping round); when every dimension is
    scored, the one after `current`, stopping at the last (Enter then submits).
    """
    n = len(dimensions)
    if n == 0:
        return 0
    for step in range(1, n + 1):
        index = (current + step) % n
        if dimensions[index] not in scored:
            return index
    return min(current + 1, n - 1)
