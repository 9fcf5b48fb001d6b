"""Browser sessions in the database (rlhf.sessions): handoff, token lookup, idle expiry, revocation, last project."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from rlhf import auth, sessions
from rlhf.auth import change_password, create_user, deactivate_user, reset_password, set_role
from rlhf.db import session_scope
from rlhf.projects import create_project
from rlhf.roles import SYSTEM
from rlhf.schema import BrowserSession, utcnow

PASSWORD = "correct horse battery"
IDLE = timedelta(hours=12)


@pytest.fixture(autouse=True)
def cheap_hashing(monkeypatch):
    """argon2 with tiny costs: the session logic does not depend on the hashing cost."""
    from argon2 import PasswordHasher

    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    dummy = cheap.hash("dummy password for unknown names")
    monkeypatch.setattr(auth, "_hasher", lambda: cheap)
    monkeypatch.setattr(auth, "_dummy_hash", lambda: dummy)


def signed_in(engine, username="alice", role="annotator", *, now=None):
    """An account, a session for it, and the cookie token its handoff was traded for."""
    user = create_user(engine, SYSTEM, username, PASSWORD, role)
    new = sessions.create_session(engine, user.id, idle=IDLE, now=now)
    token = sessions.redeem_handoff(engine, new.handoff, now=now)
    assert token is not None
    return user, new, token


def test_only_hashes_are_stored_and_the_token_resolves_to_the_account(engine):
    user, new, token = signed_in(engine)
    with session_scope(engine) as session:
        row = session.execute(select(BrowserSession)).scalars().one()
    assert row.token_hash == sessions.hash_secret(token) and token not in (row.token_hash, row.handoff_hash)
    assert row.handoff_hash is None  # the nonce is spent
    assert len(token) >= 43  # 256 bits, URL-safe base64
    found = sessions.resolve_token(engine, token, idle=IDLE)
    assert (found.session_id, found.user.id, found.user.username, found.via) == (new.session_id, user.id, "alice", "password")
    assert sessions.check_session(engine, new.session_id, idle=IDLE).user.id == user.id
    assert sessions.resolve_token(engine, token + "x", idle=IDLE) is None
    assert sessions.resolve_token(engine, "", idle=IDLE) is None and sessions.resolve_token(engine, None, idle=IDLE) is None


def test_a_handoff_works_once_and_only_while_fresh(engine):
    user = create_user(engine, SYSTEM, "alice", PASSWORD)
    now = utcnow()
    new = sessions.create_session(engine, user.id, idle=IDLE, now=now)
    late = sessions.create_session(engine, user.id, idle=IDLE, now=now)
    assert sessions.redeem_handoff(engine, "not a nonce", now=now) is None
    token = sessions.redeem_handoff(engine, new.handoff, now=now + timedelta(seconds=5))
    assert token is not None
    assert sessions.redeem_handoff(engine, new.handoff, now=now + timedelta(seconds=6)) is None  # replayed
    assert sessions.redeem_handoff(engine, late.handoff, now=now + sessions.HANDOFF_TTL + timedelta(seconds=1)) is None
    assert sessions.resolve_token(engine, token, idle=IDLE, now=now + timedelta(seconds=7)).session_id == new.session_id


def test_idle_sessions_end_and_use_keeps_them_alive_with_few_writes(engine):
    start = utcnow()
    user, new, token = signed_in(engine, now=start)
    idle = timedelta(minutes=10)

    def last_seen():
        with session_scope(engine) as session:
            return session.get(BrowserSession, new.session_id).last_seen_at

    assert sessions.resolve_token(engine, token, idle=idle, now=start + timedelta(seconds=30)) is not None
    assert last_seen() == start  # within the touch interval: no write
    assert sessions.check_session(engine, new.session_id, idle=idle, now=start + timedelta(minutes=5), touch=False) is not None
    assert last_seen() == start  # a read that is not use: no write
    assert sessions.resolve_token(engine, token, idle=idle, now=start + timedelta(minutes=8)) is not None
    assert last_seen() == start + timedelta(minutes=8)  # touched: the idle clock restarts
    assert sessions.check_session(engine, new.session_id, idle=idle, now=start + timedelta(minutes=17)) is not None
    assert sessions.resolve_token(engine, token, idle=idle, now=start + timedelta(minutes=28)) is None  # 11 minutes idle
    assert sessions.count_sessions(engine, user.id) == 0  # the ended row is gone


def test_creating_a_session_purges_idle_ones(engine):
    start = utcnow()
    user, _, _ = signed_in(engine, now=start)
    sessions.create_session(engine, user.id, idle=IDLE, now=start + IDLE + timedelta(seconds=1))
    assert sessions.count_sessions(engine, user.id) == 1


def test_sign_out_revokes_one_session_and_the_route_revokes_by_token(engine):
    user, first, first_token = signed_in(engine)
    second = sessions.create_session(engine, user.id, idle=IDLE)
    second_token = sessions.redeem_handoff(engine, second.handoff)
    sessions.revoke_session(engine, first.session_id)
    assert sessions.resolve_token(engine, first_token, idle=IDLE) is None
    assert sessions.check_session(engine, first.session_id, idle=IDLE) is None
    assert sessions.resolve_token(engine, second_token, idle=IDLE) is not None  # another browser stays in
    sessions.revoke_token(engine, second_token)
    assert sessions.resolve_token(engine, second_token, idle=IDLE) is None


@pytest.mark.parametrize("change", ["own password", "admin reset", "deactivation", "made external"])
def test_credential_and_account_changes_end_every_session_of_the_account(engine, change):
    user, new, token = signed_in(engine)
    _, other, other_token = signed_in(engine, "bob")
    if change == "own password":
        change_password(engine, auth.load_user(engine, user.id), PASSWORD, "a brand new secret")
    elif change == "admin reset":
        reset_password(engine, SYSTEM, "alice")
    elif change == "deactivation":
        deactivate_user(engine, SYSTEM, "alice")
    else:
        set_role(engine, SYSTEM, "alice", "external")
    assert sessions.resolve_token(engine, token, idle=IDLE) is None
    assert sessions.check_session(engine, new.session_id, idle=IDLE) is None
    assert sessions.count_sessions(engine, user.id) == 0
    assert sessions.resolve_token(engine, other_token, idle=IDLE).user.username == "bob"


def test_a_barred_account_never_resolves_even_with_a_live_row(engine):
    """Belt and braces: the lookup re-reads the account, whatever rows remain."""
    from sqlalchemy import update

    from rlhf.schema import User

    user, new, token = signed_in(engine)
    with session_scope(engine) as session:
        session.execute(update(User.__table__).where(User.__table__.c.id == user.id).values(active=False))
    assert sessions.resolve_token(engine, token, idle=IDLE) is None
    with session_scope(engine) as session:
        session.execute(update(User.__table__).where(User.__table__.c.id == user.id).values(active=True, role="admin"))
    assert sessions.resolve_token(engine, token, idle=IDLE).user.role == "admin"  # role read as stored now


def test_a_promotion_keeps_the_session(engine):
    user, new, token = signed_in(engine)
    set_role(engine, SYSTEM, "alice", "admin")
    assert sessions.resolve_token(engine, token, idle=IDLE).user.role == "admin"


def test_last_project_per_account(engine):
    alice = create_user(engine, SYSTEM, "alice", PASSWORD)
    bob = create_user(engine, SYSTEM, "bob", PASSWORD)
    first = create_project(engine, SYSTEM, "first")
    second = create_project(engine, SYSTEM, "second")
    assert sessions.last_project(engine, alice.id) is None
    sessions.remember_project(engine, alice.id, second.id)
    sessions.remember_project(engine, bob.id, first.id)
    assert (sessions.last_project(engine, alice.id), sessions.last_project(engine, bob.id)) == (second.id, first.id)
    sessions.remember_project(engine, alice.id, first.id)
    assert sessions.last_project(engine, alice.id) == first.id
    with pytest.raises(LookupError):
        sessions.remember_project(engine, alice.id, 10_000)
