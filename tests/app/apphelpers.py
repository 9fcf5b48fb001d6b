"""Helpers for the app's AppTests: signed-in sessions, page switching, reading what a page shows.

Signing in through the form costs an argon2 hash; most tests start already signed in by putting
the user id in session state, as the sign-in page does (`signed_in_app`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "labeling_app" / "app.py"
PASSWORD = "correct horse battery"
RESPONSES_FIXTURE = Path(__file__).resolve().parents[1] / "data" / "import" / "responses.jsonl"


@dataclass
class AppEnv:
    """A migrated database with an admin, an annotator and project `demo` (9 rating + 10 pairwise tasks)."""

    url: str
    engine: object
    project_id: int
    admin: object
    annotator: object
    tmp_path: Path


def load(engine, user_id):
    from rlhf.auth import load_user

    return load_user(engine, user_id)


def new_app():
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(str(APP), default_timeout=60)


def signed_in_app(user, project_id=None):
    """An AppTest whose session is signed in as `user` (as the sign-in page leaves it), run once."""
    from labeling_app import common as c

    at = new_app()
    at.session_state[c.USER_ID] = user.id
    at.session_state[c.LAST_ACTIVE] = time.time()
    at.session_state[c.VIA] = "password"
    if project_id is not None:
        at.session_state[c.PROJECT_ID] = project_id
    return at.run()


def go(at, page: str):
    """Switch to `pages/<page>` and run."""
    return at.switch_page(f"pages/{page}").run()


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def no_exception(at) -> None:
    assert not at.exception, [e.message for e in at.exception]


def texts(at) -> str:
    """All markdown, captions, alerts, titles and HTML (prompts and responses are `st.html`) on the page
    as one string (for `in` checks)."""
    import html

    parts = []
    for kind in ("markdown", "caption", "title", "subheader", "header", "success", "info", "warning", "error", "text", "code"):
        parts.extend(str(getattr(e, "value", "")) for e in getattr(at, kind))
    parts.extend(html.unescape(e.value) for e in at.html)
    return "\n".join(parts)


def button(at, key: str):
    return at.button(key=key)


def count_rows(engine, table) -> int:
    from sqlalchemy import func, select

    with engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(table)).scalar_one()


def rows(engine, table):
    from sqlalchemy import select

    with engine.connect() as connection:
        return connection.execute(select(table)).all()
