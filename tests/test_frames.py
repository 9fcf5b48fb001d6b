"""Annotation frames: one row per rating dimension / judgment, external labels marked, typed columns.

The seeding helpers here are shared by the export tests (`from test_frames import ...`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import pytest

from rlhf.db import session_scope
from rlhf.frames import (
    PREFERENCE_COLUMNS,
    RATING_COLUMNS,
    RESPONSE_COLUMNS,
    ProjectNotFound,
    humans_only,
    preference_frame,
    project_id_of,
    rating_frame,
    response_frame,
)
from rlhf.schema import Preference, Project, Prompt, Rating, Response, Task, User


@dataclass
class Seeded:
    """Ids of what `seed_project` created, by name."""

    project_id: int
    users: dict[str, int] = field(default_factory=dict)
    prompts: dict[str, int] = field(default_factory=dict)
    responses: dict[str, int] = field(default_factory=dict)
    tasks: dict[str, int] = field(default_factory=dict)


def seed_project(engine, name: str = "proj", *, prompts: dict, pairs: dict, ratings: dict | None = None, externals=("judge",)):
    """Insert a project through `rlhf.schema`.

    prompts: {prompt_key: (text or messages list, {response_key: text})}
    pairs:   {task_key: (prompt_key, resp_a, resp_b, {username: (choice, strength)})}
    ratings: {task_key: (prompt_key, resp, {username: {dimension: value}})}
    Users named in `externals` get role `external`; others are annotators.
    """
    seeded = Seeded(project_id=0)
    with session_scope(engine, write=True) as session:
        project = Project(name=name)
        session.add(project)
        session.flush()
        seeded.project_id = project.id
        usernames = {u for _, _, _, votes in pairs.values() for u in votes}
        usernames |= {u for _, _, votes in (ratings or {}).values() for u in votes}
        for username in sorted(usernames):
            user = User(username=f"{name}-{username}", role="external" if username in externals else "annotator")
            session.add(user)
            session.flush()
            seeded.users[username] = user.id
        for prompt_key, (content, responses) in prompts.items():
            if isinstance(content, list):
                prompt = Prompt(project_id=project.id, content_hash=f"h-{prompt_key}", text=content[-1]["content"], messages=content)
            else:
                prompt = Prompt(project_id=project.id, content_hash=f"h-{prompt_key}", text=content)
            session.add(prompt)
            session.flush()
            seeded.prompts[prompt_key] = prompt.id
            for response_key, text in responses.items():
                response = Response(prompt_id=prompt.id, content_hash=f"r-{response_key}", text=text, model_name=f"model-{response_key[-1]}")
                session.add(response)
                session.flush()
                seeded.responses[response_key] = response.id
        for task_key, (prompt_key, resp_a, resp_b, votes) in pairs.items():
            task = Task(
                project_id=project.id,
                kind="pairwise",
                prompt_id=seeded.prompts[prompt_key],
                response_a_id=seeded.responses[resp_a],
                response_b_id=seeded.responses[resp_b],
                content_hash=f"t-{task_key}",
                annotation_count=len(votes),
            )
            session.add(task)
            session.flush()
            seeded.tasks[task_key] = task.id
            for index, (username, (choice, strength)) in enumerate(sorted(votes.items())):
                session.add(
                    Preference(
                        task_id=task.id,
                        user_id=seeded.users[username],
                        choice=choice,
                        strength=strength,
                        shown_left="ab"[index % 2],
                        time_spent_s=2.0 + index,
                    )
                )
        for task_key, (prompt_key, resp, votes) in (ratings or {}).items():
            task = Task(
                project_id=project.id,
                kind="rating",
                prompt_id=seeded.prompts[prompt_key],
                response_a_id=seeded.responses[resp],
                content_hash=f"t-{task_key}",
                annotation_count=len(votes),
            )
            session.add(task)
            session.flush()
            seeded.tasks[task_key] = task.id
            for username, scores in sorted(votes.items()):
                session.add(Rating(task_id=task.id, user_id=seeded.users[username], scores=scores, time_spent_s=4.0))
    return seeded


SMALL_PROMPTS = {
    "p1": ("Say hello", {"p1a": "Hello there!", "p1b": "Go away."}),
    "p2": ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Two plus two?"}], {"p2a": "Four.", "p2b": "Five."}),
}


def test_frames_have_one_row_per_judgment_and_per_dimension(engine):
    seeded = seed_project(
        engine,
        prompts=SMALL_PROMPTS,
        pairs={
            "t1": ("p1", "p1a", "p1b", {"ann1": ("a", 2), "ann2": ("a", 1), "judge": ("b", 1)}),
            "t2": ("p2", "p2a", "p2b", {"ann1": ("tie", 0)}),
        },
        ratings={"r1": ("p1", "p1a", {"ann1": {"helpfulness": 6, "honesty": 5}, "judge": {"helpfulness": 2, "honesty": 7}})},
    )
    prefs = preference_frame(engine, "proj")
    assert list(prefs.columns) == PREFERENCE_COLUMNS
    assert len(prefs) == 4
    t1 = prefs[prefs.task_id == seeded.tasks["t1"]].sort_values("annotator_id")
    assert set(t1.choice) == {"a", "b"}
    assert set(t1.annotator_role) == {"annotator", "external"}
    first = t1.iloc[0]
    assert first.len_a == len("Hello there!") and first.len_b == len("Go away.")
    assert (first.model_a, first.model_b) == ("model-a", "model-b")
    assert str(prefs.created_at.dt.tz) == "UTC"
    assert prefs.strength.dtype == "int64" and prefs.is_gold.dtype == bool
    assert len(humans_only(prefs)) == 3

    ratings = rating_frame(engine, seeded.project_id)  # by id as well as by name
    assert list(ratings.columns) == RATING_COLUMNS
    assert len(ratings) == 4  # 2 ratings x 2 dimensions
    human = humans_only(ratings).set_index("dimension")["value"]
    assert human.to_dict() == {"helpfulness": 6.0, "honesty": 5.0}
    assert ratings.value.dtype == "float64"
    assert set(ratings.response_id) == {seeded.responses["p1a"]}


def test_response_frame_carries_prompt_messages(engine):
    seed_project(engine, prompts=SMALL_PROMPTS, pairs={})
    responses = response_frame(engine, "proj").set_index("response_id")
    assert list(responses.reset_index().columns) == RESPONSE_COLUMNS
    assert len(responses) == 4
    chat = responses[responses.prompt_hash == "h-p2"].iloc[0]
    assert chat.prompt_messages == SMALL_PROMPTS["p2"][0]
    plain = responses[responses.prompt_hash == "h-p1"].iloc[0]
    assert plain.prompt_messages is None and plain.prompt_text == "Say hello"


def test_empty_project_gives_empty_typed_frames(engine):
    seed_project(engine, prompts={}, pairs={})
    assert preference_frame(engine, "proj").empty
    ratings = rating_frame(engine, "proj")
    assert ratings.empty and list(ratings.columns) == RATING_COLUMNS


def test_unknown_project_is_a_clear_error(engine):
    with pytest.raises(ProjectNotFound, match="no-such"):
        preference_frame(engine, "no-such")
    with pytest.raises(ProjectNotFound):
        project_id_of(engine, 999)


def test_other_projects_rows_are_not_read(engine):
    seed_project(engine, "one", prompts={"p1": SMALL_PROMPTS["p1"]}, pairs={"t1": ("p1", "p1a", "p1b", {"ann1": ("a", 1)})})
    seed_project(
        engine,
        "two",
        prompts={"q1": ("Other", {"q1a": "x", "q1b": "y"})},
        pairs={"u1": ("q1", "q1a", "q1b", {"ann1": ("b", 1), "ann2": ("b", 2)})},
    )
    assert len(preference_frame(engine, "one")) == 1
    assert len(preference_frame(engine, "two")) == 2
    assert isinstance(response_frame(engine, "two"), pd.DataFrame) and len(response_frame(engine, "two")) == 2


def test_a_column_subset_reads_only_those_columns(engine):
    seeded = seed_project(
        engine,
        prompts=SMALL_PROMPTS,
        pairs={"t1": ("p1", "p1a", "p1b", {"ann2": ("b", 1), "ann1": ("a", 2), "judge": ("b", 1)})},
        ratings={"r1": ("p1", "p1a", {"ann1": {"helpfulness": 6}})},
    )
    prefs = preference_frame(engine, "proj", ["task_id", "choice", "annotator_role", "model_b"])
    assert list(prefs.columns) == ["task_id", "choice", "annotator_role", "model_b"]
    assert list(prefs.model_b) == ["model-b"] * 3
    # Ordered by task, then annotator id (ann1 < ann2 < judge: users are created in name order).
    assert list(prefs.choice) == ["a", "b", "b"]
    ratings = rating_frame(engine, "proj", ["response_id", "value", "model_name"])
    assert ratings.to_dict("records") == [{"response_id": seeded.responses["p1a"], "value": 6.0, "model_name": "model-a"}]
    with pytest.raises(ValueError, match="unknown column"):
        preference_frame(engine, "proj", ["nope"])
