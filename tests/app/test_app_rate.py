"""The Rate page: rubric scored by key buttons, submit stores once and paints the next task, tags, comment, skip, flag, empty queue."""

from __future__ import annotations

from apphelpers import go, no_exception, rows, signed_in_app, texts
from labeling_app import flow

from rlhf.schema import Flag, Rating, Skip


def rate_page(app_env):
    at = signed_in_app(app_env.annotator, app_env.project_id)
    return go(at, "rate.py")


def slot(at) -> flow.Slot:
    return at.session_state[flow.slot_key("rating")]


def press(at, digit: str):
    """What the number key does: the focused row's button for that digit."""
    return at.button(key=f"rate.key.{digit}").click().run()


def test_rate_page_shows_prompt_response_and_labelled_scale(app_env):
    at = rate_page(app_env)
    no_exception(at)
    view = slot(at).task
    shown = texts(at)
    assert view.response.text in shown
    assert view.prompt_text in shown or all(m.content in shown for m in view.prompt_messages or ())
    # Labelled scale points: the anchors under each row.
    assert "1 Not at all · 4 Partly · 7 Completely" in shown and "1 Harmful · 4 Borderline · 7 Harmless" in shown
    # The other dimensions: one segmented control each, points 1–7.
    assert at.button_group(key=f"rate.seg.{view.task_id}.1.None").options == [str(v) for v in range(1, 8)]
    # The focused dimension's buttons carry the number keys; the others none.
    assert [at.button(key=f"rate.key.{d}").proto.shortcut for d in "1234567"] == list("1234567")
    assert {b.key for b in at.button if b.proto.shortcut} == {f"rate.key.{d}" for d in "1234567"} | {
        "rate.submit", "rate.skip_open", "rate.flag_open", "rate.guidelines", "rate.previous", "rate.focus_up", "rate.focus_down"
    }
    assert at.button(key="rate.submit").proto.shortcut.lower() == "enter"
    assert (at.button(key="rate.skip_open").proto.shortcut.upper(), at.button(key="rate.flag_open").proto.shortcut.upper()) == ("S", "F")
    assert not [w for w in at.selectbox if w.key == "rate.skip_reason"]  # dialogs draw nothing until opened


def test_number_keys_score_focused_dimensions_in_turn_and_submit_paints_the_next_task(app_env):
    at = rate_page(app_env)
    first = slot(at).task
    for digit in "625":
        at = press(at, digit)
    assert slot(at).scores == {"helpfulness": 6, "honesty": 2, "harmlessness": 5}
    # Scores typed with keys show in the dimensions' segmented controls once the focus moves on.
    assert at.button_group(key=f"rate.seg.{first.task_id}.0.6").value == 6
    at.button_group(key=f"rate.{first.task_id}.n.tags").set_value(["factual error"])
    at.text_area(key=f"rate.{first.task_id}.n.comment").input("off by one")
    at = at.button(key="rate.submit").click().run()
    no_exception(at)
    stored = rows(app_env.engine, Rating.__table__)
    assert len(stored) == 1
    rating = stored[0]
    assert (rating.task_id, rating.user_id) == (first.task_id, app_env.annotator.id)
    assert rating.scores == {"helpfulness": 6, "honesty": 2, "harmlessness": 5}
    assert rating.tags == ["factual error"] and rating.comment == "off by one"
    assert rating.time_spent_s is not None and rating.time_spent_s >= 0
    nxt = slot(at).task
    assert nxt is not None and nxt.task_id != first.task_id
    assert nxt.response.text in texts(at)
    assert slot(at).scores == {} and slot(at).focus == 0


def test_submit_with_a_missing_dimension_stores_nothing_and_focuses_it(app_env):
    at = rate_page(app_env)
    at = press(at, "4")
    at = at.button(key="rate.submit").click().run()
    assert "Score honesty, harmlessness first." in texts(at)
    assert rows(app_env.engine, Rating.__table__) == []
    assert slot(at).focus == 1


def test_clicks_and_arrow_buttons_move_the_focus(app_env):
    at = rate_page(app_env)
    task_id = slot(at).task.task_id
    at = at.button_group(key=f"rate.seg.{task_id}.2.None").set_value(3).run()  # mouse: harmlessness 3, focus wraps to the first unscored
    assert slot(at).scores == {"harmlessness": 3} and slot(at).focus == 0
    at = at.button(key="rate.focus_down").click().run()
    assert slot(at).focus == 1
    at = press(at, "7")
    assert slot(at).scores["honesty"] == 7
    assert slot(at).focus == 0  # the one still unscored
    at = at.button(key="rate.focus_up").click().run()
    assert slot(at).focus == 0  # stays within the rubric
    at = at.button(key="rate.focus_down").click().run()
    at = at.button(key="rate.focus_down").click().run()
    assert slot(at).focus == 2


def test_skip_with_a_reason_brings_another_task(app_env):
    at = rate_page(app_env)
    first = slot(at).task.task_id
    at = at.button(key="rate.skip_open").click().run()  # key S opens the dialog
    at.selectbox(key="rate.skip_reason").set_value("The prompt is unclear")
    at.text_input(key="rate.skip_note").input("two questions in one")
    at = at.button(key="rate.skip").click().run()
    no_exception(at)
    skips = rows(app_env.engine, Skip.__table__)
    assert [(s.task_id, s.reason) for s in skips] == [(first, "The prompt is unclear: two questions in one")]
    assert slot(at).task.task_id != first


def test_flag_records_the_reason_and_can_skip(app_env):
    at = rate_page(app_env)
    first = slot(at).task.task_id
    at = at.button(key="rate.flag_open").click().run()  # key F opens the dialog
    at.radio(key="rate.flag_reason").set_value("pii")
    at.text_input(key="rate.flag_note").input("a phone number")
    at = at.button(key="rate.flag").click().run()
    no_exception(at)
    flags = rows(app_env.engine, Flag.__table__)
    assert [(f.task_id, f.reason, f.note, f.status) for f in flags] == [(first, "pii", "a phone number", "open")]
    assert [s.task_id for s in rows(app_env.engine, Skip.__table__)] == [first]  # "also skip" is on by default
    assert slot(at).task.task_id != first


def test_empty_queue_says_so(app_env):
    at = rate_page(app_env)
    for _ in range(20):
        if slot(at).task is None:
            break
        for digit in "444":
            at = press(at, digit)
        at = at.button(key="rate.submit").click().run()
    no_exception(at)
    assert slot(at).task is None
    assert "Nothing left to rate" in texts(at)
    assert len(rows(app_env.engine, Rating.__table__)) == 9
