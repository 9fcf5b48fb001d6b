"""`rlhf user ...`: manage accounts from the command line (runs as SYSTEM, the trusted local operator)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from rlhf.cli import app, fail

user_app = typer.Typer(help="Manage accounts: add, list, deactivate, reactivate, reset passwords, set roles.", no_args_is_help=True)
app.add_typer(user_app, name="user")

DATABASE_OPTION = typer.Option(None, "--database-url", envvar="RLHF_DATABASE_URL", help="Database URL (default: SQLite file data/rlhf.db).")


def _engine(database_url: Optional[str]):
    from rlhf.db import make_engine

    return make_engine(database_url)


def _read_password_file(path: Path) -> str:
    """The first line of the file, without its line ending (so `echo pw > file` works)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise fail(f"{path}: cannot read password file ({exc.strerror})")
    lines = text.splitlines()
    if not lines or not lines[0]:
        raise fail(f"{path}: the first line is empty")
    return lines[0]


def _run(action):
    """Run a backend call, turning its expected errors into a clean exit 2 with the message."""
    from rlhf.auth import LastAdminError, PasswordPolicyError, UserExists, UserNotFound

    try:
        return action()
    except (UserExists, UserNotFound, PasswordPolicyError, LastAdminError, ValueError) as exc:
        raise fail(str(exc).strip("'\""))


@user_app.command("add")
def add(
    username: str = typer.Argument(..., help="Letters, digits and _ . @ -"),
    role: str = typer.Option("annotator", "--role", help="admin, annotator or external (a label source; no password)."),
    password_file: Optional[Path] = typer.Option(None, "--password-file", help="Read the password from the first line of this file instead of prompting."),
    database_url: Optional[str] = DATABASE_OPTION,
) -> None:
    """Create an account (the password is asked twice, hidden, unless --password-file is given)."""
    from rlhf.auth import create_user
    from rlhf.roles import SYSTEM

    password = None
    if role != "external":
        if password_file is not None:
            password = _read_password_file(password_file)
        else:
            password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    info = _run(lambda: create_user(_engine(database_url), SYSTEM, username, password, role))
    typer.echo(f"created {info.role} {info.username!r}")


@user_app.command("list")
def list_(database_url: Optional[str] = DATABASE_OPTION) -> None:
    """Show every account with its role and state."""
    from rlhf.auth import list_users
    from rlhf.roles import SYSTEM

    users = list_users(_engine(database_url), SYSTEM)
    if not users:
        typer.echo("no users")
        return
    width = max(len(u.username) for u in users)
    for u in users:
        state = "active" if u.active else "inactive"
        notes = []
        if u.must_change_password:
            notes.append("must change password")
        if u.locked_until is not None:
            notes.append(f"sign-in locked until {u.locked_until:%Y-%m-%d %H:%M:%S} UTC")
        last = f"{u.last_login_at:%Y-%m-%d %H:%M}" if u.last_login_at else "never"
        typer.echo(f"{u.username:<{width}}  {u.role:<9}  {state:<8}  last sign-in {last}" + (f"  ({'; '.join(notes)})" if notes else ""))


@user_app.command("deactivate")
def deactivate(username: str, database_url: Optional[str] = DATABASE_OPTION) -> None:
    """Stop an account signing in and annotating (its annotations are kept)."""
    from rlhf.auth import deactivate_user
    from rlhf.roles import SYSTEM

    _run(lambda: deactivate_user(_engine(database_url), SYSTEM, username))
    typer.echo(f"deactivated {username!r}")


@user_app.command("reactivate")
def reactivate(username: str, database_url: Optional[str] = DATABASE_OPTION) -> None:
    """Let a deactivated account sign in again."""
    from rlhf.auth import reactivate_user
    from rlhf.roles import SYSTEM

    _run(lambda: reactivate_user(_engine(database_url), SYSTEM, username))
    typer.echo(f"reactivated {username!r}")


@user_app.command("reset-password")
def reset_password_(
    username: str,
    password_file: Optional[Path] = typer.Option(None, "--password-file", help="Set this password (first line of the file) instead of a random one."),
    database_url: Optional[str] = DATABASE_OPTION,
) -> None:
    """Give the account a new password (random unless given); they must change it at next sign-in."""
    from rlhf.auth import reset_password
    from rlhf.roles import SYSTEM

    given = _read_password_file(password_file) if password_file is not None else None
    password = _run(lambda: reset_password(_engine(database_url), SYSTEM, username, given))
    if given is None:
        typer.echo(f"one-time password for {username!r}: {password}")
    else:
        typer.echo(f"password set for {username!r}")
    typer.echo("they must change it at next sign-in")


@user_app.command("set-role")
def set_role_(username: str, role: str = typer.Argument(..., help="admin, annotator or external"), database_url: Optional[str] = DATABASE_OPTION) -> None:
    """Change an account's role."""
    from rlhf.auth import set_role
    from rlhf.roles import SYSTEM

    info = _run(lambda: set_role(_engine(database_url), SYSTEM, username, role))
    typer.echo(f"{info.username!r} is now {info.role}")
