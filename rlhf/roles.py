"""Who may call what: role checks that every admin backend function makes itself.

Backend functions take the calling `actor`: a `User` row (from a signed-in session) or
`SYSTEM`, the trusted local operator of the `rlhf` command line. Hiding a page is not a
permission check; these are.
"""

from __future__ import annotations

from typing import Union

from rlhf.schema import User


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


def is_admin(actor: Actor | None) -> bool:
    return actor is not None and bool(getattr(actor, "active", False)) and getattr(actor, "role", None) == "admin"


def require_admin(actor: Actor | None, action: str = "this action") -> None:
    """Raise PermissionDenied unless `actor` is SYSTEM or an active admin."""
    if not is_admin(actor):
        who = getattr(actor, "username", None) or "anonymous"
        raise PermissionDenied(f"{who} may not {action}: admin role required")


def require_annotator(actor: Actor | None, action: str = "annotate") -> None:
    """Raise PermissionDenied unless `actor` is an active annotator or admin (admins may annotate)."""
    if actor is None or not getattr(actor, "active", False) or getattr(actor, "role", None) not in ("annotator", "admin"):
        who = getattr(actor, "username", None) or "anonymous"
        raise PermissionDenied(f"{who} may not {action}")
