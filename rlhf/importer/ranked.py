"""Ranked records: a prompt's responses with the order a source gave them, read as external rankings (`--as-labels`).

A shape (a) record (`prompt` + `responses`) carries its ranking in one of three ways:
- `ranking` (or `rank`): "B > A = C" (letters name the responses in the listed order) or groups
  of 0-based indices / letters, best first: [[1], [0, 2]];
- `rank` on each response: its place, 1 = best, equal places tie;
- `"ranking": "listed"`: the responses are listed best first; a response with
  `"tied_with_previous": true` ties with the one before it.

Each becomes a `RankedIn` (groups of response content hashes); the writer stores it as one
`Ranking` of the external source user on the prompt's ranking task. A ranking that leaves out a
response, names one twice or names one not in the record is refused here (field `ranking`);
one whose responses are not the ranking task's is refused by the writer, naming the line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from rlhf.importer.errors import ImportFormatError
from rlhf.ranking import RankingError, parse_ranking


@dataclass
class RankedIn:
    """A source's ranking of one record's responses: groups of response hashes, best first, and where it was read."""

    groups: tuple[tuple[str, ...], ...]
    path: Optional[str] = None
    line: Optional[int] = None


def ranked_in(record: dict, raw_responses: list, responses: list, *, text_cells: bool) -> Optional[RankedIn]:
    """The record's ranking (see the module docstring), or None when it has none."""
    ranking, alias = record.get("ranking"), record.get("rank")
    if ranking is not None and alias is not None:
        raise ImportFormatError("give the order as `ranking` or `rank`, not both", field="ranking")
    ranking = alias if ranking is None else ranking
    ranks = [item.get("rank") for item in raw_responses if isinstance(item, dict)]
    has_ranks = any(r is not None for r in ranks)
    if ranking is None and not has_ranks:
        return None
    if ranking is not None and has_ranks:
        raise ImportFormatError("give the order either as `ranking` or as a `rank` per response, not both", field="ranking")
    k = len(responses)
    if ranking == "listed":
        groups: list[list[int]] = []
        for index, item in enumerate(raw_responses):
            tied = item.get("tied_with_previous", False) if isinstance(item, dict) else False
            if not isinstance(tied, bool):
                raise ImportFormatError(f"expected true or false, got {tied!r}", field=f"responses[{index}].tied_with_previous")
            if tied and not groups:
                raise ImportFormatError("the first response has no previous one to tie with", field="responses[0].tied_with_previous")
            (groups[-1].append(index) if tied else groups.append([index]))
        indices = groups
    elif ranking is not None:
        if text_cells and isinstance(ranking, str) and ranking.strip().startswith("["):
            import json

            ranking = json.loads(ranking)
        try:
            indices = [list(g) for g in parse_ranking(ranking, k, "ranking")]
        except RankingError as exc:
            raise ImportFormatError(exc.message, field="ranking") from None
    else:
        indices = _from_ranks(ranks, k)
    return RankedIn(tuple(tuple(responses[i].content_hash for i in group) for group in indices))


def _from_ranks(ranks: list[Any], k: int) -> list[list[int]]:
    places: dict[int, list[int]] = {}
    for index, rank in enumerate(ranks):
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ImportFormatError(f"expected a place 1 (best) or more, got {rank!r}", field=f"responses[{index}].rank")
        places.setdefault(rank, []).append(index)
    if len(ranks) != k:
        raise ImportFormatError("every response needs a rank", field="rank")
    return [places[p] for p in sorted(places)]
