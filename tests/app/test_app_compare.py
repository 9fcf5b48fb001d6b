"""The Compare page: sides in the engine's order, display choices stored in the task's terms, keys, next pair at once."""

from __future__ import annotations

import pytest

from apphelpers import go, no_exception, rows, signed_in_app, texts
from keyhelpers import deliver, numbered, shown
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
    page = shown(at)
    assert view.left.text in page and view.right.text in page
    assert page.index(view.left.text) < page.index(view.right.text)  # left column first
    assert {b.key: b.label for b in at.button if b.key and b.key.startswith("compare.choice.")} == {
        "compare.choice.left_much": "1 · A much better",
        "compare.choice.left": "2 · A better",
        "compare.choice.tie": "3 · Tie",
        "compare.choice.right": "4 · B better",
        "compare.choice.right_much": "5 · B much better",
        "compare.choice.both_bad": "0 · Both bad",
    }
    assert {b.key for b in at.button if b.proto.shortcut} == set()  # keys come through the one listener
    assert "1 A much better" in page and "0 both bad" in page


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


def test_choices_and_enters_typed_in_one_delivery_apply_in_the_order_pressed(app_env):
    """Issue 16, item 6: "2 Enter 4 Enter 0 Enter" delivered at once (and listed backwards) stores three
    comparisons with those choices; a repeated delivery stores nothing more."""
    at = compare_page(app_env)
    presses = numbered(["2", "Enter", "4", "Enter", "0", "Enter", "3"])
    at = deliver(at, list(reversed(presses)))
    no_exception(at)
    assert "Choose first" not in texts(at)
    stored = rows(app_env.engine, Preference.__table__)
    tasks = [p.task_id for p in stored]
    left = {p.task_id: p.shown_left for p in stored}
    other = {"a": "b", "b": "a"}
    assert [(p.choice, p.strength) for p in stored] == [(left[tasks[0]], 1), (other[left[tasks[1]]], 1), ("both_bad", 0)]
    assert slot(at).choice == "tie" and slot(at).task.task_id not in tasks
    at = deliver(at, presses)
    assert len(rows(app_env.engine, Preference.__table__)) == 3
