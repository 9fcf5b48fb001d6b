"""The annotation flow: edit your last annotations, no duplicate on a double submit, work kept across an expired session."""

from __future__ import annotations

import time

import pytest

from apphelpers import PASSWORD, go, no_exception, rows, signed_in_app, texts
from keyhelpers import deliver, numbered
from labeling_app import common as c
from labeling_app import flow
from labeling_app.keyboard import Cursor, KeyPress, apply_presses, parse_presses, unapplied

from rlhf.schema import AnnotationRevision, Preference, Rating


def rate_all_dimensions(at, digits="456"):
    for digit in digits:
        at = at.button(key=f"rate.key.{digit}").click().run()
    return at


def rating_slot(at) -> flow.Slot:
    return at.session_state[flow.slot_key("rating")]


def test_edit_a_recent_rating_from_my_progress(app_env):
    at = go(signed_in_app(app_env.annotator, app_env.project_id), "rate.py")
    rated = rating_slot(at).task.task_id
    at = rate_all_dimensions(at, "456")
    at = at.button(key="rate.submit").click().run()
    waiting = rating_slot(at).task.task_id  # the task now leased to us

    at = go(at, "progress.py")
    no_exception(at)
    shown = texts(at)
    assert "Ratings" in shown and f"task {rated}" in shown
    at = at.button(key=f"progress.edit.rating.{rated}").click().run()
    no_exception(at)
    assert "Editing your rating of task" in texts(at)
    # The page switched to Rate; AppTest keeps requesting the page it was last sent to with
    # switch_page (a browser follows the new URL), so follow it explicitly.
    at = go(at, "rate.py")
    slot = rating_slot(at)
    assert slot.editing and slot.task.task_id == rated
    assert slot.scores == {"helpfulness": 4, "honesty": 5, "harmlessness": 6}  # prefilled
    assert "Editing your rating of task" in texts(at)

    at = at.button(key="rate.key.2").click().run()  # focus starts on the first dimension
    at = at.button(key="rate.submit").click().run()
    no_exception(at)
    stored = rows(app_env.engine, Rating.__table__)
    assert len(stored) == 1
    assert stored[0].scores == {"helpfulness": 2, "honesty": 5, "harmlessness": 6} and stored[0].revision == 2
    assert [r.revision for r in rows(app_env.engine, AnnotationRevision.__table__)] == [1]
    assert not rating_slot(at).editing and rating_slot(at).task.task_id == waiting  # back to the queue


def test_edit_previous_button_reopens_the_last_rating(app_env):
    at = go(signed_in_app(app_env.annotator, app_env.project_id), "rate.py")
    rated = rating_slot(at).task.task_id
    at = rate_all_dimensions(at, "777")
    at = at.button(key="rate.submit").click().run()
    at = at.button(key="rate.previous").click().run()
    assert rating_slot(at).editing and rating_slot(at).task.task_id == rated
    at = at.button(key="rate.cancel_edit").click().run()
    assert not rating_slot(at).editing and rating_slot(at).task.task_id != rated


def test_backspace_reopens_the_last_rating_and_enter_saves_the_edit_once(app_env):
    at = go(signed_in_app(app_env.annotator, app_env.project_id), "rate.py")
    rated = rating_slot(at).task.task_id
    at = deliver(at, numbered(["1", "2", "3", "Enter", "Backspace", "7", "Enter", "Enter"]))
    no_exception(at)
    stored = rows(app_env.engine, Rating.__table__)
    assert [(r.task_id, r.scores, r.revision) for r in stored] == [(rated, {"helpfulness": 7, "honesty": 2, "harmlessness": 3}, 2)]
    assert not rating_slot(at).editing and "Score helpfulness, honesty, harmlessness first." in texts(at)  # the last Enter met the next, empty task


# ------------------------------------------------------------------- key presses, in order, once


def presses(*pairs):
    return [KeyPress(seq, key) for seq, key in pairs]


def test_presses_apply_in_the_order_pressed_whatever_the_order_delivered():
    applied, saved = [], []
    cursor = apply_presses(presses((3, "5"), (1, "6"), (4, "Enter"), (2, "2")), "tab", None, applied.append, saved.append)
    assert applied == ["6", "2", "5", "Enter"]
    assert cursor == Cursor("tab", 4) and saved == [Cursor("tab", n) for n in (1, 2, 3, 4)]


def test_a_repeated_or_overlapping_delivery_applies_each_press_once():
    applied = []
    cursor = apply_presses(presses((1, "6"), (2, "2")), "tab", None, applied.append, lambda _: None)
    cursor = apply_presses(presses((1, "6"), (2, "2"), (3, "5"), (3, "5")), "tab", cursor, applied.append, lambda _: None)
    cursor = apply_presses(presses((2, "2")), "tab", cursor, applied.append, lambda _: None)  # late
    assert applied == ["6", "2", "5"] and cursor == Cursor("tab", 3)


