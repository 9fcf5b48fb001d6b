"""The judge's prompts: built from the project's guidelines and rubric; a template file can override each.

A template is text with `{field}` placeholders (Python `str.format` syntax; `{{` and `}}` are
literal braces). The fields each kind fills, and those it requires:

- pair (`--pair-template FILE`): `{prompt}`, `{first}`, `{second}` (required: the two responses
  in the order shown, so the same template serves both orders), `{guidelines}` (optional);
- rating (`--rating-template FILE`): `{prompt}`, `{response}`, `{rubric}` (required: one line per
  dimension with its scale and question), `{dimensions}` (the names, comma-separated), `{example}`
  (a JSON object with every dimension, showing the reply format), `{guidelines}` (optional);
- ranking (`--ranking-template FILE`): `{prompt}`, `{responses}` (required: the K replies, each
  under "Response X:" with X its letter in the order shown, so the same template serves both card
  orders), `{letters}` (the letters shown, e.g. "A, B, C, D"), `{example}` (an order over those
  letters showing the reply format, e.g. "B > A > C = D"), `{count}` (K), `{guidelines}` (optional).

A template without a required field, with an unknown field or with unbalanced braces is refused
with an error naming the file and the field. The template's hash (SHA-256 of its text) is stored
with every judgment, so verdicts from different prompts are never mixed up unknowingly.

The guidelines are cut to `max_guideline_chars` characters (default 1500; 0 leaves them out):
the packaged judge is a 135M model whose context and attention are short.
"""

from __future__ import annotations

import hashlib
import json
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

DEFAULT_PAIR_TEMPLATE = """You are judging two responses to the same prompt.
{guidelines}
Prompt:
{prompt}

Response A:
{first}

Response B:
{second}

Which response is better? Answer with one line: "Verdict: A", "Verdict: B" or "Verdict: tie"."""

DEFAULT_RATING_TEMPLATE = """You are rating one response to a prompt.
{guidelines}
Prompt:
{prompt}

Response:
{response}

Score the response on each dimension:
{rubric}

Answer with one JSON object and nothing else, for example: {example}"""

DEFAULT_RANKING_TEMPLATE = """You are ranking {count} responses to the same prompt, best first.
{guidelines}
Prompt:
{prompt}

{responses}

Rank all the responses ({letters}) from best to worst; write = between responses of equal quality.
Answer with one line, for example: "Ranking: {example}"."""

PAIR_FIELDS = {"prompt", "first", "second", "guidelines"}
PAIR_REQUIRED = ("prompt", "first", "second")
RATING_FIELDS = {"prompt", "response", "rubric", "dimensions", "example", "guidelines"}
RATING_REQUIRED = ("prompt", "response", "rubric")
RANKING_FIELDS = {"prompt", "responses", "letters", "example", "count", "guidelines"}
RANKING_REQUIRED = ("prompt", "responses")
DEFAULT_MAX_GUIDELINE_CHARS = 1500


class TemplateError(ValueError):
    """A template that cannot be used: missing required field, unknown field, bad braces."""


