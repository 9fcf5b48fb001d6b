"""Accounts: argon2 password hashes, throttled sign-in, roles, and the first admin.

Sign-in contract:
- `authenticate` raises `AuthenticationError` with one message for an unknown name and a wrong
  password, and spends the same argon2 work on both, so neither the text nor the timing says
  which accounts exist;
- failures are counted per typed name (lower-cased) in `LoginThrottle`, for existing and
  unknown names alike; after `free_failures` the name is locked for a delay that doubles with
  each further failure (`TooManyAttempts.retry_after_s`); a success clears the count;
- `external` users (label sources) and inactive users never sign in.

Every admin function checks the caller itself with `check_admin` (role re-read from the
database, so a demoted admin's stale session object does not keep its power).

Browser sessions (rlhf.sessions) end with the credentials they were opened with: a password
change, an admin reset, a deactivation and a change to `external` revoke all of the account's
sessions in the same transaction (a role change between admin and annotator does not: each
lookup re-reads the role).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Optional

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from rlhf.db import run_transaction, session_scope
from rlhf.roles import Actor, PermissionDenied, check_admin  # noqa: F401 - check_admin: the one role check, re-exported
from rlhf.schema import ROLES, Lease, LoginThrottle, User, utcnow
from rlhf.sessions import revoke_user_sessions

USER = User.__table__
THROTTLE = LoginThrottle.__table__
LEASE = Lease.__table__

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024
"""Bounds the hashing work an attacker can ask for with one request."""
ONE_TIME_PASSWORD_BYTES = 12
"""Random bytes of a generated password (16 URL-safe characters)."""
USERNAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,149}$")
RESERVED_USERNAMES = frozenset({"system"})
"""`system` is the CLI's actor (rlhf.roles.SYSTEM); an account of that name would be ambiguous in logs."""
GENERIC_FAILURE = "unknown username or wrong password"


# ------------------------------------------------------------------------------------ errors


class AuthenticationError(Exception):
    """Sign-in refused. The message never says whether the account exists."""


class TooManyAttempts(AuthenticationError):
    """Too many failures for this name: wait `retry_after_s` seconds."""

    def __init__(self, retry_after_s: float) -> None:
        self.retry_after_s = max(0.0, retry_after_s)
        super().__init__(f"too many failed sign-ins; try again in {int(self.retry_after_s + 0.999)} s")


class AccountDisabled(AuthenticationError):
    """Right password, but the account is deactivated (said only to whoever knows the password)."""


class PasswordPolicyError(ValueError):
    """The new password is too short, too long, or otherwise refused."""


class UserExists(ValueError):
    """The username is taken (names are compared case-insensitively)."""


class UserNotFound(LookupError):
    """No account has this username."""


class LastAdminError(ValueError):
    """The change would leave no active admin."""


# ------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class ThrottlePolicy:
    """How repeated sign-in failures for one name are slowed down."""

    free_failures: int = 5
    """Failures tolerated before the name is locked."""
    window: timedelta = timedelta(minutes=15)
    """Failures are forgotten when none happened (and no lock ran) for this long."""
    first_lock: timedelta = timedelta(seconds=30)
    """Lock after the `free_failures`-th failure; each further failure doubles it."""
    max_lock: timedelta = timedelta(hours=1)
    """Longest lock."""

    def lock_for(self, failures: int) -> Optional[timedelta]:
        """The lock that `failures` consecutive failures earn, or None below the threshold."""
        if failures < self.free_failures:
            return None
        doublings = min(failures - self.free_failures, 20)  # 2**20 × 30 s is far past any cap
        return min(self.first_lock * (2**doublings), self.max_lock)


DEFAULT_THROTTLE = ThrottlePolicy()


@dataclass(frozen=True)
class UserInfo:
    """An account as admins see it (never the hash)."""

    id: int
    username: str
    role: str
    active: bool
    must_change_password: bool
    last_login_at: Optional[datetime]
    created_at: datetime
    locked_until: Optional[datetime] = None
    """Set while sign-in for this name is throttled."""


# ----------------------------------------------------------------------------- pure helpers


@lru_cache(maxsize=1)
def _hasher() -> PasswordHasher:
    # argon2-cffi's defaults follow RFC 9106's second recommended option (argon2id, 64 MiB).
    return PasswordHasher()


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """A hash to verify against when the name is unknown, so the work (and time) is the same."""
    return _hasher().hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _hasher().hash(password)


