"""A judge run over a project: pending tasks → prompts (both orders of a pair) → replies → verdicts → stored.

Steps, per batch of `batch_tasks` tasks:
1. pending: the project's tasks of the chosen kinds that this judge has no Judgment (and no label)
   for, in id order; a resumed run starts from what is left, so a task is never judged twice;
2. prompts: a pair gives two conversations, A first (`ab`) and B first (`ba`); a ranking group two,
   its cards in the task's order (`shown`) and reversed (`reversed`); a rating task one;
3. replies from the judge (`rlhf.judge.backends`), parsed (`rlhf.judge.parse`);
4. verdicts: a pair whose two orders agree (in the task's terms) is `parsed` with that choice; two
   parsed orders that disagree are `inconsistent` (no label: not counted as a tie); a ranking the
   same, its two card orders mapped back to the task's cards (`inconsistent` unless the orders are
   equal; their Kendall tau is kept); a reply that does not parse makes the task `unparsed`, its
   raw text kept;
5. one transaction per batch writes each task's Judgment (raw replies, verdict per order, template
   hash, the judge's identity) and, for parsed verdicts, the Preference / Rating / Ranking of the
   external user `judge:<name>`. A run killed between batches leaves whole batches: nothing half-written.

A judge error that stops the run (an unreachable endpoint, a wrong key) is raised after the batches
before it were stored; rerunning the command continues from there.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from sqlalchemy import select
from sqlalchemy.engine import Engine

from rlhf.judge.client import ChatReply
from rlhf.judge.parse import parse_pair_reply, parse_rating_reply
from rlhf.judge.templates import JudgeTemplates
from rlhf.progress import Reporter, check_stop
from rlhf.schema import Judgment, Preference, Prompt, Ranking, Rating, Response, Task, utcnow

JUDGE_PREFIX = "judge:"
STATUSES = ("parsed", "inconsistent", "unparsed")
ORDERS = ("ab", "ba")
RANKING_ORDERS = ("shown", "reversed")
"""A ranking group's two card orders: the task's (A, B, C, ...) and its reverse."""
KINDS = ("pairwise", "rating", "ranking")
LABEL_TABLES = (Judgment, Preference, Rating, Ranking)
"""A task with a row of the judge's in any of these is done for that judge."""
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,100}")


class JudgeError(ValueError):
    """A judge run that cannot start: bad name, unknown project, no judge for the task kind."""


def judge_username(name: str) -> str:
    """`judge:<name>` (the external user a judge's labels are stored as); JudgeError for a bad name."""
    bare = name[len(JUDGE_PREFIX):] if name.startswith(JUDGE_PREFIX) else name
    if not _NAME.fullmatch(bare):
        raise JudgeError(f"judge name {name!r}: use letters, digits, '.', '_' or '-' (at most 101 characters)")
    return JUDGE_PREFIX + bare


@dataclass(frozen=True)
class JudgeRequest:
    """One conversation for a text judge, and the task content it was built from (the simulated judge reads that)."""

    task_id: int
    order: str
    """'ab' (response A shown first), 'ba', 'rating', or a ranking's 'shown' / 'reversed'."""
    messages: list[dict[str, str]]
    prompt: Any
    first: str
    second: Optional[str] = None
    category: Optional[str] = None
    rubric: tuple = ()
    """For a rating: the rubric's dimensions (dicts with name, min, max)."""
    replies: tuple[str, ...] = ()
    """For a ranking: the K replies in the order shown (letter A first)."""