def test_a_new_listener_starts_from_its_first_press():
    """A reloaded tab numbers from 1 again under a new epoch; its presses are not taken for old ones."""
    assert unapplied(presses((1, "4"), (2, "Enter")), "new", Cursor("old", 9)) == presses((1, "4"), (2, "Enter"))
    assert unapplied(presses((1, "4"), (2, "Enter")), "old", Cursor("old", 9)) == []


def test_a_failing_key_is_not_applied_again():
    applied = []

    def handle(key):
        applied.append(key)
        if key == "Enter":
            raise RuntimeError("backend down")

    saved = []
    with pytest.raises(RuntimeError):
        apply_presses(presses((1, "Enter"), (2, "3")), "tab", None, handle, saved.append)
    apply_presses(presses((1, "Enter"), (2, "3")), "tab", saved[-1], handle, saved.append)
    assert applied == ["Enter", "3"]


def test_malformed_deliveries_are_dropped():
    assert parse_presses(None) == ("", [])
    assert parse_presses({"epoch": 3, "presses": []}) == ("", [])
    epoch, got = parse_presses({"epoch": "tab", "presses": [{"seq": 1, "key": "4"}, {"seq": "2", "key": "5"}, "x", {"seq": 3}]})
    assert (epoch, got) == ("tab", presses((1, "4")))


def _double_submit_script(project_id: int) -> None:
    """Runs inside AppTest: the same form sent twice with one token (a double click)."""
    from labeling_app import common as c
    from labeling_app import flow

    user = c.signed_in_user()
    slot = flow.get_slot(c.get_engine(), user, project_id, "pairwise")
    token, view = slot.token, slot.task
    fields = {"choice": "tie", "strength": 0, "shown_left": view.shown_left, "comment": ""}
    flow.submit("pairwise", token, fields)
    flow.submit("pairwise", token, fields)


def test_a_double_submit_calls_the_backend_once(app_env, monkeypatch):
    import rlhf.annotate
    from streamlit.testing.v1 import AppTest

    calls = []
    real = rlhf.annotate.submit_preference

    def counting(*args, **kwargs):
        calls.append(args[2])
        return real(*args, **kwargs)

    monkeypatch.setattr(rlhf.annotate, "submit_preference", counting)
    at = AppTest.from_function(_double_submit_script, args=(app_env.project_id,), default_timeout=60)
    at.session_state[c.USER_ID] = app_env.annotator.id
    at.session_state[c.LAST_ACTIVE] = time.time()
    at.run()
    no_exception(at)
    assert len(calls) == 1
    assert len(rows(app_env.engine, Preference.__table__)) == 1


def test_expired_session_keeps_the_rating_and_submits_it_after_sign_in(app_env):
    at = go(signed_in_app(app_env.annotator, app_env.project_id), "rate.py")
    task_id = rating_slot(at).task.task_id
    at = rate_all_dimensions(at, "321")
    at.session_state[c.LAST_ACTIVE] = time.time() - c.idle_timeout_s() - 1  # idle too long
    at = at.button(key="rate.submit").click().run()
    no_exception(at)
    assert "Your session expired" in texts(at) and "is kept" in texts(at)
    assert rows(app_env.engine, Rating.__table__) == []

    at.text_input(key="login.username").input("alice")
    at.text_input(key="login.password").input(PASSWORD)
    at = at.button[0].click().run()
    no_exception(at)
    stored = rows(app_env.engine, Rating.__table__)
    assert [(r.task_id, r.scores) for r in stored] == [(task_id, {"helpfulness": 3, "honesty": 2, "harmlessness": 1})]
    assert "was saved" in texts(at)
    assert c.PENDING not in at.session_state


def test_kept_work_is_not_submitted_for_another_account(app_env):
    at = go(signed_in_app(app_env.annotator, app_env.project_id), "rate.py")
    at = rate_all_dimensions(at, "321")
    at.session_state[c.LAST_ACTIVE] = time.time() - c.idle_timeout_s() - 1
    at = at.button(key="rate.submit").click().run()
    at.text_input(key="login.username").input("root")
    at.text_input(key="login.password").input(PASSWORD)
    at = at.button[0].click().run()
    assert rows(app_env.engine, Rating.__table__) == []
    assert "discarded" in texts(at)


def test_time_spent_runs_from_first_paint_and_edits_add_to_it():
    slot = flow.Slot(1, 1, "rating", None, "t", shown_at=100.0)
    assert flow.time_spent(slot, 112.5) == 12.5
    slot.prior_time_s = 30.0
    assert flow.time_spent(slot, 110.0) == 40.0
    assert flow.time_spent(slot, 100.0 + 10 * 24 * 3600) == flow.MAX_TIME_SPENT_S
