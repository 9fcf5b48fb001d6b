"""The Rate page: rubric scored by keys and buttons, keys applied in the order pressed, submit stores once and paints the next task, tags, comment, skip, flag, empty queue."""

from __future__ import annotations

from apphelpers import go, no_exception, rows, signed_in_app, texts
from keyhelpers import deliver, numbered, shown
from labeling_app import flow

from rlhf.schema import Flag, Rating, Skip


def rate_page(app_env):
    at = signed_in_app(app_env.annotator, app_env.project_id)
    return go(at, "rate.py")


def slot(at) -> flow.Slot:
    return at.session_state[flow.slot_key("rating")]


def press(at, digit: str):
    """A click on the focused row's button for that digit (what the number key does)."""
    return at.button(key=f"rate.key.{digit}").click().run()


def stored_ratings(app_env):
    return [(r.task_id, r.scores, r.tags) for r in rows(app_env.engine, Rating.__table__)]


def test_rate_page_shows_prompt_response_and_labelled_scale(app_env):
    at = rate_page(app_env)
    no_exception(at)
    view = slot(at).task
    page = shown(at)
    assert view.response.text in page
    assert view.prompt_text in page or all(m.content in page for m in view.prompt_messages or ())
    # Labelled scale points: the anchors under each row.
    assert "1 Not at all · 4 Partly · 7 Completely" in page and "1 Harmful · 4 Borderline · 7 Harmless" in page
    # The other dimensions: one segmented control each, points 1–7.
    assert at.button_group(key=f"rate.seg.{view.task_id}.1.None").options == [str(v) for v in range(1, 8)]
    # Keys reach the page through one listener; no button has a Streamlit shortcut (they ran in widget order, issue 16).
    assert {b.key for b in at.button if b.proto.shortcut} == set()
    assert [at.button(key=f"rate.key.{d}").label for d in "1234567"] == list("1234567")
    # Every tag is a button with its key (Q, W, E, …), documented on the page.
    assert [at.button(key=f"rate.tag.{i}").label for i in range(len(view.tags))] == [f"{k} · {t}" for k, t in zip("QWERTYUIOP", view.tags)]
    assert "Q W E … toggle the tags" in page
    assert not [w for w in at.selectbox if w.key == "rate.skip_reason"]  # dialogs draw nothing until opened


def test_number_keys_score_focused_dimensions_in_turn_and_submit_paints_the_next_task(app_env):
    at = rate_page(app_env)
    first = slot(at).task
    for digit in "625":
        at = press(at, digit)
    assert slot(at).scores == {"helpfulness": 6, "honesty": 2, "harmlessness": 5}
    # Scores typed with keys show in the dimensions' segmented controls once the focus moves on.
    assert at.button_group(key=f"rate.seg.{first.task_id}.0.6").value == 6
    at = at.button(key=f"rate.tag.{first.tags.index('factual error')}").click().run()
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
    assert nxt.response.text in shown(at)
    assert slot(at).scores == {} and slot(at).focus == 0 and slot(at).tags == []


def test_keys_typed_faster_than_the_page_redraws_apply_in_the_order_pressed(app_env):
    """Issue 16, item 6: three digits and Enter in one delivery; the digits count before Enter."""
    at = rate_page(app_env)
    first = slot(at).task.task_id
    at = deliver(at, numbered("625") + [(4, "Enter")])
    no_exception(at)
    assert "first." not in texts(at)  # no "Score … first."
    assert stored_ratings(app_env) == [(first, {"helpfulness": 6, "honesty": 2, "harmlessness": 5}, [])]
    assert slot(at).task.task_id != first and slot(at).scores == {}


def test_two_tasks_typed_in_one_delivery_listed_out_of_order(app_env):
    """Keys after Enter belong to the next task; the order pressed counts, not the order listed."""
    at = rate_page(app_env)
    first = slot(at).task.task_id
    presses = numbered(["7", "1", "3", "Enter", "2", "4", "Q", "6", "Enter", "5"])
    at = deliver(at, list(reversed(presses)))
    no_exception(at)
    (task_a, scores_a, tags_a), (task_b, scores_b, tags_b) = stored_ratings(app_env)
    assert (task_a, scores_a, tags_a) == (first, {"helpfulness": 7, "honesty": 1, "harmlessness": 3}, [])
    assert (scores_b, tags_b) == ({"helpfulness": 2, "honesty": 4, "harmlessness": 6}, [slot(at).task.tags[0]])
    assert slot(at).scores == {"helpfulness": 5} and slot(at).task.task_id not in (task_a, task_b)


def test_a_repeated_or_stale_delivery_applies_nothing_twice(app_env):
    """The browser re-sends presses until acknowledged: seen again, they change nothing."""
    at = rate_page(app_env)
    at = deliver(at, numbered("444") + [(4, "Enter")])
    second = slot(at).task.task_id
    at = deliver(at, numbered("444") + [(4, "Enter"), (5, "3")])  # 1–4 again, then one new press
    no_exception(at)
    assert len(stored_ratings(app_env)) == 1
    assert slot(at).task.task_id == second and slot(at).scores == {"helpfulness": 3}
    at = deliver(at, numbered("12"))  # late copies of old presses
    assert slot(at).scores == {"helpfulness": 3}
    at = deliver(at, numbered("5", start=6))
    assert slot(at).scores == {"helpfulness": 3, "honesty": 5}
    # The listener is told what was applied, so it forgets those presses.
    [listener] = [e for e in at.get("bidi_component") if e.proto.component_name == "rlhf_studio.task_keys"]
    assert '"applied": 6' in listener.proto.json


def test_tag_keys_toggle_the_tags_in_the_projects_order(app_env):
    at = rate_page(app_env)
    tags = slot(at).task.tags
    at = deliver(at, numbered(["E", "Q", "W", "W"]))
    assert slot(at).tags == [tags[0], tags[2]]
    assert at.button(key="rate.tag.0").proto.type == "primary" and at.button(key="rate.tag.1").proto.type == "secondary"
    at = deliver(at, numbered(["1", "2", "3", "Enter"], start=5))
    assert stored_ratings(app_env)[0][2] == [tags[0], tags[2]]


def test_letter_keys_open_the_dialogs_and_arrows_move_the_focus(app_env):
    at = rate_page(app_env)
    at = deliver(at, numbered(["ArrowDown", "ArrowDown", "7", "ArrowUp"]))
    assert slot(at).scores == {"harmlessness": 7} and slot(at).focus == 0
    at = deliver(at, numbered(["S"], start=5))
    assert at.selectbox(key="rate.skip_reason")  # the skip dialog is open
    at = deliver(at, numbered(["F"], start=6))
    assert at.radio(key="rate.flag_reason") and not [w for w in at.selectbox if w.key == "rate.skip_reason"]

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
    at = deliver(at, numbered("4") + [(2, "Enter"), (3, "S")])  # keys on an empty queue do nothing
    no_exception(at)
    assert len(rows(app_env.engine, Rating.__table__)) == 9
    assert len(rows(app_env.engine, Rating.__table__)) == 9