@dataclass
class JudgeOptions:
    """What a judge run does."""

    name: str
    """The judge's name: labels are stored as the external user `judge:<name>`."""
    kinds: tuple[str, ...] = KINDS
    """Task kinds to judge: pairwise, rating, ranking."""
    limit: Optional[int] = None
    """Judge at most this many pending tasks in this run (None: all)."""
    batch_tasks: int = 16
    """Tasks per batch: sent to the judge together and stored in one transaction."""
    pair_max_tokens: int = 24
    """Reply tokens at most for a pair verdict."""
    rating_max_tokens: int = 64
    """Reply tokens at most for a rating (a JSON object)."""
    ranking_max_tokens: int = 32
    """Reply tokens at most for a ranking order ("Ranking: C > A = D > B")."""

    def __post_init__(self) -> None:
        self.kinds = tuple(self.kinds)
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or not self.kinds:
            raise JudgeError(f"kinds must be among {', '.join(KINDS)}, got {list(self.kinds)}")
        if self.batch_tasks < 1:
            raise JudgeError(f"batch_tasks must be at least 1, got {self.batch_tasks}")
        if self.limit is not None and self.limit < 0:
            raise JudgeError(f"limit must be >= 0, got {self.limit}")
        if self.pair_max_tokens < 1 or self.rating_max_tokens < 1 or self.ranking_max_tokens < 1:
            raise JudgeError("max tokens must be at least 1")


@dataclass
class JudgeRunSummary:
    """What one run did."""

    project: str
    judge: str
    run_id: str
    pending: int = 0
    judged: int = 0
    counts: Counter = field(default_factory=Counter)
    """(kind, status) → tasks."""
    skipped_kinds: list[str] = field(default_factory=list)
    seconds: float = 0.0
    requests: int = 0

    def line(self) -> str:
        parts = ", ".join(f"{kind} {status} {n}" for (kind, status), n in sorted(self.counts.items())) or "nothing new"
        text = f"judge {self.judge} on project {self.project!r}: {self.judged} of {self.pending} pending tasks judged ({parts}); {self.seconds:.1f}s"
        if self.skipped_kinds:
            text += f"; not judged: {', '.join(self.skipped_kinds)}"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {"project": self.project, "judge": self.judge, "run_id": self.run_id, "pending": self.pending, "judged": self.judged,
                "counts": {f"{k}/{s}": n for (k, s), n in sorted(self.counts.items())}, "skipped_kinds": self.skipped_kinds,
                "seconds": round(self.seconds, 3), "requests": self.requests}


@dataclass(frozen=True)
class _TaskContent:
    task_id: int
    kind: str
    prompt: Any
    prompt_text: str
    category: Optional[str]
    text_a: str
    text_b: Optional[str]
    texts: tuple[str, ...] = ()
    """A ranking task's K replies, card A first."""


def _external_user(session, username: str) -> int:
    from rlhf.importer.core import _label_source_user
    from rlhf.importer.errors import ImportFormatError

    try:
        return _label_source_user(session, username)
    except ImportFormatError as exc:
        raise JudgeError(str(exc).replace("field 'as_labels'", "judge name")) from None


def _pending(engine: Engine, project_id: int, user_id: int, kinds: Sequence[str], limit: Optional[int]) -> list[_TaskContent]:
    """Tasks of `kinds` without a Judgment or label from `user_id`, id order, with their texts."""
    from rlhf.db import session_scope

    done = set()
    with session_scope(engine) as session:
        for table in LABEL_TABLES:
            done.update(session.execute(select(table.task_id).join(Task, Task.id == table.task_id).where(
                Task.project_id == project_id, table.user_id == user_id)).scalars())
        rows = session.execute(
            select(Task.id, Task.kind, Task.prompt_id, Task.response_a_id, Task.response_b_id, Task.response_ids)
            .where(Task.project_id == project_id, Task.kind.in_(list(kinds)))
            .order_by(Task.id)
        ).all()
        rows = [r for r in rows if r.id not in done]
        if limit is not None:
            rows = rows[:limit]
        prompt_ids = sorted({r.prompt_id for r in rows})
        response_ids = sorted({r.response_a_id for r in rows} | {r.response_b_id for r in rows if r.response_b_id is not None}
                              | {int(i) for r in rows if r.kind == "ranking" for i in (r.response_ids or ())})
        prompts = {p.id: p for p in _in_chunks(session, Prompt, prompt_ids)}
        responses = {r.id: r.text for r in _in_chunks(session, Response, response_ids)}
    out = []
    for r in rows:
        p = prompts[r.prompt_id]
        out.append(_TaskContent(
            task_id=int(r.id), kind=r.kind, prompt=p.messages if p.messages else p.text, prompt_text=p.text, category=p.category,
            text_a=responses[r.response_a_id], text_b=responses.get(r.response_b_id) if r.response_b_id is not None else None,
            texts=tuple(responses[int(i)] for i in r.response_ids) if r.kind == "ranking" else (),
        ))
    return out


