"""The Compare page: sides in the engine's order, display choices stored in the task's terms, keys, next pair at once."""

from __future__ import annotations

import pytest

from apphelpers import go, no_exception, rows, signed_in_app, texts
from labeling_app import flow
from labeling_app.choices import DISPLAY_CHOICES, to_display, to_task_terms

from rlhf.schema import Preference


def compare_page(app_env):
    return go(signed_in_app(app_env.annotator, app_env.project_id), "compare.py")


def slot(at) -> flow.Slot:
    return at.session_state[flow.slot_key("pairwise")]


@pytest.mark.parametrize(
    "display, shown_left, stored",
    [
        ("left", "a", ("a", 1)),
        ("left", "b", ("b", 1)),  # the LEFT response is the task's B: choice b
        ("left_much", "b", ("b", 2)),
        ("right", "b", ("a", 1)),
        ("right_much", "a", ("b", 2)),
        ("tie", "b", ("tie", 0)),
        ("both_bad", "a", ("both_bad", 0)),
    ],
)
def test_display_choice_to_task_terms(display, shown_left, stored):
    assert to_task_terms(display, shown_left) == stored
    assert to_display(*stored, shown_left) == display


def test_every_display_choice_round_trips_and_keys_are_distinct():
    keys = [c.key for c in DISPLAY_CHOICES]
    assert len(set(keys)) == len(keys) == 6
    for choice in DISPLAY_CHOICES:
        for side in "ab":
            assert to_display(*to_task_terms(choice.id, side), side) == choice.id


def test_pair_is_shown_in_the_engines_order_with_documented_keys(app_env):
    at = compare_page(app_env)
    no_exception(at)
    view = slot(at).task
    shown = texts(at)
    assert view.left.text in shown and view.right.text in shown
    assert shown.index(view.left.text) < shown.index(view.right.text)  # left column first
    assert {b.key: b.proto.shortcut for b in at.button if b.key and b.key.startswith("compare.choice.")} == {
        "compare.choice.left_much": "1",
        "compare.choice.left": "2",
        "compare.choice.tie": "3",
        "compare.choice.right": "4",
        "compare.choice.right_much": "5",
        "compare.choice.both_bad": "0",
    }
    assert "1 A much better" in shown and "0 both bad" in shown


def test_choosing_the_left_response_stores_the_task_side_that_was_left(app_env):
    """Over the whole queue: "A better" (left) must store the response that was on the left."""
    at = compare_page(app_env)
    seen_sides = set()
    for _ in range(12):
        view = slot(at).task
        if view is None:
            break
        seen_sides.add(view.shown_left)
        at = at.button(key="compare.choice.left").click().run()
        at = at.button(key="compare.submit").click().run()
        no_exception(at)
        stored = {p.task_id: p for p in rows(app_env.engine, Preference.__table__)}[view.task_id]
        assert (stored.choice, stored.strength, stored.shown_left) == (view.shown_left, 1, view.shown_left)
    assert seen_sides == {"a", "b"}, "the fixture queue should show both orders"
    assert len(rows(app_env.engine, Preference.__table__)) == 10
    assert "Nothing left to compare" in texts(at)


def test_submit_without_a_choice_stores_nothing(app_env):
    at = compare_page(app_env)
    at = at.button(key="compare.submit").click().run()
    assert "Choose first" in texts(at)
    assert rows(app_env.engine, Preference.__table__) == []


def test_submit_paints_the_next_pair_from_the_same_call(app_env, monkeypatch):
    """One backend call per submit: the next pair comes from SubmitResult.next_task, no extra next_task."""
    import rlhf.annotate
    import rlhf.assign

    at = compare_page(app_env)
    first = slot(at).task.task_id
    calls = {"submit": 0, "next_task": 0}
    real_submit, real_next = rlhf.annotate.submit_preference, rlhf.assign.next_task

    def counting_submit(*args, **kwargs):
        calls["submit"] += 1
        return real_submit(*args, **kwargs)

    def counting_next(*args, **kwargs):
        calls["next_task"] += 1
        return real_next(*args, **kwargs)

    monkeypatch.setattr(rlhf.annotate, "submit_preference", counting_submit)
    monkeypatch.setattr(rlhf.assign, "next_task", counting_next)
    at = at.button(key="compare.choice.tie").click().run()
    at = at.button(key="compare.submit").click().run()
    assert calls == {"submit": 1, "next_task": 0}
    assert slot(at).task.task_id != first
