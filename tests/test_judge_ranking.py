"""Model judges on ranking groups (issue 19): the template, the order parser, two card orders, storage, resume, the reward judge, metrics."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings, strategies as st

from engine_fixtures import add_annotators, build_project, rows_where as _rows
from ranking_fixtures import add_ranking_tasks
from rlhf.judge.client import ChatReply
from rlhf.judge.metrics import consensus_order, judge_report, report_tables
from rlhf.judge.parse import parse_ranking_reply
from rlhf.judge.run import JudgeOptions, groups_from_scores, judge_project, ranking_verdict
from rlhf.judge.templates import JudgeTemplates, TemplateError, load_templates
from rlhf.ranking import LETTERS
from rlhf.roles import SYSTEM
from rlhf.schema import Judgment, Ranking, User
from rlhf.simulation.judge import SimulatedJudge

# --------------------------------------------------------------------------- template


def test_the_default_ranking_template_letters_the_replies_in_the_order_given():
    text = JudgeTemplates().ranking_prompt(prompt="P?", replies=["one", "two", "three", "four"], guidelines="Be brief.")
    assert "Response A:\none" in text and "Response D:\nfour" in text and "(A, B, C, D)" in text and "Be brief." in text
    assert '"Ranking: B > A > C = D"' in text  # an example over exactly these letters


def test_a_ranking_template_file_overrides_and_a_bad_one_is_refused_naming_the_field(tmp_path):
    good = tmp_path / "rank.txt"
    good.write_text("Order {letters} for {prompt}:\n{responses}\nRanking:")
    templates = load_templates(ranking_template=good)
    assert templates.ranking_prompt(prompt="Q", replies=["x", "y"], guidelines="").startswith("Order A, B for Q:")
    assert templates.hash_for("ranking") != JudgeTemplates().hash_for("ranking")
    bad = tmp_path / "bad.txt"
    bad.write_text("Rank these for {prompt}")
    with pytest.raises(TemplateError, match=r"bad.txt.*\{responses\}"):
        load_templates(ranking_template=bad)


# --------------------------------------------------------------------------- parser


@pytest.mark.parametrize("text, k, expected", [
    ("Ranking: C > A = D > B", 4, ((2,), (0, 3), (1,))),
    ("**Ranking:** B > A > C.", 3, ((1,), (0,), (2,))),
    ("I compared them.\nFinal ranking - c > b > a", 3, ((2,), (1,), (0,))),
    ("A is short, C is wrong, so B > A > C.", 3, ((1,), (0,), (2,))),
    ("Ranking: A > B > C\nOn reflection, Ranking: C > B > A", 3, ((2,), (1,), (0,))),
    ("CADB", 4, ((2,), (0,), (3,), (1,))),
    ("Ranking: A = B", 2, ((0, 1),)),
])
def test_orders_that_parse(text, k, expected):
    assert parse_ranking_reply(text, k) == expected


@pytest.mark.parametrize("text, k", [
    ("Ranking: A > B", 3),  # leaves C out
    ("Ranking: A > A > B", 3),  # A twice
    ("Ranking: A > B > E", 3),  # no card E
    ("They are all good.", 3),
    ("", 4),
    (None, 3),
    ("Ranking: A > B", 1),  # no such group size
])
def test_replies_that_do_not_parse(text, k):
    assert parse_ranking_reply(text, k) is None


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(list("ABCDEFGHIJabcd =>,.:*\n") + ["Ranking: ", "Order - ", " > ", " = "]), max_size=30).map("".join)
       | st.text(max_size=80), st.integers(2, 9))
def test_any_reply_parses_to_an_order_of_exactly_the_groups_cards_or_to_nothing(text, k):
    groups = parse_ranking_reply(text, k)
    if groups is not None:
        cards = [card for group in groups for card in group]
        assert sorted(cards) == list(range(k)) and all(group for group in groups)


@settings(max_examples=200, deadline=None)
@given(st.permutations(range(9)), st.integers(2, 9), st.lists(st.booleans(), min_size=8, max_size=8), st.text(max_size=20))
def test_a_written_order_reads_back_as_itself(permutation, k, ties, chatter):
    """Any order with ties, written as the template asks, after any chatter line, parses to exactly that order."""
    cards = [c for c in permutation if c < k]
    groups: list[list[int]] = [[cards[0]]]
    for card, tie in zip(cards[1:], ties):
        groups[-1].append(card) if tie else groups.append([card])
    written = " > ".join(" = ".join(LETTERS[c] for c in g) for g in groups)
    assert parse_ranking_reply(f"{chatter}\nRanking: {written}", k) == tuple(tuple(sorted(g)) for g in groups)


# --------------------------------------------------------------------------- both card orders


def test_the_two_card_orders_make_the_verdict():
    r = lambda text: ChatReply(text=text)  # noqa: E731
    # Shown A B C, the judge says C > A > B; reversed (shown C B A as A B C) the same cards read A > C > B.
    status, verdict = ranking_verdict({"shown": r("Ranking: C > A > B"), "reversed": r("Ranking: A > C > B")}, 3)
    assert status == "parsed" and verdict["order"] == [[2], [0], [1]] and verdict["tau_between_orders"] == 1.0
    # The same letters twice is the first-shown card on top both times: inconsistent, not averaged.
    status, verdict = ranking_verdict({"shown": r("Ranking: A > B > C"), "reversed": r("Ranking: A > B > C")}, 3)
    assert status == "inconsistent" and verdict["order"] is None and verdict["tau_between_orders"] == -1.0
    assert verdict["orders"] == {"shown": [[0], [1], [2]], "reversed": [[2], [1], [0]]}
    status, verdict = ranking_verdict({"shown": r("Ranking: B > A = C"), "reversed": r("no idea")}, 3)
    assert status == "unparsed" and verdict["orders"]["reversed"] is None and verdict["orders"]["shown"] == [[1], [0, 2]]
    assert ranking_verdict({"shown": r("Ranking: A > B"), "reversed": ChatReply(text=None, error="HTTP 400")}, 2)[0] == "unparsed"


def test_scores_to_groups_with_a_tolerance():
    assert groups_from_scores([0.1, 2.0, 1.0], 0.5) == [[1], [2], [0]]
    assert groups_from_scores([1.0, 1.05, -1.0, 1.2], 0.1) == [[3], [0, 1], [2]]
    # Measured from the group's best: 1.2, 1.12, 1.04 do not chain into one tie with tolerance 0.1.
    assert groups_from_scores([1.2, 1.12, 1.04], 0.1) == [[0, 1], [2]]
    assert groups_from_scores([3.0, 3.0], 0.0) == [[0], [1]]  # tolerance 0: no ties at all


# --------------------------------------------------------------------------- runs (SQLite and PostgreSQL)


@dataclass
class ScriptedJudge:
    """A text judge answering each (task, card order) from a script: what a model would reply."""

    script: dict

    def identity(self):
        return {"backend": "scripted", "model": "script-1"}

    def complete_many(self, requests, *, max_tokens, reporter=None):
        self.seen = getattr(self, "seen", []) + [(r.task_id, r.order) for r in requests]
        return [ChatReply(text=self.script.get((r.task_id, r.order), "Verdict: A")) for r in requests]


def test_ranking_groups_are_judged_in_two_orders_stored_and_resumed(engine):
    built = build_project(engine, n_pairwise=2, name="ranked")
    consistent, inconsistent, unparsed, later = add_ranking_tasks(engine, built.project.id, 4, k=3)
    script = {
        (consistent, "shown"): "Ranking: C > A = B", (consistent, "reversed"): "Ranking: A > B = C",
        (inconsistent, "shown"): "Ranking: A > B > C", (inconsistent, "reversed"): "Ranking: A > B > C",
        (unparsed, "shown"): "I like them all.", (unparsed, "reversed"): "Ranking: A > B > C",
        (later, "shown"): "Ranking: B > C > A", (later, "reversed"): "Ranking: C > A > B",
    }
    judge = ScriptedJudge(script)
    first = judge_project(engine, SYSTEM, "ranked", judge, JudgeOptions(name="scripted", kinds=("ranking",), limit=3, batch_tasks=2))
    assert first.judged == 3 and first.requests == 6
    assert sorted(judge.seen) == sorted((t, o) for t in (consistent, inconsistent, unparsed) for o in ("shown", "reversed"))
    again = judge_project(engine, SYSTEM, "ranked", judge, JudgeOptions(name="scripted", kinds=("ranking",), batch_tasks=2))
    assert again.pending == 1 and again.judged == 1  # only the group not judged yet
    assert judge_project(engine, SYSTEM, "ranked", judge, JudgeOptions(name="scripted", kinds=("ranking",))).pending == 0

    user = _rows(engine, User, username="judge:scripted")[0]
    judgments = {j.task_id: j for j in _rows(engine, Judgment, user_id=user.id)}
    assert sorted(judgments) == sorted([consistent, inconsistent, unparsed, later])
    rankings = {r.task_id: r for r in _rows(engine, Ranking, user_id=user.id)}
    assert set(rankings) == {consistent}  # no label for inconsistent or unparsed groups
    assert rankings[consistent].groups == [[2], [0, 1]] == judgments[consistent].verdict["order"]
    assert judgments[inconsistent].status == "inconsistent" and judgments[later].status == "inconsistent"
    assert judgments[unparsed].status == "unparsed" and judgments[unparsed].raw[0] == {"order": "shown", "text": "I like them all."}
    for j in judgments.values():
        assert j.kind == "ranking" and j.template_hash == JudgeTemplates().hash_for("ranking") and j.model == {"backend": "scripted", "model": "script-1"}
        assert [r["order"] for r in j.raw] == ["shown", "reversed"]


@dataclass
class ScoreJudge:
    """A score judge (the `RewardJudge` interface): a reply's score is its length in words."""

    tie_margin: float = 0.5

    def identity(self):
        return {"backend": "reward", "model": "word-count"}

    def scores(self, prompts, responses):
        return [float(len(text.split())) for text in responses]