def _in_chunks(session, table, ids: list[int], size: int = 5000):
    for start in range(0, len(ids), size):
        yield from session.execute(select(table).where(table.id.in_(ids[start:start + size]))).scalars()


def _requests(task: _TaskContent, templates: JudgeTemplates, guidelines: str, rubric: list[dict]) -> list[JudgeRequest]:
    if task.kind == "pairwise":
        out = []
        for order, (first, second) in zip(ORDERS, ((task.text_a, task.text_b), (task.text_b, task.text_a))):
            text = templates.pair_prompt(prompt=task.prompt_text, first=first, second=second, guidelines=guidelines)
            out.append(JudgeRequest(task.task_id, order, [{"role": "user", "content": text}], task.prompt, first, second, task.category))
        return out
    if task.kind == "ranking":
        out = []
        for order, replies in zip(RANKING_ORDERS, (task.texts, task.texts[::-1])):
            text = templates.ranking_prompt(prompt=task.prompt_text, replies=replies, guidelines=guidelines)
            out.append(JudgeRequest(task.task_id, order, [{"role": "user", "content": text}], task.prompt, replies[0], None, task.category,
                                    replies=tuple(replies)))
        return out
    text = templates.rating_prompt(prompt=task.prompt_text, response=task.text_a, rubric=rubric, guidelines=guidelines)
    return [JudgeRequest(task.task_id, "rating", [{"role": "user", "content": text}], task.prompt, task.text_a, None, task.category, tuple(rubric))]


def to_task_terms(choice: Optional[str], order: str) -> Optional[str]:
    """A verdict in display terms (a = first shown) → the task's terms (a = response A)."""
    if choice is None or choice == "tie" or order == "ab":
        return choice
    return "b" if choice == "a" else "a"


def pair_verdict(replies: dict[str, ChatReply]) -> tuple[str, dict[str, Any]]:
    """(status, verdict) from the two orders' replies: consistent → parsed, disagreeing → inconsistent, else unparsed."""
    orders = {order: to_task_terms(parse_pair_reply(replies[order].text), order) for order in ORDERS}
    if any(v is None for v in orders.values()):
        return "unparsed", {"choice": None, "orders": orders}
    if orders["ab"] != orders["ba"]:
        return "inconsistent", {"choice": None, "orders": orders}
    return "parsed", {"choice": orders["ab"], "orders": orders}


def shown_order_of(order: str, k: int) -> tuple[int, ...]:
    """The task's card shown at each letter (position) in a ranking order: 'shown' → (0, 1, ..), 'reversed' → (k-1, .., 0)."""
    return tuple(range(k)) if order == "shown" else tuple(range(k - 1, -1, -1))


def ranking_verdict(replies: dict[str, ChatReply], k: int) -> tuple[str, dict[str, Any]]:
    """(status, verdict) from a ranking group's two card orders, each mapped back to the task's cards.

    Both parsed and equal → parsed with that order; both parsed and different → inconsistent (no
    label; `tau_between_orders` says how far apart); either unparsed → unparsed. Orders are lists
    of groups of card indices, best first (`rlhf.ranking`).
    """
    from rlhf.judge.parse import parse_ranking_reply
    from rlhf.ranking import from_shown, kendall_tau

    orders: dict[str, Any] = {}
    for order in RANKING_ORDERS:
        shown = parse_ranking_reply(replies[order].text, k)
        orders[order] = None if shown is None else [list(g) for g in from_shown(shown, shown_order_of(order, k))]
    if any(v is None for v in orders.values()):
        return "unparsed", {"order": None, "orders": orders, "tau_between_orders": None}
    tau = kendall_tau(orders["shown"], orders["reversed"])
    verdict = {"orders": orders, "tau_between_orders": None if tau is None else round(tau, 6)}
    if orders["shown"] != orders["reversed"]:
        return "inconsistent", {"order": None, **verdict}
    return "parsed", {"order": orders["shown"], **verdict}


