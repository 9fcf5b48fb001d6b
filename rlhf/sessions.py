"""Browser sessions in the database: sign-ins that survive a reload, shared by every app process.

Life of a session (issue 16, item 10):
1. A password sign-in calls `create_session`: a row with the hash of a one-time handoff nonce
   (valid `HANDOFF_TTL`), no token yet. The signed-in page refers to the row by its id.
2. The page's script sends the nonce in a POST body to the server's session route, which calls
   `redeem_handoff`: a random 256-bit token is bound to the row (only its SHA-256 is stored) and
   goes back to the browser as an HttpOnly, SameSite=Strict cookie. The nonce works once.
3. A reload or a new tab presents the cookie; `resolve_token` finds the row and the account.
   `check_session` re-checks a live page by row id on every run.
4. A session ends when revoked (`revoke_session`: sign-out; `revoke_user_sessions`: password
   change, admin reset, deactivation, demotion to a label source), or when idle longer than the
   timeout the caller passes in; an ended row is deleted.

Each lookup re-reads the account, so a deactivated account or one that became `external` never
resolves, whatever its rows say. `last_seen_at` is written at most once per `touch_interval` so
that a click is not a database write. Lookups never raise for a bad token: they return None.

Also here: the last project each account chose (`last_project` / `remember_project`).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Optional

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session

from rlhf.db import run_transaction, session_scope
from rlhf.schema import BrowserSession, Project, User, UserPreference, utcnow

BROWSER_SESSION = BrowserSession.__table__
USER = User.__table__
PREFERENCE = UserPreference.__table__
PROJECT = Project.__table__

COOKIE_NAME = "rlhf_session"
"""The browser cookie that carries the token (set and cleared by labeling_app/server.py)."""
TOKEN_BYTES = 32
"""256 random bits per cookie token and per handoff nonce."""
HANDOFF_TTL = timedelta(minutes=2)
"""The page redeems its nonce within a second or two; two minutes allow a slow first load."""
MAX_TOUCH_INTERVAL = timedelta(minutes=1)
SIGN_IN_ROLES = ("admin", "annotator")
"""`external` accounts are label sources: they never hold a session."""


@dataclass(frozen=True)
class NewSession:
    """A session just created at sign-in: its row id, and the nonce the page trades for the cookie."""

    session_id: int
    handoff: str


@dataclass(frozen=True)
class ActiveSession:
    """A session that is still good, with its account as stored now."""

    session_id: int
    user: User
    via: str


def hash_secret(secret: str) -> str:
    """SHA-256 hex of a token or nonce: 256 random bits need no salt or slow hash."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_secret() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def touch_interval(idle: timedelta) -> timedelta:
    """How stale `last_seen_at` may get before a lookup rewrites it: a minute, or a quarter of a short timeout."""
    return min(MAX_TOUCH_INTERVAL, idle / 4)


def _now(now: Optional[datetime]) -> datetime:
    if now is None:
        return utcnow()
    if now.utcoffset() is None:
        raise ValueError("now must be timezone-aware (UTC)")
    return now


def create_session(engine: Engine, user_id: int, *, idle: timedelta, via: str = "password", now: Optional[datetime] = None) -> NewSession:
    """Start a session for an account that just signed in; sessions idle longer than `idle` are purged."""
    now = _now(now)
    handoff = new_secret()

    def work(session: Session) -> int:
        session.execute(delete(BROWSER_SESSION).where(BROWSER_SESSION.c.last_seen_at < now - idle))
        row = BrowserSession(user_id=user_id, handoff_hash=hash_secret(handoff), handoff_expires_at=now + HANDOFF_TTL, via=via, created_at=now, last_seen_at=now)
        session.add(row)
        session.flush()
        return row.id

    return NewSession(run_transaction(engine, work), handoff)


def redeem_handoff(engine: Engine, handoff: str, *, now: Optional[datetime] = None) -> Optional[str]:
    """Trade a handoff nonce for the session's cookie token, once; None for an unknown, used or late nonce."""
    if not isinstance(handoff, str) or not handoff:
        return None
    now = _now(now)
    token = new_secret()

    def work(session: Session) -> int:
        # One UPDATE that matches only an unused, fresh nonce: two racing redeems cannot both win.
        result = session.execute(
            update(BROWSER_SESSION)
            .where(BROWSER_SESSION.c.handoff_hash == hash_secret(handoff), BROWSER_SESSION.c.handoff_expires_at > now)
            .values(token_hash=hash_secret(token), handoff_hash=None, handoff_expires_at=None)
        )
        return result.rowcount

    return token if run_transaction(engine, work) == 1 else None


