"""Accounts: argon2 hashing, sign-in and throttling (known and unknown names), roles on every admin function, CLI."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from engine_fixtures import add_annotators, build_project
from rlhf import annotate, assign, auth
from rlhf.auth import (
    GENERIC_FAILURE,
    AccountDisabled,
    AuthenticationError,
    LastAdminError,
    PasswordPolicyError,
    ThrottlePolicy,
    TooManyAttempts,
    UserExists,
    authenticate,
    change_password,
    create_user,
    deactivate_user,
    ensure_admin,
    list_users,
    reactivate_user,
    reset_password,
    set_role,
)
from rlhf.db import session_scope
from rlhf.roles import SYSTEM, PermissionDenied
from rlhf.schema import User, utcnow

PASSWORD = "correct horse battery"
# Taken at import (collection), before any fixture swaps in a cheap hasher: tests/app patches
# `auth._hasher` for the whole session once its first test runs.
PRODUCTION_HASHER = auth._hasher


@pytest.fixture(autouse=True)
def cheap_hashing(monkeypatch):
    """argon2id with tiny cost parameters: same code paths, milliseconds instead of a second per
    hash on a loaded 2-core machine. `test_production_hasher_parameters` checks the real ones."""
    from argon2 import PasswordHasher

    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    dummy = cheap.hash("dummy password for unknown names")
    monkeypatch.setattr(auth, "_hasher", lambda: cheap)
    monkeypatch.setattr(auth, "_dummy_hash", lambda: dummy)


def test_production_hasher_parameters():
    hasher = PRODUCTION_HASHER()
    # RFC 9106 second recommended option: argon2id, t=3, 64 MiB.
    assert (hasher.type.name, hasher.time_cost, hasher.memory_cost) == ("ID", 3, 64 * 1024)
    assert auth.verify_password(auth.hash_password(PASSWORD), PASSWORD)
    assert not auth.verify_password(None, PASSWORD) and not auth.verify_password("not a hash", PASSWORD)


def test_password_is_stored_as_argon2_and_signs_in(engine):
    info = create_user(engine, SYSTEM, "alice", PASSWORD)
    with session_scope(engine) as s:
        stored = s.execute(select(User.password_hash).where(User.id == info.id)).scalar_one()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    user = authenticate(engine, "alice", PASSWORD)
    assert user.id == info.id and user.last_login_at is not None and not user.must_change_password


def test_password_policy_and_duplicate_names(sqlite_engine):
    with pytest.raises(PasswordPolicyError):
        create_user(sqlite_engine, SYSTEM, "bob", "short")
    with pytest.raises(PasswordPolicyError):
        create_user(sqlite_engine, SYSTEM, "bobbybobby", "BobbyBobby")
    with pytest.raises(ValueError):
        create_user(sqlite_engine, SYSTEM, "bad name!", PASSWORD)
    with pytest.raises(ValueError):
        create_user(sqlite_engine, SYSTEM, "system", PASSWORD)
    with pytest.raises(ValueError):
        create_user(sqlite_engine, SYSTEM, "carol", PASSWORD, role="owner")
    create_user(sqlite_engine, SYSTEM, "bob", PASSWORD)
    with pytest.raises(UserExists):
        create_user(sqlite_engine, SYSTEM, "Bob", PASSWORD)


def test_unknown_user_and_wrong_password_look_the_same(sqlite_engine):
    create_user(sqlite_engine, SYSTEM, "alice", PASSWORD)
    with pytest.raises(AuthenticationError) as wrong:
        authenticate(sqlite_engine, "alice", "not the password")
    with pytest.raises(AuthenticationError) as unknown:
        authenticate(sqlite_engine, "mallory", "not the password")
    assert type(wrong.value) is type(unknown.value) is AuthenticationError
    assert str(wrong.value) == str(unknown.value) == GENERIC_FAILURE


@pytest.mark.parametrize("name_exists", [True, False])
def test_throttling_locks_with_growing_delay_for_known_and_unknown_names(sqlite_engine, name_exists):
    engine = sqlite_engine
    policy = ThrottlePolicy(free_failures=5, first_lock=timedelta(seconds=30))
    name = "alice" if name_exists else "nobody"
    if name_exists:
        create_user(engine, SYSTEM, "alice", PASSWORD)
    t0 = utcnow()
    outcomes = []
    for i in range(5):
        try:
            authenticate(engine, name, "wrong password!", now=t0 + timedelta(seconds=i), policy=policy)
        except TooManyAttempts as exc:
            outcomes.append(("locked", round(exc.retry_after_s)))
        except AuthenticationError:
            outcomes.append("failed")
    assert outcomes == ["failed"] * 4 + [("locked", 30)]
    # While locked, even the right password is refused without being checked.
    with pytest.raises(TooManyAttempts) as exc:
        authenticate(engine, name.upper(), PASSWORD, now=t0 + timedelta(seconds=14), policy=policy)
    assert exc.value.retry_after_s == pytest.approx(20)
    # After the lock, one more failure doubles it.
    with pytest.raises(TooManyAttempts) as exc:
        authenticate(engine, name, "still wrong!!", now=t0 + timedelta(seconds=40), policy=policy)
    assert exc.value.retry_after_s == pytest.approx(60)
    if name_exists:
        user = authenticate(engine, name, PASSWORD, now=t0 + timedelta(seconds=101), policy=policy)
        assert user.username == "alice"
        # Success cleared the count: the next failure is an ordinary one.
        with pytest.raises(AuthenticationError) as exc:
            authenticate(engine, name, "wrong again!", now=t0 + timedelta(seconds=102), policy=policy)
        assert type(exc.value) is AuthenticationError


def test_failures_are_forgotten_after_a_quiet_window(sqlite_engine):
    policy = ThrottlePolicy(free_failures=2, window=timedelta(minutes=15))
    t0 = utcnow()
    with pytest.raises(AuthenticationError):
        authenticate(sqlite_engine, "ghost", "nope nope nope", now=t0, policy=policy)
    with pytest.raises(AuthenticationError) as exc:
        authenticate(sqlite_engine, "ghost", "nope nope nope", now=t0 + timedelta(minutes=20), policy=policy)
    assert type(exc.value) is AuthenticationError  # the first failure had expired


def test_throttle_rows_of_quiet_names_are_purged(sqlite_engine):
    from rlhf.schema import LoginThrottle

    t0 = utcnow()
    for i in range(5):
        with pytest.raises(AuthenticationError):
            authenticate(sqlite_engine, f"guess{i}", "nope nope nope", now=t0)
    with pytest.raises(AuthenticationError):
        authenticate(sqlite_engine, "later", "nope nope nope", now=t0 + timedelta(hours=1))
    with session_scope(sqlite_engine) as s:
        assert s.execute(select(LoginThrottle.username)).scalars().all() == ["later"]


def test_external_and_inactive_users_cannot_sign_in(engine):
    create_user(engine, SYSTEM, "judge-model", None, role="external")
    with pytest.raises(AuthenticationError) as exc:
        authenticate(engine, "judge-model", "")
    assert str(exc.value) == GENERIC_FAILURE
    create_user(engine, SYSTEM, "alice", PASSWORD)
    create_user(engine, SYSTEM, "root", PASSWORD, role="admin")
    deactivate_user(engine, SYSTEM, "alice")
    with pytest.raises(AccountDisabled):
        authenticate(engine, "alice", PASSWORD)
    with pytest.raises(AuthenticationError) as exc:
        authenticate(engine, "alice", "wrong password")
    assert type(exc.value) is AuthenticationError  # the wrong password learns nothing
    reactivate_user(engine, SYSTEM, "alice")
    assert authenticate(engine, "alice", PASSWORD).active


def test_reset_and_change_password(engine):
    create_user(engine, SYSTEM, "alice", PASSWORD)
    one_time = reset_password(engine, SYSTEM, "alice")
    assert len(one_time) >= auth.MIN_PASSWORD_LENGTH
    with pytest.raises(AuthenticationError):
        authenticate(engine, "alice", PASSWORD)
    user = authenticate(engine, "alice", one_time)
    assert user.must_change_password
    with pytest.raises(AuthenticationError):
        change_password(engine, user, "not it at all", "a brand new secret")
    with pytest.raises(PasswordPolicyError):
        change_password(engine, user, one_time, "tiny")
    change_password(engine, user, one_time, "a brand new secret")
    again = authenticate(engine, "alice", "a brand new secret")
    assert not again.must_change_password
    assert reset_password(engine, SYSTEM, "alice", "chosen by admin") == "chosen by admin"
    assert authenticate(engine, "alice", "chosen by admin").must_change_password


def test_reset_password_clears_a_lock(sqlite_engine):
    create_user(sqlite_engine, SYSTEM, "alice", PASSWORD)
    policy = ThrottlePolicy(free_failures=1)
    with pytest.raises(TooManyAttempts):
        authenticate(sqlite_engine, "alice", "wrong password", policy=policy)
    assert list_users(sqlite_engine, SYSTEM)[0].locked_until is not None
    new = reset_password(sqlite_engine, SYSTEM, "alice")
    assert authenticate(sqlite_engine, "alice", new, policy=policy).username == "alice"


def test_ensure_admin(engine):
    created = ensure_admin(engine)
    assert created is not None
    username, password = created
    assert username == "admin"
    admin = authenticate(engine, username, password)
    assert admin.role == "admin" and admin.must_change_password
    assert ensure_admin(engine) is None
    # The only admin demoted? Refused. Deactivated by force in the database? A new one appears.
    with pytest.raises(LastAdminError):
        set_role(engine, SYSTEM, "admin", "annotator")
    with pytest.raises(LastAdminError):
        deactivate_user(engine, SYSTEM, "admin")
    with session_scope(engine, write=True) as s:
        s.execute(User.__table__.update().values(active=False))
    username2, _ = ensure_admin(engine)
    assert username2 == "admin2"


def test_deactivation_releases_leases(engine):
    from rlhf.assign import next_task

    built = build_project(engine, n_rating=1, overlap=1)
    create_user(engine, SYSTEM, "alice", PASSWORD)
    create_user(engine, SYSTEM, "bob", PASSWORD)
    alice, bob = authenticate(engine, "alice", PASSWORD), authenticate(engine, "bob", PASSWORD)
    assert next_task(engine, alice, built.project, "rating") is not None
    assert next_task(engine, bob, built.project, "rating") is None
    deactivate_user(engine, SYSTEM, "alice")
    assert next_task(engine, bob, built.project, "rating") is not None


# -------------------------------------------------------------------- role checks everywhere


def _admin_calls(engine, built, user):
    """Every admin backend function, called with `actor` standing in for the caller."""
    task_id = built.rating_ids[0]
    return {
        "create_user": lambda a: create_user(engine, a, "newbie", PASSWORD),
        "deactivate_user": lambda a: deactivate_user(engine, a, user.username),
        "reactivate_user": lambda a: reactivate_user(engine, a, user.username),
        "reset_password": lambda a: reset_password(engine, a, user.username),
        "set_role": lambda a: set_role(engine, a, user.username, "admin"),
        "list_users": lambda a: list_users(engine, a),
        "list_flags": lambda a: annotate.list_flags(engine, a, built.project),
        "resolve_flag": lambda a: annotate.resolve_flag(engine, a, 1),
        "set_gold": lambda a: annotate.set_gold(engine, a, task_id, {"scores": {"helpfulness": 7}}),
        "request_extra_votes": lambda a: assign.request_extra_votes(engine, a, built.project, min_agreement=0.5),
        "task_view_for_admin": lambda a: annotate.task_view_for_admin(engine, a, task_id),
    }


def test_every_admin_function_refuses_annotators(engine):
    built = build_project(engine, n_rating=1)
    annotator, victim = add_annotators(engine, 2)
    annotate.flag_task(engine, annotator, built.rating_ids[0], "other")
    calls = _admin_calls(engine, built, victim)
    for name, call in calls.items():
        with pytest.raises(PermissionDenied):
            call(annotator)
        with pytest.raises(PermissionDenied):
            call(None)
    # and they all work for SYSTEM (sanity: the refusal above is about the role, not the call)
    for name, call in calls.items():
        call(SYSTEM)


def test_a_demoted_admin_loses_power_at_once(sqlite_engine):
    engine = sqlite_engine
    create_user(engine, SYSTEM, "root", PASSWORD, role="admin")
    create_user(engine, SYSTEM, "boss", PASSWORD, role="admin")
    boss = authenticate(engine, "boss", PASSWORD)
    set_role(engine, SYSTEM, "boss", "annotator")
    assert boss.role == "admin"  # the stale session object
    with pytest.raises(PermissionDenied):
        list_users(engine, boss)


def test_admin_functions_are_covered():
    """Guard: a new admin function must join `_admin_calls` (names containing the check)."""
    import inspect

    checked = set()
    for module in (auth, annotate, assign):
        for name, fn in vars(module).items():
            if inspect.isfunction(fn) and fn.__module__ == module.__name__ and not name.startswith("_"):
                if "check_admin(" in inspect.getsource(fn) and name != "check_admin":
                    checked.add(name)
    assert checked == set(_admin_calls(None, type("B", (), {"rating_ids": [1], "project": None})(), type("U", (), {"username": "x"})()))


# ---------------------------------------------------------------------------------------- CLI


def test_cli_user_commands(tmp_path, monkeypatch):
    from rlhf.cli import app
    from rlhf.db import init_database, make_engine

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    engine = make_engine(url)
    init_database(engine)
    monkeypatch.setenv("RLHF_DATABASE_URL", url)
    runner = CliRunner()
    pw = tmp_path / "pw.txt"
    pw.write_text(PASSWORD + "\n")

    result = runner.invoke(app, ["user", "add", "alice", "--role", "admin", "--password-file", str(pw)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["user", "add", "bob"], input="another good one\nanother good one\n")
    assert result.exit_code == 0, result.output
    assert authenticate(engine, "bob", "another good one").role == "annotator"
    result = runner.invoke(app, ["user", "add", "bob", "--password-file", str(pw)])
    assert result.exit_code == 2 and "taken" in result.output

    result = runner.invoke(app, ["user", "list"])
    assert result.exit_code == 0 and "alice" in result.output and "admin" in result.output

    result = runner.invoke(app, ["user", "set-role", "bob", "admin"])
    assert result.exit_code == 0 and "now admin" in result.output
    result = runner.invoke(app, ["user", "set-role", "bob", "wizard"])
    assert result.exit_code == 2

    result = runner.invoke(app, ["user", "reset-password", "bob"])
    assert result.exit_code == 0
    one_time = result.output.split("one-time password for 'bob': ")[1].split()[0]
    assert authenticate(engine, "bob", one_time).must_change_password

    result = runner.invoke(app, ["user", "deactivate", "bob"])
    assert result.exit_code == 0
    with pytest.raises(AccountDisabled):
        authenticate(engine, "bob", one_time)
    result = runner.invoke(app, ["user", "deactivate", "nobody"])
    assert result.exit_code == 2 and "no user named" in result.output
    engine.dispose()
