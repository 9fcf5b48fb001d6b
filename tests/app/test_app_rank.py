"""The Rank page: cards in the engine's order, keys build the order (typed, moved, tied), the sentence, submit in task terms."""

from __future__ import annotations

import pytest

from apphelpers import go, no_exception, rows, signed_in_app
from keyhelpers import deliver, numbered, shown
from labeling_app import flow
from labeling_app.rank_order import RankOrder
from ranking_fixtures import add_ranking_tasks
from rlhf.ranking import from_shown, parse_ranking
from rlhf.schema import Ranking


@pytest.fixture
def rank_env(app_env):
    from rlhf.projects import update_project
    from rlhf.roles import SYSTEM

    update_project(app_env.engine, SYSTEM, app_env.project_id, rank_k_min=3, rank_k_max=5)
    app_env.rank_ids = add_ranking_tasks(app_env.engine, app_env.project_id, 3, k=4)
    return app_env


def rank_page(env):
    return go(signed_in_app(env.annotator, env.project_id), "rank.py")


def slot(at) -> flow.Slot:
    return at.session_state[flow.slot_key("ranking")]


# ------------------------------------------------------------------------------------ pure state


def test_typing_moving_and_tying_build_the_order():
    order = RankOrder.initial(4)
    assert order.sentence() == "A > B > C > D"
    for card in "CA":
        order.type_card("ABCD".index(card))
    order.toggle_tie()  # while typing: the next letter ties with A
    order.type_card(3)
    order.type_card(1)
    assert order.sentence() == "C > A = D > B" and order.groups() == ((2,), (0, 3), (1,))
    assert [order.place_of(i) for i in range(4)] == [2, 4, 1, 2]
    order.type_card(3)  # a new run after all four were typed: ties cleared, D first
    assert order.sentence() == "D > C > A > B"
    order.move_focus(1)
    order.move(1)  # C moves below A
    assert order.sentence() == "D > A > C > B"
    order.toggle_tie()
    assert order.sentence() == "D > A = C > B"
    order.toggle_tie()
    assert order.sentence() == "D > A > C > B"
    order.move_focus(-9)
    order.move(-1)  # already first: nothing moves
    assert order.sentence() == "D > A > C > B"


def test_groups_round_trip_through_an_edit():
    order = RankOrder.from_groups(((2,), (0, 3), (1,)), all_bad=True)
    assert order.groups() == ((2,), (0, 3), (1,)) and order.all_bad


# ------------------------------------------------------------------------------------ page


def test_cards_in_display_order_and_keys_submit_in_task_terms(rank_env):
    at = rank_page(rank_env)
    no_exception(at)
    view = slot(at).task
    assert view.kind == "ranking" and len(view.cards) == 4
    page = shown(at)
    positions = [page.index(card.text) for card in view.cards]
    assert positions == sorted(positions)  # A, B, C, D in the engine's display order
    assert "Your order: **A > B > C > D**" in page

    deliver(at, numbered(["C", "A", "=", "D", "B"]))
    no_exception(at)
    assert "Your order: **C > A = D > B**" in shown(at)
    deliver(at, numbered(["0", "Enter"], start=6))
    no_exception(at)
    (stored,) = rows(rank_env.engine, Ranking.__table__)
    expected = from_shown(parse_ranking("C > A = D > B", 4), view.shown_order)
    assert [tuple(g) for g in stored.groups] == list(expected) and stored.all_bad
    assert slot(at).task.task_id != view.task_id and slot(at).submitted == 1


def test_enter_before_ordering_warns_and_a_double_enter_sends_once(rank_env):
    at = rank_page(rank_env)
    first = slot(at).task.task_id
    deliver(at, numbered(["Enter"]))
    assert "Order the cards first" in shown(at) and rows(rank_env.engine, Ranking.__table__) == []
    deliver(at, numbered(["B", "A", "C", "D", "Enter", "Enter"], start=2))
    no_exception(at)
    (stored,) = rows(rank_env.engine, Ranking.__table__)  # the second Enter met the next task, not yet ordered
    assert stored.task_id == first and slot(at).task.task_id != first


def test_backspace_reopens_the_ranking_and_enter_edits_it(rank_env):
    at = rank_page(rank_env)
    view = slot(at).task
    deliver(at, numbered(["B", "A", "C", "D", "Enter", "Backspace"]))
    assert slot(at).editing and slot(at).task.task_id == view.task_id
    assert "Your order: **B > A > C > D**" in shown(at)  # prefilled from the stored ranking
    deliver(at, numbered(["D", "C", "=", "B", "A", "Enter"], start=7))  # D > C = B > A
    no_exception(at)
    (stored,) = rows(rank_env.engine, Ranking.__table__)
    assert stored.revision == 2 and [tuple(g) for g in stored.groups] == list(from_shown(parse_ranking("D > C = B > A", 4), view.shown_order))