def test_a_score_judge_orders_the_replies_by_score_with_ties(engine):
    built = build_project(engine, name="scored")
    (task,) = add_ranking_tasks(engine, built.project.id, 1, k=4)  # card j has j + 1 sentences: longer is later
    summary = judge_project(engine, SYSTEM, "scored", ScoreJudge(), JudgeOptions(name="words", kinds=("ranking",)))
    assert summary.counts[("ranking", "parsed")] == 1
    (ranking,) = _rows(engine, Ranking, task_id=task)
    assert ranking.groups == [[3], [2], [1], [0]]
    (judgment,) = _rows(engine, Judgment, task_id=task)
    assert judgment.raw[0]["order"] == "scores" and judgment.raw[0]["scores"] == sorted(judgment.raw[0]["scores"])
    # A tolerance wider than the gaps ties neighbours to the group's best.
    built = build_project(engine, name="scored-wide")
    (task,) = add_ranking_tasks(engine, built.project.id, 1, k=4, tag="wide")
    judge_project(engine, SYSTEM, "scored-wide", ScoreJudge(tie_margin=1000), JudgeOptions(name="words", kinds=("ranking",)))
    assert _rows(engine, Ranking, task_id=task)[0].groups == [[0, 1, 2, 3]]


# --------------------------------------------------------------------------- metrics