def _active(engine: Engine, condition, *, idle: timedelta, now: Optional[datetime], touch: bool = True) -> Optional[ActiveSession]:
    """The session matching `condition` if it is fresh and its account may sign in; ends stale ones.
    `touch` counts the lookup as use (it restarts the idle clock)."""
    now = _now(now)
    with session_scope(engine) as session:
        found = session.execute(select(BrowserSession, User).join(User, USER.c.id == BROWSER_SESSION.c.user_id).where(condition)).first()
    if found is None:
        return None
    row, user = found
    if now - row.last_seen_at > idle:
        revoke_session(engine, row.id)
        return None
    if not user.active or user.role not in SIGN_IN_ROLES:
        return None
    if touch and now - row.last_seen_at > touch_interval(idle):
        run_transaction(engine, lambda s: s.execute(update(BROWSER_SESSION).where(BROWSER_SESSION.c.id == row.id).values(last_seen_at=now)))
    return ActiveSession(row.id, user, row.via)


def resolve_token(engine: Engine, token: Optional[str], *, idle: timedelta, now: Optional[datetime] = None) -> Optional[ActiveSession]:
    """The session a cookie token belongs to (a reload, a new tab), or None."""
    if not isinstance(token, str) or not token:
        return None
    return _active(engine, BROWSER_SESSION.c.token_hash == hash_secret(token), idle=idle, now=now)


def check_session(engine: Engine, session_id: int, *, idle: timedelta, now: Optional[datetime] = None, touch: bool = True) -> Optional[ActiveSession]:
    """The session a live page holds, by row id, or None once revoked, idle or its account barred.
    `touch=False` for reads that must not keep the session alive (a page polling on its own)."""
    return _active(engine, BROWSER_SESSION.c.id == session_id, idle=idle, now=now, touch=touch)


def revoke_session(engine: Engine, session_id: int) -> None:
    """End one session (sign-out): every tab and process holding it is signed out at its next click."""
    run_transaction(engine, lambda s: s.execute(delete(BROWSER_SESSION).where(BROWSER_SESSION.c.id == session_id)))


def revoke_token(engine: Engine, token: Optional[str]) -> None:
    """End the session a cookie token belongs to (the sign-out route, which sees only the cookie)."""
    if isinstance(token, str) and token:
        run_transaction(engine, lambda s: s.execute(delete(BROWSER_SESSION).where(BROWSER_SESSION.c.token_hash == hash_secret(token))))


def revoke_user_sessions(session: Session | Connection, user_id: int) -> None:
    """End every session of an account, inside the caller's transaction (rlhf.auth's password and account changes)."""
    session.execute(delete(BROWSER_SESSION).where(BROWSER_SESSION.c.user_id == user_id))


def count_sessions(engine: Engine, user_id: int) -> int:
    """Sessions the account holds now, fresh or not yet purged (for tests and admins)."""
    with session_scope(engine) as session:
        return len(session.execute(select(BROWSER_SESSION.c.id).where(BROWSER_SESSION.c.user_id == user_id)).all())


# ------------------------------------------------------------------------------ preferences


def last_project(engine: Engine, user_id: int) -> Optional[int]:
    """The project the account chose last, or None (never chose, or the project is gone)."""
    with session_scope(engine) as session:
        return session.execute(select(PREFERENCE.c.last_project_id).where(PREFERENCE.c.user_id == user_id)).scalar()


def remember_project(engine: Engine, user_id: int, project_id: Optional[int], *, now: Optional[datetime] = None) -> None:
    """Store the account's chosen project (an insert the first time, then an update)."""
    now = _now(now)

    def work(session: Session) -> None:
        if project_id is not None and session.execute(select(PROJECT.c.id).where(PROJECT.c.id == project_id)).first() is None:
            raise LookupError(f"no project with id {project_id}")
        if session.get_bind().dialect.name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        # An upsert: two tabs choosing at once must not collide on the first insert.
        values = {"last_project_id": project_id, "updated_at": now}
        session.execute(insert(PREFERENCE).values(user_id=user_id, **values).on_conflict_do_update(index_elements=[PREFERENCE.c.user_id], set_=values))

    run_transaction(engine, work)
