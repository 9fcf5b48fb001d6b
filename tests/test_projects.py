"""Projects: defaults, validation naming the field, updates validated as a whole, role checks."""

from __future__ import annotations

import pytest

from rlhf.projects import (
    ProjectNotFound,
    ProjectValidationError,
    create_project,
    get_or_create_project,
    get_project,
    list_projects,
    project_counts,
    update_project,
    validate_rubric,
)
from rlhf.roles import SYSTEM, PermissionDenied
from rlhf.schema import DEFAULT_RUBRIC, DEFAULT_TAGS, User

ANNOTATOR = User(id=10, username="ann", role="annotator")
ADMIN = User(id=11, username="root", role="admin")


def _store(engine, *users: User) -> None:
    """Give the module's User objects their rows: role checks read the account as stored."""
    from rlhf.db import session_scope

    with session_scope(engine, write=True) as session:
        for user in users:
            session.add(User(id=user.id, username=user.username, role=user.role, active=user.active))


def test_create_with_defaults_and_read_back(engine):
    created = create_project(engine, SYSTEM, "  demo  ", description="A demo", guidelines="# Be kind")

    project = get_project(engine, "demo")
    assert project.id == created.id and project.name == "demo"
    assert project.rubric == DEFAULT_RUBRIC and project.tags == DEFAULT_TAGS
    assert (project.overlap, project.max_overlap, project.gold_rate, project.visibility) == (3, 3, 0.0, "blind")
    assert (project.lease_minutes, project.seed, project.active) == (10, 0, True)
    assert get_project(engine, created.id).name == "demo"
    assert get_project(engine, str(created.id)).name == "demo"
    assert project_counts(engine, created.id) == {"prompts": 0, "responses": 0, "rating_tasks": 0, "pairwise_tasks": 0, "write_tasks": 0, "imports": 0}


def test_create_with_custom_settings(engine):
    rubric = [{"name": "quality", "min": 0, "max": 4, "labels": {0: "bad", "4": "great"}}]
    _store(engine, ADMIN)

    project = create_project(engine, ADMIN, "custom", rubric=rubric, tags=["a", "b"], overlap=2, max_overlap=5, gold_rate=0.1, visibility="reveal_after_submit", seed=9)

    assert project.rubric == [{"name": "quality", "min": 0, "max": 4, "labels": {"0": "bad", "4": "great"}}]
    assert (project.tags, project.overlap, project.max_overlap, project.gold_rate, project.seed) == (["a", "b"], 2, 5, 0.1, 9)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"rubric": []}, "rubric"),
        ({"rubric": "helpfulness"}, "rubric"),
        ({"rubric": [{"name": "a", "min": 1, "max": 5}, {"name": "a", "min": 1, "max": 5}]}, "rubric[1].name"),
        ({"rubric": [{"name": "a", "min": 5, "max": 5}]}, "rubric[0].max"),
        ({"rubric": [{"name": "a", "min": 1.5, "max": 5}]}, "rubric[0].min"),
        ({"rubric": [{"name": "a", "min": 1, "max": "7"}]}, "rubric[0].max"),
        ({"rubric": [{"min": 1, "max": 7}]}, "rubric[0].name"),
        ({"rubric": [{"name": "a", "min": 1, "max": 7, "labels": {"9": "off"}}]}, "rubric[0].labels.9"),
        ({"rubric": [{"name": "a", "min": 1, "max": 7, "labels": {"x": "off"}}]}, "rubric[0].labels.x"),
        ({"rubric": [{"name": "a", "min": 1, "max": 7, "colour": "red"}]}, "rubric[0]"),
        ({"tags": ["a", "a"]}, "tags[1]"),
        ({"tags": [""]}, "tags[0]"),
        ({"overlap": 0}, "overlap"),
        ({"overlap": 3, "max_overlap": 2}, "max_overlap"),
        ({"gold_rate": 1.0}, "gold_rate"),
        ({"gold_rate": -0.1}, "gold_rate"),
        ({"gold_rate": float("nan")}, "gold_rate"),
        ({"visibility": "public"}, "visibility"),
        ({"lease_minutes": 0}, "lease_minutes"),
        ({"seed": "7"}, "seed"),
    ],
)
def test_validation_names_the_field(sqlite_engine, kwargs, field):
    kwargs = dict(kwargs)
    name = kwargs.pop("name", "p")

    with pytest.raises(ProjectValidationError) as raised:
        create_project(sqlite_engine, SYSTEM, name, **kwargs)

    assert raised.value.field == field
    assert str(raised.value).startswith(f"{field}: ")
    assert list_projects(sqlite_engine) == []