def test_consensus_order_by_mean_rank():
    assert consensus_order([[[0], [1], [2]], [[1], [0], [2]]], 3) == [[0, 1], [2]]
    assert consensus_order([[[2], [0, 1]]], 3) == [[2], [0, 1]]


def test_judges_metrics_measure_ranking_agreement_with_the_human_consensus(engine):
    from rlhf.db import session_scope
    from rlhf.schema import utcnow

    built = build_project(engine, name="ranked-people")
    tasks = add_ranking_tasks(engine, built.project.id, 3, k=3)
    people = add_annotators(engine, 3, prefix="ranker")
    # Every person ranks card C > B > A except one dissent on the last task.
    with session_scope(engine, write=True) as session:
        for t in tasks:
            for i, person in enumerate(people):
                groups = [[0], [1], [2]] if (t == tasks[-1] and i == 0) else [[2], [1], [0]]
                session.add(Ranking(task_id=t, user_id=person.id, groups=groups, shown_order=[0, 1, 2], created_at=utcnow(), updated_at=utcnow()))
    script = {(tasks[0], "shown"): "Ranking: C > B > A", (tasks[0], "reversed"): "Ranking: A > B > C",  # agrees: tau 1
              (tasks[1], "shown"): "Ranking: A > B > C", (tasks[1], "reversed"): "Ranking: C > B > A",  # the reverse: tau -1
              (tasks[2], "shown"): "Ranking: A > B > C", (tasks[2], "reversed"): "Ranking: A > B > C"}  # inconsistent
    judge_project(engine, SYSTEM, "ranked-people", ScriptedJudge(script), JudgeOptions(name="scripted", kinds=("ranking",)))
    entry = judge_report(engine, "ranked-people")["judges"]["judge:scripted"]["rankings"]
    assert entry["status"] == {"parsed": 2, "inconsistent": 1, "unparsed": 0}
    assert entry["position_consistency"] == pytest.approx(2 / 3)
    assert entry["tau_with_consensus"] == pytest.approx(0.0) and entry["consensus_n"] == 2  # (1 + -1) / 2
    assert entry["mean_tau_between_orders"] == pytest.approx((1 + 1 - 1) / 3)
    # The people, each against the other two: 6 taus of 1 on the first two tasks; on the last the
    # dissenter has tau -1, and for the other two the others' consensus (dissent + agree) is one
    # three-way tie, where tau is undefined and left out: (6 - 1) / 7.
    assert entry["human_loo_n"] == 7 and entry["human_loo_tau"] == pytest.approx(5 / 7)
    summary = report_tables(judge_report(engine, "ranked-people"))["summary"]
    assert summary.loc[0, "rankings_judged"] == 3 and summary.loc[0, "ranking_tau_with_consensus"] == pytest.approx(0.0)


