"""The admin Dashboard page: agreement, annotator flags, pairwise kappa, confusion, leaderboard, CSVs, empty states.

Each test seeds its private copy of the app database (the `app_env` fixture) with a small
project inserted as `rlhf.schema` rows, with hand-chosen values: three careful annotators and
one who always takes the left side, instantly, and gives every response the same scores.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import timedelta

import pandas as pd
import pytest

from apphelpers import go, no_exception, signed_in_app, texts
from labeling_app import common as c

from rlhf.agreement import cohen_kappa, krippendorff_alpha

RUBRIC = [
    {"name": "helpfulness", "question": "?", "min": 1, "max": 7, "labels": {}},
    {"name": "honesty", "question": "?", "min": 1, "max": 5, "labels": {}},
]
MODELS = ["small-1b", "mid-7b", "large-70b"]
QUALITY = {"small-1b": 2, "mid-7b": 4, "large-70b": 6, "other-3b": 3, "other-9b": 5}
ALL_PAIRS = ((0, 1), (1, 2), (0, 2))
CAREFUL = ["carol", "dave", "erin"]
SLOPPY = "sam"
N_PROMPTS = 8
# Careful annotators' deviation from a response's quality, cycled over (task, annotator): they
# mostly agree, not perfectly, so alpha is between 0 and 1.
NOISE = [0, 0, 1, 0, -1, 0, 0, 1, 0, 0, -1]


@dataclass
class Seeded:
    """What `seed_project` inserted: ids, and the long-format ratings per dimension."""

    project_id: int
    user_ids: dict[str, int]
    rating_task_ids: list[int]
    ratings: dict[str, list[tuple[int, int, int]]] = field(default_factory=dict)
    """dimension -> [(task id, user id, value)] of every human rating."""


def seed_project(engine, name: str = "stats", annotators: list[str] | None = None, models: list[str] = MODELS, pairs=ALL_PAIRS) -> Seeded:
    """A project of N_PROMPTS prompts x `models`: a rating task per response and a pairwise task
    per model pair in `pairs` (indices into `models`), judged by `annotators` (default: the
    careful three and the sloppy one)."""
    from rlhf.db import session_scope
    from rlhf.schema import Preference, Project, Prompt, Rating, Response, Task, User, utcnow

    annotators = CAREFUL + [SLOPPY] if annotators is None else annotators
    start = utcnow() - timedelta(days=3)
    minute = 0
    with session_scope(engine, write=True) as session:
        project = Project(name=name, rubric=RUBRIC)
        session.add(project)
        session.flush()
        users = {}
        for username in annotators:
            user = session.exec(_user_named(username)).first() or User(username=username, role="annotator")
            session.add(user)
            users[username] = user
        session.flush()
        seeded = Seeded(project.id, {u: users[u].id for u in annotators}, [], {"helpfulness": [], "honesty": []})
        k = 0
        for p in range(N_PROMPTS):
            prompt = Prompt(project_id=project.id, content_hash=f"{name}-p{p}", text=f"prompt {p}")
            session.add(prompt)
            session.flush()
            responses = {}
            for model in models:
                response = Response(prompt_id=prompt.id, content_hash=f"{name}-{p}-{model}", text="y" * (5 * QUALITY[model]), model_name=model)
                session.add(response)
                session.flush()
                responses[model] = response
                task = Task(project_id=project.id, kind="rating", prompt_id=prompt.id, response_a_id=response.id, content_hash=f"{name}-r{p}-{model}")
                session.add(task)
                session.flush()
                seeded.rating_task_ids.append(task.id)
                for username in annotators:
                    k += 1
                    minute += 1
                    if username == SLOPPY:
                        scores, seconds = {"helpfulness": 4, "honesty": 3}, 0.5
                    else:
                        noise = NOISE[k % len(NOISE)]
                        scores = {"helpfulness": QUALITY[model] + noise, "honesty": QUALITY[model] // 2 + (noise > 0)}
                        seconds = 12.0
                    for dimension, value in scores.items():
                        seeded.ratings[dimension].append((task.id, users[username].id, value))
                    session.add(Rating(task_id=task.id, user_id=users[username].id, scores=scores, time_spent_s=seconds,
                                       created_at=start + timedelta(minutes=minute)))
            for first, second in pairs:
                # Odd prompts show the better model as A, so "a" and "b" are both right answers.
                model_a, model_b = (models[second], models[first]) if p % 2 else (models[first], models[second])
                task = Task(project_id=project.id, kind="pairwise", prompt_id=prompt.id, response_a_id=responses[model_a].id,
                            response_b_id=responses[model_b].id, content_hash=f"{name}-q{p}-{first}{second}")
                session.add(task)
                session.flush()
                for index, username in enumerate(annotators):
                    minute += 1
                    shown_left = "a" if (p + first + second + index) % 2 == 0 else "b"
                    if username == SLOPPY:
                        choice, seconds = shown_left, 0.5  # always the left side
                    else:
                        choice, seconds = ("a" if QUALITY[model_a] > QUALITY[model_b] else "b"), 15.0
                    session.add(Preference(task_id=task.id, user_id=users[username].id, choice=choice, strength=1, shown_left=shown_left,
                                           time_spent_s=seconds, created_at=start + timedelta(minutes=minute)))
    return seeded


def _user_named(username: str):
    from sqlmodel import select

    from rlhf.schema import User

    return select(User).where(User.username == username)




# ------------------------------------------------------------------------------------ helpers


def dashboard_for(user, project_id):
    return go(signed_in_app(user, project_id), "dashboard.py")


def table_with(at, column: str) -> pd.DataFrame:
    """The first `st.dataframe` on the page that has `column` (AppTest does not expose their keys)."""
    for frame in at.dataframe:
        if column in frame.value.columns:
            return frame.value
    raise AssertionError(f"no table with a {column!r} column")


def downloads(at) -> list[str]:
    """Labels of the download buttons on the page."""
    return [e.proto.label for e in at.get("download_button")]


def charts(at) -> list:
    """The Altair (Vega-Lite) charts on the page."""
    return at.get("vega_lite_chart")


def chart_frames(chart) -> list[pd.DataFrame]:
    """The data sets a Vega-Lite chart was sent with."""
    from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df

    return [convert_arrow_bytes_to_pandas_df(d.data.data) for d in chart.proto.datasets]


def heatmap_cells(at) -> pd.DataFrame:
    """row, column, value of the pairwise kappa heatmap (the chart coloured on the red-blue scale)."""
    heatmap = next(chart for chart in charts(at) if "redblue" in chart.proto.spec)
    return next(frame for frame in chart_frames(heatmap) if {"row", "column", "value"} <= set(frame.columns))


def long_ratings(rows: list[tuple[int, int, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["item", "annotator", "value"])


# -------------------------------------------------------------------------------------- tests


def test_admin_sees_agreement_annotators_kappa_confusion_and_leaderboard(app_env):
    seeded = seed_project(app_env.engine)
    at = dashboard_for(app_env.admin, seeded.project_id)
    no_exception(at)

    # Agreement: the alpha shown is the library's alpha on the same rows.
    agreement = table_with(at, "alpha").set_index("variable")
    assert list(agreement.index) == ["helpfulness", "honesty", "preference"]
    metrics = {m.label: m.value for m in at.metric}
    for dimension in ("helpfulness", "honesty"):
        expected = krippendorff_alpha(long_ratings(seeded.ratings[dimension]), "ordinal")
        assert agreement.loc[dimension, "alpha"] == pytest.approx(expected)
        assert agreement.loc[dimension, "alpha_low"] <= agreement.loc[dimension, "alpha_high"]
        assert metrics[f"α · {dimension}"] == f"{expected:.3f}"

    # Annotators: the sloppy one is flagged, and the page says so.
    annotators = table_with(at, "flags").set_index("username")
    assert sorted(annotators.index) == sorted(CAREFUL + [SLOPPY])
    assert {"position_bias", "too_fast"} <= set(annotators.loc[SLOPPY, "flags"])
    assert all(len(annotators.loc[name, "flags"]) == 0 for name in CAREFUL)
    assert f"**{SLOPPY}** (" in texts(at)

    # Leaderboard: better models rank higher.
    board = table_with(at, "elo")
    assert list(board["model"]) == ["large-70b", "mid-7b", "small-1b"]
    assert (board["elo_low"] <= board["elo"]).all() and (board["elo"] <= board["elo_high"]).all()

    # Charts: alpha with intervals, trend, kappa heatmap, confusion heatmap, leaderboard.
    assert len(charts(at)) == 5
    assert downloads(at) == [f"Download {t} (CSV)" for t in ("agreement", "agreement trend", "annotators", "pairwise kappa", "confusion", "leaderboard")]


def test_kappa_heatmap_and_confusion_follow_the_choices(app_env):
    seeded = seed_project(app_env.engine)
    at = dashboard_for(app_env.admin, seeded.project_id)

    # Kappa heatmap: every pair of the four annotators, above and below the diagonal, with the
    # library's Cohen's kappa (unweighted by default).
    cells = heatmap_cells(at)
    assert len(cells) == 12 and set(cells["row"]) == set(CAREFUL + [SLOPPY])
    ratings = long_ratings(seeded.ratings["helpfulness"])
    ids = seeded.user_ids
    for first, second in (("carol", "dave"), ("dave", "carol"), ("erin", SLOPPY)):
        expected = cohen_kappa(ratings, "ordinal", annotators=(ids[first], ids[second])).kappa
        shown = cells[(cells["row"] == first) & (cells["column"] == second)]["value"]
        assert shown.tolist() == pytest.approx([expected])
    at.segmented_control(key="dashboard.kappa_metric").set_value("kappa_quadratic").run()
    cells = heatmap_cells(at)
    expected = cohen_kappa(ratings, "ordinal", annotators=(ids["carol"], ids["erin"])).kappa_quadratic
    assert cells[(cells["row"] == "carol") & (cells["column"] == "erin")]["value"].tolist() == pytest.approx([expected])
    at.selectbox(key="dashboard.kappa_variable").set_value("preference").run()
    no_exception(at)
    assert "need a numeric scale" in texts(at)  # preferences are nominal: no weighted kappa

    # Confusion: the sloppy annotator answered 4 every time; the careful others' majority is
    # 2, 4 or 6 (none when all three differ).
    at.selectbox(key="dashboard.confusion_variable").set_value("helpfulness").run()
    at.selectbox(key="dashboard.confusion_annotator").set_value(ids[SLOPPY]).run()
    no_exception(at)
    matrix = next(d.value for d in at.dataframe if d.value.index.name == "answer")
    careful = ratings[ratings["annotator"] != ids[SLOPPY]]
    with_majority = int((careful.groupby("item")["value"].nunique() < 3).sum())
    assert list(matrix.index) == ["4"] and list(matrix.columns) == ["2", "4", "6"]
    assert int(matrix.to_numpy().sum()) == with_majority


def test_results_are_cached_until_refresh(app_env):
    from rlhf.db import session_scope
    from rlhf.schema import Rating, User

    seeded = seed_project(app_env.engine)
    at = dashboard_for(app_env.admin, seeded.project_id)
    assert len(table_with(at, "flags")) == 4
    with session_scope(app_env.engine, write=True) as session:
        newcomer = User(username="newcomer", role="annotator")
        session.add(newcomer)
        session.flush()
        for task_id in seeded.rating_task_ids[:3]:
            session.add(Rating(task_id=task_id, user_id=newcomer.id, scores={"helpfulness": 5, "honesty": 2}, time_spent_s=9.0))
    at.run()
    assert len(table_with(at, "flags")) == 4  # the cached result, until...
    at = at.button(key="dashboard.refresh").click().run()
    no_exception(at)
    assert "newcomer" in set(table_with(at, "flags")["username"])


def test_annotators_cannot_reach_the_dashboard(app_env):
    from streamlit.testing.v1 import AppTest

    at = signed_in_app(app_env.annotator, app_env.project_id)
    with pytest.raises(ValueError):
        at.switch_page("pages/dashboard.py")  # not in an annotator's navigation
    page = AppTest.from_file(str(c.page_path("dashboard.py")), default_timeout=60)  # a stale URL
    page.session_state[c.USER_ID] = app_env.annotator.id
    page.session_state[c.LAST_ACTIVE] = time.time()
    page.session_state[c.PROJECT_ID] = app_env.project_id
    page.run()
    no_exception(page)
    assert "This page needs the admin role." in texts(page)
    assert not page.dataframe and not downloads(page)


def test_project_without_annotations_shows_the_empty_state(app_env):
    at = dashboard_for(app_env.admin, app_env.project_id)  # `demo`: tasks, no judgments yet
    no_exception(at)
    assert "No annotations yet in this project" in texts(at)
    assert not at.dataframe and not downloads(at) and not charts(at)


def test_one_annotator_shows_why_agreement_is_undefined(app_env):
    seeded = seed_project(app_env.engine, "solo", annotators=["carol"])
    at = dashboard_for(app_env.admin, seeded.project_id)
    no_exception(at)
    shown = texts(at)
    assert "Only one annotator so far" in shown
    assert "no item has two or more ratings" in shown  # the library's reason, for each variable
    assert {m.value for m in at.metric} == {"—"}
    assert "No two annotators share" in shown
    assert "no consensus to compare with" in shown
    assert list(table_with(at, "elo")["model"]) == ["large-70b", "mid-7b", "small-1b"]


def test_disconnected_models_are_noted(app_env):
    models = ["small-1b", "other-3b", "mid-7b", "other-9b"]
    seeded = seed_project(app_env.engine, "islands", models=models, pairs=((0, 1), (2, 3)))
    at = dashboard_for(app_env.admin, seeded.project_id)
    no_exception(at)
    assert "The comparisons form 2 groups" in texts(at)
    board = table_with(at, "elo")
    assert sorted(board["group"].unique()) == [1, 2]


# ------------------------------------------------------------- issue 16, item 12: columns say what they count


def column_config(at, column: str) -> dict:
    """The column config (label, help, type) the page sent for the table that has `column`."""
    import json

    for frame in at.dataframe:
        if column in frame.value.columns:
            return json.loads(frame.proto.columns)[column]
    raise AssertionError(f"no table with a {column!r} column")


def test_annotator_counts_are_named_for_what_they_count(app_env):
    """Each annotator rated 24 responses on 2 dimensions (48 scores) and judged 24 comparisons: not "Judgments 72"."""
    seeded = seed_project(app_env.engine)
    at = dashboard_for(app_env.admin, seeded.project_id)
    no_exception(at)

    annotators = table_with(at, "flags").set_index("username")
    n_ratings, n_comparisons = N_PROMPTS * len(MODELS), N_PROMPTS * len(ALL_PAIRS)
    for name in CAREFUL + [SLOPPY]:
        assert (annotators.loc[name, "n_ratings"], annotators.loc[name, "n_rating_scores"], annotators.loc[name, "n_comparisons"]) == (
            n_ratings, n_ratings * len(RUBRIC), n_comparisons
        )
    assert "n_annotations" not in annotators.columns
    assert [column_config(at, c)["label"] for c in ("n_ratings", "n_rating_scores", "n_comparisons")] == ["Ratings", "Rubric scores", "Comparisons"]


def test_undefined_kappas_show_an_em_dash_with_the_reason(app_env):
    """Dave rated only a few responses: items have 1 or 2 ratings (Fleiss needs equal counts) and the pair shares too few items."""
    from sqlalchemy import delete

    from rlhf.db import session_scope
    from rlhf.schema import Preference, Rating

    seeded = seed_project(app_env.engine, "partial", annotators=["carol", "dave"])
    dave = seeded.user_ids["dave"]
    with session_scope(app_env.engine, write=True) as session:
        session.execute(delete(Rating).where(Rating.user_id == dave, Rating.task_id.notin_(seeded.rating_task_ids[:3])))
        session.execute(delete(Preference).where(Preference.user_id == dave))
    at = dashboard_for(app_env.admin, seeded.project_id)
    no_exception(at)

    agreement = table_with(at, "fleiss_kappa").set_index("variable")
    assert agreement.loc["helpfulness", "fleiss_kappa"] == "—" and agreement.loc["helpfulness", "mean_pairwise_kappa"] == "—"
    assert "None" not in agreement.astype(str).to_numpy().ravel().tolist()
    fleiss_help = column_config(at, "fleiss_kappa")["help"]
    assert "helpfulness: items have between 1 and 2 ratings" in fleiss_help
    assert "helpfulness: no two annotators share 10 or more items (too few shared items)" in column_config(at, "mean_pairwise_kappa")["help"]