def verify_password(password_hash: Optional[str], password: str) -> bool:
    """True when `password` matches; a missing or malformed hash verifies the dummy and fails."""
    try:
        return _hasher().verify(password_hash or _dummy_hash(), password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def check_password_policy(password: Any, username: Optional[str] = None) -> str:
    """Return the password if acceptable, else raise PasswordPolicyError saying why."""
    if not isinstance(password, str):
        raise PasswordPolicyError("password must be text")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise PasswordPolicyError(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise PasswordPolicyError(f"password must be at most {MAX_PASSWORD_LENGTH} characters")
    if username is not None and password.strip().lower() == username.strip().lower():
        raise PasswordPolicyError("password must not be the username")
    return password


def check_username(username: Any) -> str:
    if not isinstance(username, str) or not USERNAME_PATTERN.match(username):
        raise ValueError("username: 1–150 characters, letters, digits and _ . @ -, starting with a letter or digit")
    if username.lower() in RESERVED_USERNAMES:
        raise ValueError(f"username: {username!r} is reserved")
    return username


def check_role(role: Any) -> str:
    if role not in ROLES:
        raise ValueError(f"role: must be one of {', '.join(ROLES)}, got {role!r}")
    return role


def throttle_key(username: str) -> str:
    return (username or "").strip().lower()[:150]


def one_time_password() -> str:
    return secrets.token_urlsafe(ONE_TIME_PASSWORD_BYTES)


def _aware(now: Optional[datetime]) -> datetime:
    if now is None:
        return utcnow()
    if now.utcoffset() is None:
        raise ValueError("now must be timezone-aware (UTC)")
    return now


# ------------------------------------------------------------------------------ role checks


# `check_admin` lives in rlhf.roles: every backend module checks through it, re-reading the
# actor's role and active flag from the database (a stale session object keeps no power).


# --------------------------------------------------------------------------------- sign-in


def _throttle_row(session: Session, key: str):
    return session.execute(select(THROTTLE).where(THROTTLE.c.username == key)).first()


def _upsert_blank_throttle(session: Session, key: str, now: datetime) -> None:
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        from sqlalchemy.dialects.postgresql import insert
    session.execute(insert(THROTTLE).values(username=key, failures=0, last_failure_at=now).on_conflict_do_nothing())


def _record_failure(engine: Engine, key: str, now: datetime, policy: ThrottlePolicy) -> Optional[datetime]:
    """Count one failure for `key`; the lock it earned (locked_until), or None."""

    def work(session: Session) -> Optional[datetime]:
        # Forget names quiet for a whole window, so guessing many names cannot grow the table forever.
        stale = now - policy.window
        session.execute(
            delete(THROTTLE).where(
                THROTTLE.c.username != key,
                THROTTLE.c.last_failure_at < stale,
                or_(THROTTLE.c.locked_until.is_(None), THROTTLE.c.locked_until < stale),
            )
        )
        _upsert_blank_throttle(session, key, now)
        row = session.execute(select(THROTTLE).where(THROTTLE.c.username == key).with_for_update()).first()
        last_activity = max(row.last_failure_at, row.locked_until or row.last_failure_at)
        failures = 0 if now - last_activity > policy.window else row.failures
        failures += 1
        lock = policy.lock_for(failures)
        locked_until = now + lock if lock is not None else None
        session.execute(
            update(THROTTLE).where(THROTTLE.c.username == key).values(failures=failures, last_failure_at=now, locked_until=locked_until)
        )
        return locked_until

    return run_transaction(engine, work)


def _check_not_locked(engine: Engine, key: str, now: datetime) -> bool:
    """Raise TooManyAttempts while `key` is locked; True when a throttle row exists (to clear on success)."""
    with session_scope(engine) as session:
        row = _throttle_row(session, key)
    if row is None:
        return False
    if row.locked_until is not None and row.locked_until > now:
        raise TooManyAttempts((row.locked_until - now).total_seconds())
    return True


def _fail(engine: Engine, key: str, now: datetime, policy: ThrottlePolicy) -> AuthenticationError:
    locked_until = _record_failure(engine, key, now, policy)
    if locked_until is not None:
        return TooManyAttempts((locked_until - now).total_seconds())
    return AuthenticationError(GENERIC_FAILURE)


def authenticate(
    engine: Engine,
    username: str,
    password: str,
    *,
    now: Optional[datetime] = None,
    policy: ThrottlePolicy = DEFAULT_THROTTLE,
) -> User:
    """The signed-in user (a detached row; check `must_change_password`).

    Raises TooManyAttempts while the name is throttled (before any password check),
    AuthenticationError (same message for unknown name and wrong password; `external`
    accounts never sign in), AccountDisabled for a deactivated account with the right password.
    The argon2 verification runs outside any database transaction.
    """
    now = _aware(now)
    key = throttle_key(username)
    has_throttle_row = _check_not_locked(engine, key, now)

    with session_scope(engine) as session:
        user = session.execute(select(User).where(USER.c.username == username)).scalars().first()
    can_sign_in = user is not None and user.role != "external" and user.password_hash is not None
    matches = verify_password(user.password_hash if can_sign_in else None, password if isinstance(password, str) else "")
    if not matches:
        raise _fail(engine, key, now, policy)
    if not user.active:
        raise AccountDisabled("this account is deactivated; ask an admin")

    new_hash = hash_password(password) if _hasher().check_needs_rehash(user.password_hash) else None

    def work(session: Session) -> None:
        if has_throttle_row:
            session.execute(delete(THROTTLE).where(THROTTLE.c.username == key))
        values: dict[str, Any] = {"last_login_at": now}
        if new_hash is not None:
            values["password_hash"] = new_hash
        session.execute(update(USER).where(USER.c.id == user.id).values(**values))

    run_transaction(engine, work)
    user.last_login_at = now
    if new_hash is not None:
        user.password_hash = new_hash
    return user


def change_password(
    engine: Engine,
    user: User,
    old_password: str,
    new_password: str,
    *,
    now: Optional[datetime] = None,
    policy: ThrottlePolicy = DEFAULT_THROTTLE,
) -> None:
    """The signed-in user replaces their password (clears must-change) and every session of theirs ends
    (the caller starts a fresh one for the browser that made the change).

    A wrong old password counts as a failed sign-in for the name (it is a password check too).
    Raises AuthenticationError / TooManyAttempts / PasswordPolicyError.
    """
    now = _aware(now)
    key = throttle_key(user.username)
    has_throttle_row = _check_not_locked(engine, key, now)
    with session_scope(engine) as session:
        row = session.execute(select(USER.c.password_hash, USER.c.role, USER.c.active).where(USER.c.id == user.id)).first()
    usable = row is not None and row.active and row.role != "external"
    if not verify_password(row.password_hash if usable else None, old_password):
        raise _fail(engine, key, now, policy)
    check_password_policy(new_password, user.username)
    if new_password == old_password:
        raise PasswordPolicyError("the new password must differ from the old one")
    new_hash = hash_password(new_password)

    def work(session: Session) -> None:
        if has_throttle_row:
            session.execute(delete(THROTTLE).where(THROTTLE.c.username == key))
        session.execute(update(USER).where(USER.c.id == user.id).values(password_hash=new_hash, must_change_password=False))
        revoke_user_sessions(session, user.id)

    run_transaction(engine, work)
    user.password_hash = new_hash
    user.must_change_password = False


def load_user(engine: Engine, user_id: int) -> Optional[User]:
    """The account as stored now (pages re-read it on each run to notice deactivation)."""
    with session_scope(engine) as session:
        return session.get(User, user_id)


# ------------------------------------------------------------------------------ admin: users


def _find(session: Session, username: str) -> User:
    user = session.execute(select(User).where(USER.c.username == username)).scalars().first()
    if user is None:
        raise UserNotFound(f"no user named {username!r}")
    return user


def _active_admins(session: Session) -> int:
    return session.execute(select(func.count()).select_from(USER).where(USER.c.role == "admin", USER.c.active.is_(True))).scalar_one()


def _info(user: User, locked_until: Optional[datetime] = None) -> UserInfo:
    return UserInfo(
        id=user.id,
        username=user.username,
        role=user.role,
        active=user.active,
        must_change_password=user.must_change_password,
        last_login_at=user.last_login_at,
        created_at=user.created_at,
        locked_until=locked_until,
    )


def create_user(
    engine: Engine,
    actor: Actor,
    username: str,
    password: Optional[str],
    role: str = "annotator",
    *,
    must_change_password: bool = False,
) -> UserInfo:
    """Create an account. `external` accounts take no password (they never sign in); others need one
    meeting the policy. Raises PermissionDenied, ValueError (username/role), PasswordPolicyError, UserExists.
    """
    check_username(username)
    check_role(role)
    if role == "external":
        password_hash = None
    else:
        password_hash = hash_password(check_password_policy(password, username))

    def work(session: Session) -> UserInfo:
        check_admin(session, actor, "create users")
        taken = session.execute(select(USER.c.id).where(func.lower(USER.c.username) == username.lower())).first()
        if taken is not None:
            raise UserExists(f"username {username!r} is taken")
        user = User(username=username, password_hash=password_hash, role=role, must_change_password=must_change_password)
        session.add(user)
        session.flush()
        return _info(user)

    try:
        return run_transaction(engine, work)
    except IntegrityError as exc:  # a concurrent create of the same name won the race
        raise UserExists(f"username {username!r} is taken") from exc


def _release_leases(session: Session, user_id: int) -> None:
    # Live leases of an account that can no longer annotate would hold task slots until expiry.
    session.execute(delete(LEASE).where(LEASE.c.user_id == user_id))


def deactivate_user(engine: Engine, actor: Actor, username: str) -> UserInfo:
    """Stop an account signing in and annotating (its annotations stay); releases its leases.
    Refuses to deactivate the last active admin (LastAdminError)."""

    def work(session: Session) -> UserInfo:
        check_admin(session, actor, "deactivate users")
        user = _find(session, username)
        if user.active and user.role == "admin" and _active_admins(session) <= 1:
            raise LastAdminError("cannot deactivate the last active admin")
        user.active = False
        _release_leases(session, user.id)
        revoke_user_sessions(session, user.id)
        session.add(user)
        session.flush()
        return _info(user)

    return run_transaction(engine, work)


def reactivate_user(engine: Engine, actor: Actor, username: str) -> UserInfo:
    """Let a deactivated account sign in again."""

    def work(session: Session) -> UserInfo:
        check_admin(session, actor, "reactivate users")
        user = _find(session, username)
        user.active = True
        session.add(user)
        session.flush()
        return _info(user)

    return run_transaction(engine, work)


def set_role(engine: Engine, actor: Actor, username: str, role: str) -> UserInfo:
    """Change an account's role (admin, annotator, external). Refuses to demote the last active admin."""
    check_role(role)

    def work(session: Session) -> UserInfo:
        check_admin(session, actor, "change roles")
        user = _find(session, username)
        if user.role == "admin" and role != "admin" and user.active and _active_admins(session) <= 1:
            raise LastAdminError("cannot demote the last active admin")
        user.role = role
        if role == "external":
            _release_leases(session, user.id)
            revoke_user_sessions(session, user.id)
        session.add(user)
        session.flush()
        return _info(user)

    return run_transaction(engine, work)


def reset_password(engine: Engine, actor: Actor, username: str, new_password: Optional[str] = None) -> str:
    """Set a new password (a random one-time one unless given) and return it; the user must change
    it at next sign-in, and any sign-in throttle on the name is cleared."""
    password = one_time_password() if new_password is None else check_password_policy(new_password, username)
    password_hash = hash_password(password)

    def work(session: Session) -> None:
        check_admin(session, actor, "reset passwords")
        user = _find(session, username)
        if user.role == "external":
            raise ValueError(f"{username!r} is an external label source and cannot sign in")
        session.execute(update(USER).where(USER.c.id == user.id).values(password_hash=password_hash, must_change_password=True))
        revoke_user_sessions(session, user.id)
        session.execute(delete(THROTTLE).where(THROTTLE.c.username == throttle_key(username)))

    run_transaction(engine, work)
    return password


def list_users(engine: Engine, actor: Actor, *, now: Optional[datetime] = None) -> list[UserInfo]:
    """All accounts by username, with any sign-in lock still running."""
    now = _aware(now)

    def work(session: Session) -> list[UserInfo]:
        check_admin(session, actor, "list users")
        users = session.execute(select(User).order_by(USER.c.username)).scalars().all()
        locks = dict(
            session.execute(select(THROTTLE.c.username, THROTTLE.c.locked_until).where(THROTTLE.c.locked_until > now)).all()
        )
        return [_info(u, locks.get(throttle_key(u.username))) for u in users]

    return run_transaction(engine, work, write=False)


def ensure_admin(engine: Engine) -> Optional[tuple[str, str]]:
    """Create an admin with a random one-time password if no active admin exists.

    Returns (username, password) when one was created (the name is `admin`, or `admin2`, ... if
    taken), else None. The password is flagged must-change. Called by `rlhf init`.
    """
    password = one_time_password()
    password_hash = hash_password(password)

    def work(session: Session) -> Optional[str]:
        if _active_admins(session) > 0:
            return None
        names = set(n.lower() for n in session.execute(select(USER.c.username).where(func.lower(USER.c.username).like("admin%"))).scalars())
        username = next(name for name in ("admin", *(f"admin{i}" for i in range(2, 10_000))) if name not in names)
        session.add(User(username=username, password_hash=password_hash, role="admin", must_change_password=True))
        session.flush()
        return username

    username = run_transaction(engine, work)
    return None if username is None else (username, password)