def groups_from_scores(scores: Sequence[float], tolerance: float) -> list[list[int]]:
    """Cards ordered by score, best first; a card within `tolerance` of its group's best score joins that group (a tie).

    Measured from the group's best, not chained from card to card, so a tie never spans more than `tolerance`.
    """
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    groups: list[list[int]] = []
    top = None
    for card in order:
        if top is not None and top - scores[card] < tolerance:
            groups[-1].append(card)
        else:
            groups.append([card])
            top = scores[card]
    return [sorted(g) for g in groups]


def _raw(order: str, reply: ChatReply) -> dict[str, Any]:
    entry: dict[str, Any] = {"order": order, "text": reply.text}
    if reply.error:
        entry["error"] = reply.error
    if reply.finish_reason:
        entry["finish_reason"] = reply.finish_reason
    return entry


def judge_project(
    engine: Engine,
    actor,
    project: str | int,
    judge,
    options: JudgeOptions,
    *,
    templates: JudgeTemplates = JudgeTemplates(),
    reporter: Optional[Reporter] = None,
) -> JudgeRunSummary:
    """Judge the project's pending tasks with `judge` (a text judge or a `RewardJudge`); admin only. See the module docstring."""
    from rlhf.db import run_transaction, session_scope
    from rlhf.projects import find_project
    from rlhf.redact import redact
    from rlhf.roles import check_admin

    check_admin(engine, actor, "run a judge")
    username = judge_username(options.name)
    started = time.perf_counter()
    with session_scope(engine, write=True) as session:
        row = find_project(session, project)
        if row is None:
            raise JudgeError(f"no project {project!r}")
        user_id = _external_user(session, username)
        project_id, project_name, guidelines, rubric = int(row.id), row.name, row.guidelines or "", [dict(d) for d in row.rubric]
    score_judge = hasattr(judge, "scores")
    kinds = options.kinds
    summary = JudgeRunSummary(project=project_name, judge=username, run_id=uuid.uuid4().hex)
    if score_judge and "rating" in kinds:
        kinds = tuple(k for k in kinds if k != "rating")
        summary.skipped_kinds.append("rating (a reward model judges pairs only)")
    identity = redact(judge.identity())
    tasks = _pending(engine, project_id, user_id, kinds, options.limit) if kinds else []
    summary.pending = len(tasks)
    if reporter is not None:
        reporter.progress(0, len(tasks), f"{len(tasks)} tasks to judge")

    for start in range(0, len(tasks), options.batch_tasks):
        check_stop(reporter)
        batch = tasks[start:start + options.batch_tasks]
        # 2-4. Prompts, replies, verdicts.
        if score_judge:
            records = _score_verdicts(judge, batch)
            template_hash = ""
        else:
            records = _text_verdicts(judge, batch, options, templates, guidelines, rubric)
            summary.requests += sum(1 if t.kind == "rating" else 2 for t in batch)
        now = utcnow()

        # 5. One transaction per batch; a task judged meanwhile by another run is left as it is.
        def store(session, records=records, now=now) -> list[tuple[str, str]]:
            ids = [r["task_id"] for r in records]
            taken = set()
            for table in LABEL_TABLES:
                taken.update(session.execute(select(table.task_id).where(table.user_id == user_id, table.task_id.in_(ids))).scalars())
            stored = []
            for r in records:
                if r["task_id"] in taken:
                    continue
                kind_hash = "" if score_judge else templates.hash_for(r["kind"])
                session.add(Judgment(
                    project_id=project_id, task_id=r["task_id"], user_id=user_id, kind=r["kind"], status=r["status"],
                    verdict=r["verdict"], raw=r["raw"], template_hash=kind_hash, model=identity, run_id=summary.run_id, created_at=now,
                ))
                if r["status"] == "parsed" and r["kind"] == "pairwise":
                    choice = r["verdict"]["choice"]
                    session.add(Preference(task_id=r["task_id"], user_id=user_id, choice=choice, strength=0 if choice == "tie" else 1,
                                           shown_left="a", created_at=now, updated_at=now))
                elif r["status"] == "parsed" and r["kind"] == "ranking":
                    # Stored in the task's card terms; shown_order is the first of the two orders the judge saw.
                    order = r["verdict"]["order"]
                    session.add(Ranking(task_id=r["task_id"], user_id=user_id, groups=order, shown_order=list(range(sum(len(g) for g in order))),
                                        created_at=now, updated_at=now))
                elif r["status"] == "parsed":
                    session.add(Rating(task_id=r["task_id"], user_id=user_id, scores=r["verdict"]["scores"], created_at=now, updated_at=now))
                stored.append((r["kind"], r["status"]))
            return stored

        for kind_status in run_transaction(engine, store):
            summary.counts[kind_status] += 1
            summary.judged += 1
        if reporter is not None:
            reporter.progress(min(start + len(batch), len(tasks)), len(tasks), f"{summary.judged} judged")
    summary.seconds = time.perf_counter() - started
    return summary