def template_fields(text: str, where: str) -> set[str]:
    """The `{field}` names used in `text`; TemplateError on a malformed placeholder."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise TemplateError(f"{where}: {exc} (write literal braces as {{{{ and }}}})") from None
    fields = set()
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name == "" or not name.isidentifier() or spec or conversion:
            raise TemplateError(f"{where}: placeholder {{{name}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}} is not a plain {{field}}")
        fields.add(name)
    return fields


def check_template(text: str, where: str, allowed: set[str], required: Sequence[str]) -> str:
    """`text` when it uses only `allowed` fields and all `required` ones; else TemplateError naming them."""
    fields = template_fields(text, where)
    missing = [f for f in required if f not in fields]
    if missing:
        raise TemplateError(f"{where}: the template lacks the required field(s) {', '.join('{' + f + '}' for f in missing)}")
    unknown = sorted(fields - allowed)
    if unknown:
        raise TemplateError(f"{where}: unknown field(s) {', '.join('{' + f + '}' for f in unknown)}; allowed: {', '.join(sorted(allowed))}")
    return text


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class JudgeTemplates:
    """The pair, rating and ranking templates in force, and how much of the guidelines they carry."""

    pair: str = DEFAULT_PAIR_TEMPLATE
    rating: str = DEFAULT_RATING_TEMPLATE
    max_guideline_chars: int = DEFAULT_MAX_GUIDELINE_CHARS
    pair_source: str = "default"
    rating_source: str = "default"
    ranking: str = DEFAULT_RANKING_TEMPLATE
    ranking_source: str = "default"

    def __post_init__(self) -> None:
        check_template(self.pair, f"pair template ({self.pair_source})", PAIR_FIELDS, PAIR_REQUIRED)
        check_template(self.rating, f"rating template ({self.rating_source})", RATING_FIELDS, RATING_REQUIRED)
        check_template(self.ranking, f"ranking template ({self.ranking_source})", RANKING_FIELDS, RANKING_REQUIRED)
        if self.max_guideline_chars < 0:
            raise TemplateError(f"max_guideline_chars must be >= 0, got {self.max_guideline_chars}")

    def hash_for(self, kind: str) -> str:
        """SHA-256 of the template text and the guideline cut: what a judgment's prompt was built from."""
        text = {"pairwise": self.pair, "rating": self.rating, "ranking": self.ranking}[kind]
        return text_hash(f"{text}\n--max_guideline_chars={self.max_guideline_chars}")

    def guidelines(self, text: str) -> str:
        cut = (text or "").strip()[: self.max_guideline_chars].strip()
        return f"\nGuidelines:\n{cut}\n" if cut else ""

    def pair_prompt(self, *, prompt: str, first: str, second: str, guidelines: str) -> str:
        return self.pair.format(prompt=prompt, first=first, second=second, guidelines=self.guidelines(guidelines))

    def ranking_prompt(self, *, prompt: str, replies: Sequence[str], guidelines: str) -> str:
        """The prompt showing `replies` in the given order, lettered A, B, C, ... (the letters the reply must order)."""
        from rlhf.ranking import LETTERS

        letters = LETTERS[: len(replies)]
        responses = "\n\n".join(f"Response {letters[i]}:\n{text}" for i, text in enumerate(replies))
        # An example that is not an answer: the letters in order with one tie in the middle (never the identity or its reverse alone).
        example = " > ".join(letters[1:2] + letters[0:1] + letters[2:]) if len(letters) > 2 else " > ".join(letters[::-1])
        if len(letters) > 3:
            example = example.replace(f" > {letters[2]} > ", f" > {letters[2]} = ", 1)
        return self.ranking.format(prompt=prompt, responses=responses, letters=", ".join(letters), example=example,
                                   count=len(replies), guidelines=self.guidelines(guidelines))

    def rating_prompt(self, *, prompt: str, response: str, rubric: Sequence[Mapping[str, Any]], guidelines: str) -> str:
        lines = "\n".join(f"- {d['name']} ({d['min']}-{d['max']}): {d.get('question', '')}".rstrip(": ") for d in rubric)
        example = json.dumps({d["name"]: d["max"] for d in rubric})
        return self.rating.format(
            prompt=prompt, response=response, rubric=lines, dimensions=", ".join(d["name"] for d in rubric),
            example=example, guidelines=self.guidelines(guidelines),
        )


def _read(path: str | Path | None, what: str) -> str | None:
    if path is None:
        return None
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(f"{what} {path}: cannot read it ({exc})") from None


def load_templates(
    pair_template: str | Path | None = None, rating_template: str | Path | None = None, *, max_guideline_chars: int = DEFAULT_MAX_GUIDELINE_CHARS,
    ranking_template: str | Path | None = None,
) -> JudgeTemplates:
    """The default templates, with any of them replaced by a file's text (checked: TemplateError names the file)."""
    pair = _read(pair_template, "pair template")
    rating = _read(rating_template, "rating template")
    ranking = _read(ranking_template, "ranking template")
    return JudgeTemplates(
        pair=pair if pair is not None else DEFAULT_PAIR_TEMPLATE,
        rating=rating if rating is not None else DEFAULT_RATING_TEMPLATE,
        max_guideline_chars=max_guideline_chars,
        pair_source=str(pair_template) if pair_template is not None else "default",
        rating_source=str(rating_template) if rating_template is not None else "default",
        ranking=ranking if ranking is not None else DEFAULT_RANKING_TEMPLATE,
        ranking_source=str(ranking_template) if ranking_template is not None else "default",
    )
