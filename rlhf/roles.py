"""Who may call what: role checks that every backend function makes itself, on the account as stored now.

Backend functions take the calling `actor`: a `User` row (from a signed-in session) or
`SYSTEM`, the trusted local operator of the `rlhf` command line. Hiding a page is not a
permission check; these are.

The object a page holds can be stale: an admin demoted or deactivated after signing in still
holds a `User` with `role="admin", active=True`. So a check never trusts the object's role or
active flag: `check_admin` / `check_annotator` re-read them from the database (in the caller's
transaction when given a Session or Connection, else in a short read of their own), and only
SYSTEM, which has no row, is trusted as it is (issue 16, item 3).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Optional, Union

from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine

from rlhf.schema import User

USER = User.__table__
ADMIN_ROLES = frozenset({"admin"})
ANNOTATOR_ROLES = frozenset({"annotator", "admin"})
"""Roles that may annotate (admins may too)."""


class PermissionDenied(PermissionError):
    """The caller's role does not allow this action."""


class _System:
    """The local operator (CLI, worker, tests): trusted like an admin, but no user row."""

    id = None
    username = "system"
    role = "admin"
    active = True

    def __repr__(self) -> str:
        return "SYSTEM"


SYSTEM = _System()
Actor = Union[User, _System]
Database = Union[Engine, Connection, Any]
"""An Engine, a Connection, or a Session (anything with `execute`) to read the account through."""


def _who(actor: Any) -> str:
    return getattr(actor, "username", None) or "anonymous"


def stored_account(db: Database, actor: Any) -> Optional[Any]:
    """The actor's (id, username, role, active) as stored now; None for no account (or no actor)."""
    actor_id = getattr(actor, "id", None)
    if actor_id is None:
        return None
    statement = select(USER.c.id, USER.c.username, USER.c.role, USER.c.active).where(USER.c.id == actor_id)
    if isinstance(db, Engine):
        with db.connect() as connection:
            return connection.execute(statement).first()
    return db.execute(statement).first()


def require_stored_role(account: Any, roles: Collection[str], action: str, actor: Any = None) -> None:
    """PermissionDenied unless `account` (a row just read from the database) is active and has one of `roles`."""
    who = _who(account) if account is not None else _who(actor)
    if account is None:
        raise PermissionDenied(f"{who} may not {action}: no such account")
    if not account.active:
        raise PermissionDenied(f"{who} may not {action}: account deactivated")
    if account.role not in roles:
        need = "admin role required" if set(roles) == ADMIN_ROLES else f"role {account.role!r} may not"
        raise PermissionDenied(f"{who} may not {action}: {need}")


def check_role(db: Database, actor: Actor | None, roles: Collection[str], action: str) -> None:
    """PermissionDenied unless `actor` is SYSTEM or its stored account is active with one of `roles`."""
    if actor is SYSTEM:
        return
    require_stored_role(stored_account(db, actor), roles, action, actor)


def check_admin(db: Database, actor: Actor | None, action: str = "this action") -> None:
    """PermissionDenied unless `actor` is SYSTEM or, as stored now, an active admin."""
    check_role(db, actor, ADMIN_ROLES, action)


def check_annotator(db: Database, actor: Actor | None, action: str = "annotate") -> None:
    """PermissionDenied unless `actor` is SYSTEM or, as stored now, an active annotator or admin."""
    check_role(db, actor, ANNOTATOR_ROLES, action)