def _text_verdicts(judge, batch, options: JudgeOptions, templates: JudgeTemplates, guidelines: str, rubric: list[dict]) -> list[dict[str, Any]]:
    by_kind: dict[str, list[JudgeRequest]] = {kind: [] for kind in KINDS}
    for task in batch:
        by_kind[task.kind].extend(_requests(task, templates, guidelines, rubric))
    replies: dict[tuple[int, str], ChatReply] = {}
    for kind, requests in by_kind.items():
        if requests:
            max_tokens = {"pairwise": options.pair_max_tokens, "rating": options.rating_max_tokens, "ranking": options.ranking_max_tokens}[kind]
            for request, reply in zip(requests, judge.complete_many(requests, max_tokens=max_tokens)):
                replies[(request.task_id, request.order)] = reply
    records = []
    for task in batch:
        if task.kind == "pairwise":
            mine = {order: replies[(task.task_id, order)] for order in ORDERS}
            status, verdict = pair_verdict(mine)
            raw = [_raw(order, mine[order]) for order in ORDERS]
        elif task.kind == "ranking":
            mine = {order: replies[(task.task_id, order)] for order in RANKING_ORDERS}
            status, verdict = ranking_verdict(mine, len(task.texts))
            raw = [_raw(order, mine[order]) for order in RANKING_ORDERS]
        else:
            reply = replies[(task.task_id, "rating")]
            scores = parse_rating_reply(reply.text, rubric)
            status, verdict = ("parsed", {"scores": scores}) if scores is not None else ("unparsed", {"scores": None})
            raw = [_raw("rating", reply)]
        records.append({"task_id": task.task_id, "kind": task.kind, "status": status, "verdict": verdict, "raw": raw})
    return records


def _score_verdicts(judge, batch) -> list[dict[str, Any]]:
    """Verdicts of a score judge: each reply scored once; a pair by its two scores, a ranking group by its K scores."""
    texts = [t.texts if t.kind == "ranking" else (t.text_a, t.text_b) for t in batch]
    scores_flat = judge.scores([t.prompt for t, replies in zip(batch, texts) for _ in replies], [text for replies in texts for text in replies])
    records, at = [], 0
    for task, replies in zip(batch, texts):
        scores, at = scores_flat[at:at + len(replies)], at + len(replies)
        if task.kind == "ranking":
            order = groups_from_scores(scores, judge.tie_margin)
            records.append({
                "task_id": task.task_id, "kind": "ranking", "status": "parsed",
                "verdict": {"order": order, "orders": {"shown": order, "reversed": order}, "tau_between_orders": None},
                "raw": [{"order": "scores", "scores": [round(float(x), 6) for x in scores]}],
            })
            continue
        score_a, score_b = scores
        choice = "tie" if abs(score_a - score_b) < judge.tie_margin else ("a" if score_a > score_b else "b")
        records.append({
            "task_id": task.task_id, "kind": "pairwise", "status": "parsed",
            "verdict": {"choice": choice, "orders": {"ab": choice, "ba": choice}},
            "raw": [{"order": "scores", "score_a": round(score_a, 6), "score_b": round(score_b, 6)}],
        })
    return records