def test_duplicate_names_are_refused(engine):
    create_project(engine, SYSTEM, "demo")

    with pytest.raises(ProjectValidationError, match="already exists"):
        create_project(engine, SYSTEM, "demo")


def test_update_validates_the_merged_settings(engine):
    create_project(engine, SYSTEM, "demo", overlap=2, max_overlap=4)

    updated = update_project(engine, SYSTEM, "demo", overlap=4, guidelines="new", active=False)
    assert (updated.overlap, updated.max_overlap, updated.guidelines, updated.active) == (4, 4, "new", False)
    with pytest.raises(ProjectValidationError) as raised:
        update_project(engine, SYSTEM, "demo", overlap=5)
    assert raised.value.field == "max_overlap"
    with pytest.raises(ProjectValidationError, match="not a project setting"):
        update_project(engine, SYSTEM, "demo", colour="red")
    assert get_project(engine, "demo").overlap == 4


def test_rename_and_rename_clash(engine):
    create_project(engine, SYSTEM, "a")
    create_project(engine, SYSTEM, "b")

    assert update_project(engine, SYSTEM, "a", name="c").name == "c"
    with pytest.raises(ProjectValidationError, match="already exists"):
        update_project(engine, SYSTEM, "c", name="b")
    assert [p.name for p in list_projects(engine)] == ["c", "b"]


def test_missing_project_is_a_clear_error(sqlite_engine):
    with pytest.raises(ProjectNotFound, match="no project 'ghost'"):
        get_project(sqlite_engine, "ghost")
    with pytest.raises(ProjectNotFound):
        update_project(sqlite_engine, SYSTEM, "ghost", overlap=2)


def test_annotators_may_read_but_not_write(sqlite_engine):
    create_project(sqlite_engine, SYSTEM, "demo")
    inactive_admin = User(id=12, username="old", role="admin", active=False)
    _store(sqlite_engine, ANNOTATOR, inactive_admin)

    with pytest.raises(PermissionDenied):
        create_project(sqlite_engine, ANNOTATOR, "mine")
    with pytest.raises(PermissionDenied):
        update_project(sqlite_engine, ANNOTATOR, "demo", overlap=1)
    with pytest.raises(PermissionDenied):
        get_or_create_project(sqlite_engine, ANNOTATOR, "new")
    with pytest.raises(PermissionDenied):
        create_project(sqlite_engine, inactive_admin, "mine")
    assert get_project(sqlite_engine, "demo").name == "demo"
    assert get_or_create_project(sqlite_engine, ANNOTATOR, "demo").name == "demo"  # reading is open


def test_get_or_create_is_idempotent(engine):
    _store(engine, ADMIN)
    first = get_or_create_project(engine, SYSTEM, "auto")
    second = get_or_create_project(engine, ADMIN, "auto")

    assert first.id == second.id and len(list_projects(engine)) == 1


def test_validate_rubric_returns_normalised_copy():
    rubric = [{"name": " clarity ", "question": "Clear?", "min": 1, "max": 3, "labels": {1: "no", 3: "yes"}}]

    assert validate_rubric(rubric) == [{"name": "clarity", "min": 1, "max": 3, "question": "Clear?", "labels": {"1": "no", "3": "yes"}}]
    assert rubric[0]["name"] == " clarity "  # the input is not modified


def test_judge_uses_are_off_by_default_and_switch_on_one_at_a_time(engine):
    from rlhf.projects import JUDGE_USES, JudgeUseDisabled, judge_use_enabled, require_judge_use

    project = create_project(engine, SYSTEM, "uses")
    assert project.judge_uses is None and not any(judge_use_enabled(project, use) for use in JUDGE_USES)
    with pytest.raises(JudgeUseDisabled, match=r"project 'uses': showing suggestions is off .*--judge-suggestions"):
        require_judge_use(project, "suggestions", "showing suggestions")
    project = update_project(engine, SYSTEM, "uses", judge_uses={"suggestions": True})
    assert project.judge_uses == {"export": False, "votes": False, "suggestions": True}
    project = update_project(engine, SYSTEM, "uses", judge_uses={"votes": True})  # a partial change keeps the others
    assert project.judge_uses == {"export": False, "votes": True, "suggestions": True}
    require_judge_use(project, "votes", "extra votes")


@pytest.mark.parametrize("uses, where", [({"rank": True}, "judge_uses.rank"), ({"export": "yes"}, "judge_uses.export"), (["export"], "judge_uses")])
def test_bad_judge_uses_are_refused_naming_the_field(engine, uses, where):
    create_project(engine, SYSTEM, "uses")
    with pytest.raises(ProjectValidationError) as caught:
        update_project(engine, SYSTEM, "uses", judge_uses=uses)
    assert caught.value.field == where
    assert get_project(engine, "uses").judge_uses is None  # nothing half-written