def test_a_simulated_judge_ranks_groups_and_tracks_the_people(engine):
    built = build_project(engine, name="sim-ranked")
    add_ranking_tasks(engine, built.project.id, 6, k=4)
    summary = judge_project(engine, SYSTEM, "sim-ranked", SimulatedJudge(noise=0.01, seed=1), JudgeOptions(name="sim", kinds=("ranking",)))
    assert summary.judged == 6 and summary.counts[("ranking", "unparsed")] == 0
    entry = judge_report(engine, "sim-ranked")["judges"]["judge:sim"]["rankings"]
    assert entry["judged"] == 6 and entry["status"]["parsed"] + entry["status"]["inconsistent"] == 6


def test_the_cli_judges_ranking_groups_and_refuses_a_ranking_template_without_the_replies(engine, db_url, tmp_path):
    import json

    from typer.testing import CliRunner

    from rlhf.cli import app

    built = build_project(engine, n_pairwise=1, name="cli-ranked")
    add_ranking_tasks(engine, built.project.id, 2, k=5)
    bad = tmp_path / "rank.txt"
    bad.write_text("Rank {letters} for {prompt}")
    runner = CliRunner()
    result = runner.invoke(app, ["judge", "--project", "cli-ranked", "--simulated", "--ranking-template", str(bad), "--database-url", db_url])
    assert result.exit_code == 2 and "{responses}" in result.output and "rank.txt" in result.output
    result = runner.invoke(app, ["judge", "--project", "cli-ranked", "--simulated", "--json", "--database-url", db_url])
    assert result.exit_code == 0, result.output
    counts = json.loads(result.output)["counts"]
    assert sum(n for key, n in counts.items() if key.startswith("ranking/")) == 2 and sum(counts.values()) == 3
