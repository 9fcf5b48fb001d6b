"""Pure conversions behind the admin pages: rubric rows for `st.data_editor`, tag lists, label strings, import errors.

Validation of the values themselves is the backend's (`rlhf.projects.validate_settings` names
the field); these functions only turn form cells into the shapes it takes, and say which row
or part of a cell could not be read.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Optional

RUBRIC_COLUMNS = ("name", "question", "min", "max", "labels")

JUDGE_USE_LABELS = {
    "export": ("Export may use judges' labels", "Lets exports take labels from judge:NAME sources (people win where both labelled)."),
    "votes": ("Extra votes where a judge disagrees", "Lets an admin ask one more human vote on pairs whose human consensus a judge contradicts."),
    "suggestions": ("Show judge suggestions to annotators", "Compare and Rate show a judge's verdict; each annotation records whether one was shown (anchoring)."),
}
"""The Projects page's judge-use panel: {use: (checkbox label, help)} for each of rlhf.projects.JUDGE_USES."""


class FormError(ValueError):
    """A form cell cannot be read; the message names the row and column."""


def format_labels(labels: Optional[Mapping[str, str]]) -> str:
    """{"1": "Not at all", "7": "Completely"} → "1=Not at all; 7=Completely" (sorted by value)."""
    if not labels:
        return ""
    items = sorted(labels.items(), key=lambda kv: int(kv[0]) if str(kv[0]).lstrip("-").isdigit() else 0)
    return "; ".join(f"{key}={label}" for key, label in items)


def parse_labels(text: Any, where: str = "labels") -> dict[str, str]:
    """"1=Not at all; 7=Completely" → {"1": "Not at all", "7": "Completely"}; empty → {}."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return {}
    out: dict[str, str] = {}
    for part in str(text).split(";"):
        part = part.strip()
        if not part:
            continue
        key, sep, label = part.partition("=")
        if not sep or not key.strip() or not label.strip():
            raise FormError(f"{where}: {part!r} is not value=label")
        try:
            value = int(key.strip())
        except ValueError:
            raise FormError(f"{where}: {key.strip()!r} is not an integer scale value") from None
        out[str(value)] = label.strip()
    return out


def rubric_rows(rubric: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The stored rubric as editor rows (labels flattened to one text cell)."""
    return [
        {
            "name": d.get("name", ""),
            "question": d.get("question", ""),
            "min": d.get("min"),
            "max": d.get("max"),
            "labels": format_labels(d.get("labels")),
        }
        for d in rubric
    ]


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (isinstance(value, str) and not value.strip())


def _integer(value: Any, where: str) -> int:
    if _blank(value):
        raise FormError(f"{where}: missing")
    if isinstance(value, bool):
        raise FormError(f"{where}: must be an integer")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise FormError(f"{where}: {value!r} is not an integer") from None
    if not number.is_integer():
        raise FormError(f"{where}: {value!r} is not an integer")
    return int(number)


def rows_to_rubric(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Editor rows back to rubric dimensions; wholly empty rows (a half-added line) are dropped.

    Raises FormError naming `rubric row N.<column>` for a cell that cannot be read.
    """
    rubric = []
    for number, row in enumerate(rows, start=1):
        if all(_blank(row.get(column)) for column in RUBRIC_COLUMNS):
            continue
        where = f"rubric row {number}"
        name = row.get("name")
        if _blank(name):
            raise FormError(f"{where}.name: missing")
        dimension: dict[str, Any] = {
            "name": str(name).strip(),
            "min": _integer(row.get("min"), f"{where}.min"),
            "max": _integer(row.get("max"), f"{where}.max"),
        }
        question = row.get("question")
        if not _blank(question):
            dimension["question"] = str(question).strip()
        labels = parse_labels(row.get("labels"), f"{where}.labels")
        if labels:
            dimension["labels"] = labels
        rubric.append(dimension)
    return rubric


def parse_tags(text: Any) -> list[str]:
    """"unsafe, factual error" → ["unsafe", "factual error"] (blank items dropped, order kept)."""
    if _blank(text):
        return []
    return [tag.strip() for tag in str(text).split(",") if tag.strip()]


def import_error_text(message: str, temp_path: str, shown_name: str) -> str:
    """An importer error about the uploaded copy, naming the file as the admin uploaded it."""
    return message.replace(temp_path, shown_name)
