"""Parsing a judge model's reply into a verdict: A / B / tie for a pair, one score per rubric dimension,
an order over the cards of a ranking group.

All three parsers are total: any text gives a verdict or None (the reply is then stored as
`unparsed` with its raw text), never an exception.

Pair replies, first rule that matches wins:
1. the last `Verdict: X` (also `verdict - X`, `**Verdict:** X`, `The answer is: X`), X in A / B / tie;
2. the last MT-Bench style `[[A]]`, `[[B]]`, `[[C]]` or `[[tie]]` (C is MT-Bench's tie);
3. the whole reply is X (case and surrounding punctuation ignored), or it starts with
   `A` / `B` / `tie` followed by a blank or punctuation ("A. Response A is ...").
`tie` also reads `draw`, `equal`, `both`.

Rating replies: the first JSON object in the text whose keys cover the rubric (names are matched
case-insensitively), else `name: value` / `name = value` lines. Every dimension needs an integer
within its scale (a float with no fraction counts); any missing or out-of-range value is None.

Ranking replies over K cards (letters A.. in the order shown), first rule that gives a valid
order wins: every card exactly once, `=` between tied cards (`rlhf.ranking.parse_ranking`):
1. the last `Ranking: ...` (also `Order:`, `Final ranking -`, `**Ranking:**`) line's order;
2. the last run of the K letters joined by `>` or `=` anywhere in the text ("... so C > A = D > B.");
3. the whole reply is the order ("C A D B", "CADB", "C > A = D > B", surrounding punctuation ignored).
A reply naming a card twice, leaving one out or naming a letter beyond the K cards is None.
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping, Optional, Sequence

PAIR_CHOICES = ("a", "b", "tie")
_TIE_WORDS = {"tie": "tie", "draw": "tie", "equal": "tie", "both": "tie", "c": "tie"}

_VERDICT = re.compile(r"(?:verdict|answer(?:\s+is)?)\W{0,6}?\s*[:=\-]?\s*\W{0,3}(a|b|tie|draw|equal|both)\b", re.IGNORECASE)
_BRACKETS = re.compile(r"\[\[\s*(a|b|c|tie)\s*\]\]", re.IGNORECASE)
_LEADING = re.compile(r"^\W{0,3}(a|b|tie|draw|equal)(?:$|[\s.,:;!)\]*])", re.IGNORECASE)


def _choice(word: str) -> str:
    word = word.lower()
    return _TIE_WORDS.get(word, word) if word not in ("a", "b") else word


def parse_pair_reply(text: Any) -> Optional[str]:
    """'a', 'b' or 'tie' (in the order shown: a = the first response), or None when it does not parse."""
    if not isinstance(text, str):
        return None
    verdicts = _VERDICT.findall(text)
    if verdicts:
        return _choice(verdicts[-1])
    brackets = _BRACKETS.findall(text)
    if brackets:
        return _choice(brackets[-1])
    stripped = text.strip()
    match = _LEADING.match(stripped)
    if match:
        return _choice(match.group(1))
    return None


def _json_objects(text: str):
    """Every JSON object that starts at a `{` in `text`, in order."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        if isinstance(value, dict):
            yield value


def _integer(value: Any) -> Optional[int]:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    return None


def _scores_from(mapping: Mapping[str, Any], rubric: Sequence[Mapping[str, Any]]) -> Optional[dict[str, int]]:
    lowered = {str(k).strip().lower(): v for k, v in mapping.items()}
    scores: dict[str, int] = {}
    for dimension in rubric:
        value = _integer(lowered.get(str(dimension["name"]).lower()))
        if value is None or not (int(dimension["min"]) <= value <= int(dimension["max"])):
            return None
        scores[str(dimension["name"])] = value
    return scores


def parse_rating_reply(text: Any, rubric: Sequence[Mapping[str, Any]]) -> Optional[dict[str, int]]:
    """{dimension: score} with every rubric dimension on its scale, or None when the reply does not give that."""
    if not isinstance(text, str) or not rubric:
        return None
    for candidate in _json_objects(text):
        scores = _scores_from(candidate, rubric)
        if scores is not None:
            return scores
    pairs: dict[str, str] = {}
    for name, value in re.findall(r"([A-Za-z][\w \-]*?)\s*[:=]\s*\"?(-?\d+(?:\.0+)?)\b", text):
        pairs.setdefault(name.strip().strip("-* ").lower(), value)
    if not pairs:
        return None
    return _scores_from({k: (float(v) if "." in v else int(v)) for k, v in pairs.items()}, rubric)


_RANKING_LINE = re.compile(r"(?:final\s+)?(?:ranking|order)\W{0,6}?\s*[:=\-]\s*\W{0,3}([A-Za-z][A-Za-z \t=>,]*)", re.IGNORECASE)


def _ranking_of(candidate: str, k: int):
    from rlhf.ranking import RankingError, parse_ranking

    cleaned = candidate.strip().strip(".,;:!*\"'`()[] \t")
    if not cleaned:
        return None
    try:
        return parse_ranking(cleaned, k)
    except RankingError:
        return None


def parse_ranking_reply(text: Any, k: int) -> Optional[tuple[tuple[int, ...], ...]]:
    """Groups best first (card indices in the order shown, 0 = A), or None when the reply gives no valid order of all K cards."""
    from rlhf.ranking import LETTERS

    if not isinstance(text, str) or not isinstance(k, int) or not 2 <= k <= len(LETTERS):
        return None
    for match in reversed(_RANKING_LINE.findall(text)):
        groups = _ranking_of(match, k)
        if groups is not None:
            return groups
    letters = f"[A-{LETTERS[k - 1]}a-{LETTERS[k - 1].lower()}]"
    chains = re.findall(rf"(?<![A-Za-z]){letters}(?:\s*[>=]\s*{letters}){{{k - 1}}}(?![A-Za-z])", text)
    for chain in reversed(chains):
        groups = _ranking_of(chain, k)
        if groups is not None:
            return groups
    return _ranking_of(text, k)