def test_dashboard_has_a_rankings_tab(rank_env):
    from engine_fixtures import add_annotators
    from rlhf.annotate import submit_ranking

    users = add_annotators(rank_env.engine, 2)
    for user, order in zip(users, ("A B C D", "A C B D")):
        submit_ranking(rank_env.engine, user, rank_env.rank_ids[0], ranking=order, next_kind=None)
    at = go(signed_in_app(rank_env.admin, rank_env.project_id), "dashboard.py")
    no_exception(at)
    assert "Rankings" in [t.label for t in at.tabs]
    assert {"Kendall's W", "Implied pairs"} <= {m.label for m in at.metric}
    kendall = next(m for m in at.metric if m.label == "Kendall's W")
    assert kendall.value == "0.900"  # 2 raters, R = (2, 5, 5, 8): S = 18, W = 12·18 / (4·60) = 0.9


def test_projects_page_sets_the_ranking_range(app_env):
    from rlhf.schema import Project

    at = go(signed_in_app(app_env.admin, app_env.project_id), "projects.py")
    at.selectbox(key="projects.selected").set_value(app_env.project_id).run()
    key = f"projects.{app_env.project_id}"
    at.checkbox(key=f"{key}.rankings").check().run()
    at.number_input(key=f"{key}.rank_k_min").set_value(3)
    at.number_input(key=f"{key}.rank_k_max").set_value(5)
    at = at.button(key=f"{key}.save").click().run()
    no_exception(at)
    project = {p.id: p for p in rows(app_env.engine, Project.__table__)}[app_env.project_id]
    assert (project.rank_k_min, project.rank_k_max) == (3, 5)


# ------------------------------------------------------------------------------------ redraw cost and the mouse


def _card_blocks(at) -> dict[str, str]:
    """Keyed card containers: the key's letter → the texts of the HTML inside it."""
    import html

    found: dict[str, str] = {}

    def texts(node) -> str:
        own = html.unescape(node.proto.body) if type(node).__name__ == "Html" else ""
        return own + "".join(texts(child) for child in getattr(node, "children", {}).values())

    def walk(node) -> None:
        proto = getattr(node, "proto", None)
        block_id = getattr(proto, "id", "") if type(node).__name__ == "Block" else ""
        if "-rank-card-" in block_id:
            found[block_id] = texts(node)
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    return found


def test_each_card_is_keyed_by_its_letter_and_keeps_its_key_when_the_order_changes(rank_env):
    at = rank_page(rank_env)
    cards = slot(at).task.cards
    before = _card_blocks(at)
    assert sorted(block.rsplit("-", 1)[1] for block in before) == ["A", "B", "C", "D"]
    deliver(at, numbered(["D", "B", "C", "A"]))
    no_exception(at)
    after = _card_blocks(at)
    assert sorted(after) == sorted(before)  # same element ids: the browser keeps the cards
    for block, text in after.items():
        assert cards["ABCD".index(block.rsplit("-", 1)[1])].text in text


def test_the_page_settles_the_heap_once(rank_env, monkeypatch):
    """Streamlit's full collection after each run must not walk the app's long-lived objects."""
    import gc

    from labeling_app import common

    monkeypatch.setattr(common, "_HEAP_SETTLED", False)
    try:
        at = rank_page(rank_env)
        no_exception(at)
        assert common._HEAP_SETTLED and gc.get_freeze_count() > 0
        assert common.settle_heap() is False  # once per process
    finally:
        gc.unfreeze()


def drop_chip(at, card: int, place: int, token: str | None = None, nonce: str = "1"):
    """The order strip's drop as the browser sends it, then the run it causes."""
    import json

    [strip] = [e for e in at.get("bidi_component") if e.proto.component_name == "rlhf_studio.rank_drag"]
    states = at._tree.get_widget_states()
    state = states.widgets.add()
    state.id = strip.proto.id
    token = slot(at).token if token is None else token
    state.json_value = json.dumps({"drop": {"token": token, "card": card, "place": place, "nonce": nonce}})
    at._tree._runner._run(states, timeout=60)
    return at


def test_drop_lands_where_the_arrow_keys_put_the_card():
    for k in range(3, 10):
        for start in ([list(range(k))], [list(reversed(range(k)))]):
            for card in range(k):
                for place in range(k):
                    dragged = RankOrder(seq=list(start[0]), tied={start[0][1]})
                    dragged.drop(card, place)
                    keyed = RankOrder(seq=list(start[0]), tied={start[0][1]})
                    keyed.move_focus(keyed.seq.index(card))  # from the first card: → until on it
                    steps = place - keyed.seq.index(card)
                    for _ in range(abs(steps)):
                        keyed.move(1 if steps > 0 else -1)
                    assert dragged.seq == keyed.seq and dragged.tied == keyed.tied
                    assert dragged.seq.index(card) == place


def test_dragging_a_chip_reorders_and_a_stale_or_bad_drop_is_ignored(rank_env):
    at = rank_page(rank_env)
    drop_chip(at, card=3, place=0)  # D to the top
    no_exception(at)
    assert "Your order: **D > A > B > C**" in shown(at)
    drop_chip(at, card=0, place=3, token="not-this-form", nonce="2")
    drop_chip(at, card=7, place=0, nonce="3")  # no card H with K = 4
    no_exception(at)
    assert "Your order: **D > A > B > C**" in shown(at)
    view = slot(at).task
    deliver(at, numbered(["Enter"]))
    (stored,) = rows(rank_env.engine, Ranking.__table__)
    assert [tuple(g) for g in stored.groups] == list(from_shown(parse_ranking("D > A > B > C", 4), view.shown_order))
