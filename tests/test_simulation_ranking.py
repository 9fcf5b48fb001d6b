"""Simulated annotators rank: planted noise, position and length biases and spammers show in the ranking statistics."""

from __future__ import annotations

import random

import pytest

from rlhf.importer import import_records
from rlhf.projects import create_project
from rlhf.roles import SYSTEM
from rlhf.simulation import SimulationConfig, simulate
from rlhf.simulation.annotators import AnnotatorProfile
from rlhf.simulation.ranking import rank_cards
from test_simulation import project_records


def profile(**traits) -> AnnotatorProfile:
    values = dict(index=0, username="x", is_spammer=False, noise=0.05, position_bias=0.0, length_bias=0.0, rating_noise=0.05,
                  pairwise_seconds=12.0, rating_seconds=20.0)  # fmt: skip
    return AnnotatorProfile(**{**values, **traits})


def test_a_careful_annotator_follows_gold_and_biases_pull_as_planted():
    golds, chars = [0.2, 0.9, 0.5, 0.7], [100, 100, 100, 100]
    careful = [rank_cards(profile(), random.Random(i), golds, chars).groups for i in range(50)]
    assert sum(g == ((1,), (3,), (2,), (0,)) for g in careful) > 40
    biased = [rank_cards(profile(position_bias=1.0), random.Random(i), golds, chars).groups for i in range(20)]
    assert all(g == ((0,), (1,), (2,), (3,)) for g in biased)
    long_first = [rank_cards(profile(noise=0.5, length_bias=4.0), random.Random(i), [0.5] * 4, [50, 400, 50, 50]).groups[0] for i in range(60)]
    assert sum(1 in g for g in long_first) > 40
    spam = [rank_cards(profile(is_spammer=True, pairwise_seconds=1.0, rating_seconds=1.0), random.Random(i), golds, chars) for i in range(30)]
    assert len({s.groups for s in spam}) > 5 and all(s.time_spent_s < 3 for s in spam)
    slow = rank_cards(profile(), random.Random(0), golds, chars).time_spent_s
    assert slow > 5  # reading four replies


def test_simulated_rankings_reach_the_statistics(engine):
    from rlhf.stats import StatsConfig, project_stats

    create_project(engine, SYSTEM, "p", rank_k_min=3, rank_k_max=3)
    import_records(engine, project_records(20), "p")
    config = SimulationConfig(annotators=5, spammers=1, noise=0.05, position_bias=0.9, position_bias_share=0.25, kind="ranking", seed=3)
    result = simulate(engine, "p", config)
    assert (result.rankings, result.stopped) == (20 * 3, "exhausted") and "60 rankings" in result.line()
    stats = project_stats(engine, SYSTEM, "p", StatsConfig(leaderboard_bootstrap=0)).rankings
    truth = {p.username: p for p in result.profiles}
    table = stats.annotators.set_index("annotator")
    from rlhf.db import session_scope
    from rlhf.schema import User

    with session_scope(engine) as s:
        names = {u.id: u.username for u in s.query(User).all()}
    by_name = {names[a]: row for a, row in table.iterrows()}
    spammer = next(n for n, p in truth.items() if p.is_spammer)
    biased = next(n for n, p in truth.items() if p.position_bias > 0)
    careful = [n for n, p in truth.items() if not p.is_spammer and p.position_bias == 0]
    assert set(by_name) == set(truth)  # everyone ranked
    assert by_name[biased]["position_tau"] > 0.5 > max(abs(by_name[n]["position_tau"]) for n in careful)
    assert by_name[spammer]["loo_tau"] < min(by_name[n]["loo_tau"] for n in careful)
    assert list(stats.leaderboard["model"])[0] == "careful"
