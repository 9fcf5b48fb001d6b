"""What every page shares: the engine, the signed-in user, role guards, the selected project, safe rendering.

Conventions for page authors (the Dashboard and Training pages follow them too)
-------------------------------------------------------------------------------
1. A page is a file in `labeling_app/pages/`; the router (`labeling_app/app.py`) lists it for the
   roles that may use it. The page still guards itself on its first line, because a page is a
   URL too:

       from labeling_app import common as c
       user = c.require_role("admin")          # or "annotator" (admins pass that check too)
       project_id = c.require_project()        # the sidebar's selection; stops with a notice if none
       engine = c.get_engine()

2. The engine comes from `get_engine()`: one per process and database URL, cached with
   `st.cache_resource`, built from `rlhf.db.database_url()` (`$RLHF_DATABASE_URL`, else the SQLite
   file in `$RLHF_DATA_DIR`). Tests choose the database the same way: they set
   `RLHF_DATABASE_URL` (monkeypatch.setenv) before `AppTest.from_file("labeling_app/app.py")`.
   There is no other way to inject an engine, on purpose: one path, tested.

3. No SQL in pages: `labeling_app/` never imports sqlalchemy or sqlmodel query APIs. A page reads
   state, calls one backend function (`rlhf.*`, passing `user` as the actor), renders.
   Writes happen in widget callbacks (`on_click=`), which report back with `flash(...)`; errors
   the backend raises for bad input are shown with `show_error(exc)`, never as tracebacks.

4. Text that came from outside (prompts, model outputs, comments, file names) is rendered with
   `render_markdown` / `render_prompt` / `render_response`, or embedded in a markdown string through
   `safe_markdown`. The first three parse it once (markdown-it, raw HTML off), turn images into
   text and pass the HTML through an allow-list sanitiser (`labeling_app.render`) before `st.html`
   shows it: only that sanitised output may reach `st.html`, because nothing in it can load a
   resource or run. Never `unsafe_allow_html=True`, never `st.html` on outside text directly.

5. Session-state keys are namespaced by page: `"<page>.<name>"` (e.g. `"dashboard.metric"`).
   The `auth.*` and `project_id` keys below belong to this module; read them through its
   functions.

6. Pages do not call `st.set_page_config`; the router does.

7. Page files run as Streamlit scripts with "magic" on: a bare string or expression at module
   level is drawn on the page. Document page-level constants with `#` comments, not docstrings,
   and put code in functions with a `main()` call at the end.

8. Parts that redraw often go in an `st.fragment` (the annotation pages: `flow.annotation_area`;
   a job's live progress: `st.fragment(run_every=...)`). A fragment rerun skips the router, so
   it must not rely on anything the router does each run; call `show_flash()` inside it if its
   callbacks `flash(...)`. Every element costs each redraw: prefer one markdown element to two.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import streamlit as st

from labeling_app import render
from rlhf.db import database_url

if TYPE_CHECKING:  # type names only: pages never touch the database directly
    from sqlalchemy.engine import Engine

    from rlhf.assign import Message, ResponseView, TaskView
    from rlhf.schema import Project, User

APP_DIR = Path(__file__).resolve().parent
PAGES_DIR = APP_DIR / "pages"

SESSION_IDLE_ENV = "RLHF_SESSION_IDLE_MINUTES"
DEFAULT_SESSION_IDLE_MINUTES = 12 * 60.0
"""A signed-in browser session idle this long must sign in again (a pending submit is kept)."""

# Session-state keys owned by this module.
USER_ID = "auth.user_id"
LAST_ACTIVE = "auth.last_active"
VIA = "auth.via"
"""How the session signed in: "password" or "oidc"."""
NOTICE = "auth.notice"
"""A message for the sign-in page (session expired, account deactivated)."""
PENDING = "auth.pending"
"""A submission that met an expired session, sent once the same user signs in again."""
SESSION_ID = "auth.session_id"
"""The database session (rlhf.sessions) behind this sign-in; absent for OIDC sign-ins (Streamlit's
own cookie keeps those) and for tests that put USER_ID in session state directly."""
HANDOFF = "auth.handoff"
"""(nonce, deadline): the nonce this page still trades for the session cookie (labeling_app/server.py)."""
COOKIE_CHECKED = "auth.cookie_checked"
"""The cookie of the page load was looked at; done once per browser session, kept across sign-out."""
CLEAR_COOKIE = "auth.clear_cookie"
"""The browser still holds a cookie of an ended session: the page asks the server to clear it."""
PROJECT_ID = "project_id"
FLASH = "common.flash"

ROLE_ANNOTATOR = "annotator"
ROLE_ADMIN = "admin"
SIGN_IN_ROLES = (ROLE_ADMIN, ROLE_ANNOTATOR)


# ---------------------------------------------------------------------------------- engine


class DatabaseNotReady(RuntimeError):
    """The database has never been initialised (no migration applied)."""


@st.cache_resource(show_spinner=False)
def _engine_for(url: str) -> "Engine":
    """One engine per URL for the whole server process (connection pools are shared by sessions)."""
    from rlhf.db import current_revision, make_engine

    engine = make_engine(url)
    if current_revision(engine) is None:
        engine.dispose()
        # Raised, not returned: st.cache_resource does not cache exceptions, so the next run
        # tries again (after `rlhf init`) instead of remembering a broken engine.
        raise DatabaseNotReady(f"the database {engine.url.render_as_string(hide_password=True)} is not initialised: run `rlhf init`")
    return engine


def get_engine() -> "Engine":
    """The engine for `rlhf.db.database_url()` (raises DatabaseNotReady before `rlhf init`)."""
    return _engine_for(database_url())


def require_database() -> "Engine":
    """`get_engine()`, or an error on the page and a stop when the database is not ready."""
    try:
        return get_engine()
    except DatabaseNotReady as exc:
        st.error(str(exc))
        st.stop()
        raise  # unreachable: st.stop raises


# ----------------------------------------------------------------------------- sign-in state


def idle_timeout_s(env: Optional[dict[str, str]] = None) -> float:
    """Seconds of inactivity after which a session must sign in again (`$RLHF_SESSION_IDLE_MINUTES`)."""
    env = os.environ if env is None else env
    raw = env.get(SESSION_IDLE_ENV)
    try:
        minutes = float(raw) if raw else DEFAULT_SESSION_IDLE_MINUTES
    except ValueError:
        minutes = DEFAULT_SESSION_IDLE_MINUTES
    return max(minutes, 0.0) * 60.0


def session_expired(last_active: Optional[float], now: float, timeout_s: float) -> bool:
    """True when a session last active at `last_active` (epoch seconds) has been idle too long."""
    return last_active is None or now - last_active > timeout_s


def idle_timeout() -> timedelta:
    return timedelta(seconds=idle_timeout_s())


def start_session(user: "User", *, via: str = "password") -> None:
    """Record a successful sign-in in this browser session.

    A password sign-in also opens a database session (rlhf.sessions) and queues its handoff nonce,
    which `sync_session_cookie` sends to the server for an HttpOnly cookie, so a reload or a new tab
    stays signed in. OIDC sign-ins need none: Streamlit's own cookie survives reloads.
    """
    st.session_state[USER_ID] = user.id
    st.session_state[LAST_ACTIVE] = time.time()
    st.session_state[VIA] = via
    st.session_state.pop(NOTICE, None)
    st.session_state.pop(CLEAR_COOKIE, None)
    if via == "password":
        from rlhf.sessions import HANDOFF_TTL, create_session

        new = create_session(get_engine(), user.id, idle=idle_timeout(), via=via)
        st.session_state[SESSION_ID] = new.session_id
        st.session_state[HANDOFF] = (new.handoff, time.time() + HANDOFF_TTL.total_seconds())


def restore_session() -> None:
    """Sign in from the session cookie the page was loaded with (a reload, a new tab, another app process).

    Runs once per browser session: `st.context.cookies` holds the cookies of the page load and does
    not change afterwards. A cookie whose session ended (signed out, password changed, idle) is
    cleared, with a notice for the sign-in page.
    """
    if st.session_state.get(USER_ID) is not None or st.session_state.get(COOKIE_CHECKED):
        return
    st.session_state[COOKIE_CHECKED] = True
    from rlhf.sessions import COOKIE_NAME, resolve_token

    token = st.context.cookies.get(COOKIE_NAME)
    if not token:
        return
    found = resolve_token(get_engine(), token, idle=idle_timeout())
    if found is None:
        st.session_state[CLEAR_COOKIE] = True
        st.session_state[NOTICE] = "Your session ended. Sign in again to continue."
        return
    st.session_state[USER_ID] = found.user.id
    st.session_state[LAST_ACTIVE] = time.time()
    st.session_state[VIA] = found.via
    st.session_state[SESSION_ID] = found.session_id


SESSION_COOKIE_SCRIPT = """<script>
fetch(ROUTE, {method: "POST", credentials: "same-origin", cache: "no-store", headers: {"Content-Type": "application/json"}, body: BODY});
</script>"""
"""Runs in a same-origin component iframe: the nonce travels in a POST body, never in a URL."""


def sync_session_cookie() -> None:
    """Ask the server to set the session cookie (after a sign-in) or clear it (after a session ended).

    Draws an invisible same-origin iframe whose script POSTs to labeling_app/server.py's routes. The handoff
    is drawn on every run until its nonce expires; an unchanged element is not reloaded, and a
    second POST of a spent nonce is refused anyway. Served by plain `streamlit run app.py` (no
    routes) the POST fails and sign-ins last until the page is reloaded, as before.
    """
    import json

    handoff = st.session_state.get(HANDOFF)
    if handoff is not None and time.time() > handoff[1]:
        st.session_state.pop(HANDOFF, None)
        handoff = None
    if handoff is not None:
        body = json.dumps(json.dumps({"handoff": handoff[0]}))
        st.iframe(SESSION_COOKIE_SCRIPT.replace("ROUTE", json.dumps("/_rlhf/session")).replace("BODY", body), height=1, tab_index=-1)
    elif st.session_state.pop(CLEAR_COOKIE, False):
        st.iframe(SESSION_COOKIE_SCRIPT.replace("ROUTE", json.dumps("/_rlhf/sign-out")).replace("BODY", '"{}"'), height=1, tab_index=-1)


def sign_out(notice: Optional[str] = None, *, keep_pending: bool = True) -> None:
    """Forget the signed-in user and every page's state (a pending submission is kept unless told).

    The database session ends too, so every tab and app process holding it is signed out at its
    next click, and the page asks the server to clear the cookie.
    """
    pending = st.session_state.get(PENDING) if keep_pending else None
    session_id = st.session_state.get(SESSION_ID)
    if session_id is not None:
        from rlhf.sessions import revoke_session

        revoke_session(get_engine(), session_id)
    for key in list(st.session_state.keys()):
        del st.session_state[key]
    if pending is not None:
        st.session_state[PENDING] = pending
    if notice:
        st.session_state[NOTICE] = notice
    st.session_state[COOKIE_CHECKED] = True  # the page-load cookie belonged to the session just ended
    st.session_state[CLEAR_COOKIE] = True


def signed_in_user(*, touch: bool = True) -> Optional["User"]:
    """The signed-in account as stored now, or None.

    Re-read from the database on every call, so a deactivated or demoted account loses access
    at its next click, and so does a browser session ended elsewhere (sign-out in another tab,
    a password change: `rlhf.sessions`). An idle session expires (see `idle_timeout_s`); then this signs out,
    keeps any pending submission, leaves a notice for the sign-in page and returns None.
    `touch` marks the session active (False for a read that must not extend it).
    """
    user_id = st.session_state.get(USER_ID)
    if user_id is None:
        return None
    now = time.time()
    if session_expired(st.session_state.get(LAST_ACTIVE), now, idle_timeout_s()):
        sign_out("Your session expired. Sign in again to continue.")
        return None
    from rlhf.auth import load_user

    engine = get_engine()
    session_id = st.session_state.get(SESSION_ID)
    if session_id is not None:
        from rlhf.sessions import check_session

        found = check_session(engine, session_id, idle=idle_timeout(), touch=touch)
        user = found.user if found is not None else load_user(engine, user_id)
        if found is None and user is not None and user.active and user.role in SIGN_IN_ROLES:
            sign_out("Your session ended (signed out elsewhere, or the password changed). Sign in again to continue.")
            return None
    else:
        user = load_user(engine, user_id)
    if user is None or not user.active or user.role not in SIGN_IN_ROLES:
        sign_out("This account can no longer sign in. Ask an admin.")
        return None
    if touch:
        st.session_state[LAST_ACTIVE] = now
    return user


def is_admin(user: Optional["User"]) -> bool:
    return user is not None and user.active and user.role == ROLE_ADMIN


def has_role(user: Optional["User"], role: str) -> bool:
    """Admins hold every role; annotators only `annotator`."""
    if user is None or not user.active:
        return False
    return user.role == ROLE_ADMIN or user.role == role


def require_role(role: str) -> "User":
    """The signed-in user when they hold `role`; otherwise a message on the page and a stop.

    Pages call this first: navigation hides pages a role cannot use, and this stops a page
    reached some other way. The backend checks the role again on every write.
    """
    user = signed_in_user()
    if user is None:
        st.warning("Sign in to continue.")
        st.stop()
    if not has_role(user, role):
        st.error(f"This page needs the {role} role.")
        st.stop()
    return user


def needs_password_change(user: "User") -> bool:
    """Password accounts flagged must-change go to the change-password page first (not OIDC ones)."""
    return bool(user.must_change_password) and st.session_state.get(VIA, "password") == "password"


# ------------------------------------------------------------------------------------ OIDC


def oidc_configured() -> bool:
    """True when `.streamlit/secrets.toml` has an `[auth]` section (then `st.login` is offered)."""
    try:
        return "auth" in st.secrets
    except Exception:  # noqa: BLE001 - no secrets file at all is the common case
        return False


def oidc_identity_names() -> list[str]:
    """Names the OIDC provider vouches for, in the order they are tried: email, then preferred_username."""
    names = []
    for claim in ("email", "preferred_username"):
        value = st.user.get(claim) if st.user.is_logged_in else None
        if isinstance(value, str) and value.strip():
            names.append(value.strip())
    return names


def match_identity(names: Iterable[str], accounts: Iterable[Any]) -> Optional[Any]:
    """The account whose username equals one of `names` (case-insensitively), trying names in order.

    Only active accounts that may sign in (admin, annotator) match. `accounts` carry
    `username`, `role` and `active` (e.g. `rlhf.auth.UserInfo`).
    """
    usable = {a.username.casefold(): a for a in accounts if a.active and a.role in SIGN_IN_ROLES}
    for name in names:
        found = usable.get(name.casefold())
        if found is not None:
            return found
    return None


def sign_in_with_oidc() -> Optional[str]:
    """Map the OIDC identity to an account and start a session; None on success, else why not.

    The provider vouches for the identity, so the app looks the account up as the trusted local
    operator (`rlhf.roles.SYSTEM`); accounts are never created here: an admin creates a user
    named after the person's email (or preferred username) first.
    """
    from rlhf.auth import list_users, load_user
    from rlhf.roles import SYSTEM

    names = oidc_identity_names()
    if not names:
        return "The identity provider did not share an email or username."
    engine = get_engine()
    account = match_identity(names, list_users(engine, SYSTEM))
    if account is None:
        return f"No active account is named {names[0]!r}. Ask an admin to create one with that username."
    user = load_user(engine, account.id)
    if user is None:
        return "That account was just removed."
    start_session(user, via="oidc")
    return None


# ---------------------------------------------------------------------------------- projects


def visible_projects(user: "User") -> list["Project"]:
    """Projects the user may pick: all for admins, active ones for annotators, oldest first."""
    from rlhf.projects import list_projects

    projects = list_projects(get_engine())
    return projects if is_admin(user) else [p for p in projects if p.active]


def remember_project(user_id: int) -> None:
    """Selector callback: store the choice for the account, so the next session opens on it."""
    from rlhf.sessions import remember_project as store

    project_id = st.session_state.get(PROJECT_ID)
    try:
        store(get_engine(), user_id, project_id)
    except LookupError:  # deleted meanwhile: nothing worth remembering
        pass


def project_selector(user: "User", projects: Optional[list["Project"]] = None) -> Optional[int]:
    """The sidebar's project picker; stores and returns the chosen project id (None: no project).

    A new session (sign-in, reload, new tab) opens on the project the account chose last, when it
    may still see it; otherwise on the first one.
    """
    projects = visible_projects(user) if projects is None else projects
    if not projects:
        st.session_state.pop(PROJECT_ID, None)
        st.sidebar.info("No project yet." + (" Create one on the Projects page." if is_admin(user) else ""))
        return None
    ids = [p.id for p in projects]
    names = {p.id: p.name + ("" if p.active else " (closed)") for p in projects}
    if st.session_state.get(PROJECT_ID) not in ids:
        from rlhf.sessions import last_project

        remembered = last_project(get_engine(), user.id)
        st.session_state[PROJECT_ID] = remembered if remembered in ids else ids[0]
    st.sidebar.selectbox("Project", ids, format_func=lambda pid: names[pid], key=PROJECT_ID, on_change=remember_project, args=(user.id,))
    return st.session_state[PROJECT_ID]


def current_project_id() -> Optional[int]:
    """The project chosen in the sidebar this session, or None."""
    return st.session_state.get(PROJECT_ID)


def require_project() -> int:
    """`current_project_id()`, or a notice on the page and a stop."""
    project_id = current_project_id()
    if project_id is None:
        st.info("No project is selected. Pick one in the sidebar (admins create projects on the Projects page).")
        st.stop()
    return project_id


# ------------------------------------------------------------------------------ messages


def flash(text: str, kind: str = "success") -> None:
    """Queue a message (success, info, warning, error) for the next render: callbacks use this."""
    st.session_state.setdefault(FLASH, []).append((kind, text))


def show_flash() -> None:
    """Render and clear queued messages (the router calls this once per run)."""
    for kind, text in st.session_state.pop(FLASH, []):
        getattr(st, kind if kind in ("success", "info", "warning", "error") else "info")(safe_markdown(text))


def show_error(exc: BaseException) -> None:
    """A backend error (validation, permission, not found) as a message naming what went wrong."""
    st.error(safe_markdown(str(exc) or exc.__class__.__name__))


# ---------------------------------------------------------------------------- safe rendering


def safe_markdown(text: str) -> str:
    """A short outside string (a name, a message, an excerpt) to embed in Streamlit markdown, shown as written.

    Every character that could open markdown syntax there is escaped (`labeling_app.render.safe_inline`):
    no link, image, code span, tag or LaTeX can form. Long texts go through `render_markdown`.
    """
    return render.safe_inline(text)


def render_markdown(text: str, *, plain: bool = False, container: Any = None) -> None:
    """Show outside text (e.g. guidelines): parsed and sanitised HTML (see `labeling_app.render`), or
    with `plain` exactly as stored (monospace, wrapped)."""
    target = st if container is None else container
    if plain:
        target.code(text or "", language=None, wrap_lines=True)
    else:
        target.html(render.markdown_box(text or ""))


PLAIN_CAP_PX = 260
PLAIN_CAP_LINES = 10
"""A plain-text box of a text estimated longer than this many lines gets this fixed height and
scrolls (`st.code` takes a height, not a maximum), so the form below stays in view."""


def _plain_code(text: str) -> None:
    """`text` exactly as stored; a long one in a fixed-height box with its own scroll."""
    long = render.estimated_lines(text) > PLAIN_CAP_LINES
    st.code(text or "", language=None, wrap_lines=True, height=PLAIN_CAP_PX if long else "content")


CHAT_ROLE_NAMES = {"system": "System", "user": "User", "assistant": "Assistant"}


def chat_name(role: str) -> str:
    """A short display name for a chat role (imports may carry any string), shown in text above the turn."""
    role = (role or "").strip() or "user"
    return CHAT_ROLE_NAMES.get(role.lower(), role[:30])


def render_prompt(text: str, messages: Optional[Iterable["Message"]] = None, *, plain: bool = False) -> None:
    """A prompt: its turns (or its text, as the user's turn), each under its role's name, in one capped box.

    One `st.html` element for the whole prompt: every element is redrawn on each key press.
    """
    turns = [render.Turn(chat_name(turn.role), turn.content) for turn in messages or ()] or [render.Turn(chat_name("user"), text)]
    if plain:
        for turn in turns:
            st.caption(safe_markdown(turn.role))
            _plain_code(turn.text)
    else:
        st.html(render.prompt_box(turns))


def render_task_prompt(view: "TaskView", *, plain: bool = False) -> None:
    render_prompt(view.prompt_text, view.prompt_messages, plain=plain)


def render_response(response: "ResponseView", *, heading: str, plain: bool = False) -> None:
    """One response under `heading` (with the model's name when the engine reveals it), in a box of
    capped height with its own scroll; a long one offers "Show all"."""
    if plain:
        with st.container(border=True):
            st.markdown(f"**{safe_markdown(heading)}**" + (f" · {safe_markdown(response.model_name)}" if response.model_name else ""))
            _plain_code(response.text)
    else:
        # One element, not two: every element is redrawn on each key press.
        st.html(render.response_box(heading, response.model_name, response.text or ""))


def plain_text_toggle(key: str) -> bool:
    """A toggle to show texts exactly as stored instead of rendered markdown."""
    return st.toggle("Show plain text", key=key, help="Show prompt and responses exactly as stored, without markdown formatting.")


# ------------------------------------------------------------------------------- pages


@dataclass(frozen=True)
class PageSpec:
    """One page of the app: its file under `pages/`, title, icon, URL and who may see it."""

    file: str
    title: str
    icon: str
    url_path: str
    role: str
    section: str
    optional: bool = False
    """Listed only when the file exists (pages colleagues add later)."""


PAGE_SPECS: tuple[PageSpec, ...] = (
    PageSpec("rate.py", "Rate", ":material/star_rate:", "rate", ROLE_ANNOTATOR, "Annotate"),
    PageSpec("compare.py", "Compare", ":material/compare_arrows:", "compare", ROLE_ANNOTATOR, "Annotate"),
    PageSpec("write.py", "Write", ":material/edit_note:", "write", ROLE_ANNOTATOR, "Annotate"),
    PageSpec("rank.py", "Rank", ":material/format_list_numbered:", "rank", ROLE_ANNOTATOR, "Annotate"),
    PageSpec("progress.py", "My progress", ":material/history:", "progress", ROLE_ANNOTATOR, "Annotate"),
    PageSpec("projects.py", "Projects", ":material/folder:", "projects", ROLE_ADMIN, "Admin"),
    PageSpec("users.py", "Users", ":material/group:", "users", ROLE_ADMIN, "Admin"),
    PageSpec("import_data.py", "Import", ":material/upload_file:", "import", ROLE_ADMIN, "Admin"),
    PageSpec("flagged.py", "Flagged", ":material/flag:", "flagged", ROLE_ADMIN, "Admin"),
    PageSpec("dashboard.py", "Dashboard", ":material/monitoring:", "dashboard", ROLE_ADMIN, "Admin", optional=True),
    PageSpec("export.py", "Export", ":material/download:", "export", ROLE_ADMIN, "Admin"),
    PageSpec("training.py", "Training", ":material/model_training:", "training", ROLE_ADMIN, "Admin", optional=True),
    PageSpec("account.py", "Account", ":material/key:", "account", ROLE_ANNOTATOR, "Account"),
)


def page_specs_for(role: str, exists: Callable[[str], bool] = lambda f: (PAGES_DIR / f).is_file()) -> list[PageSpec]:
    """The pages a role sees, in menu order; optional pages only when their file exists."""
    holder = type("Role", (), {"role": role, "active": True})()
    return [spec for spec in PAGE_SPECS if has_role(holder, spec.role) and (not spec.optional or exists(spec.file))]


def page_path(file: str) -> Path:
    return PAGES_DIR / file


# ------------------------------------------------------------------------------- heap


_HEAP_SETTLED = False


def settle_heap() -> bool:
    """Move the objects alive after the app's imports and first page run into the permanent
    generation, once per server process; True when this call did it.

    Streamlit ends every script run (every key press, every submit) with `gc.collect(2)`. With
    the app's libraries loaded that full collection walks ~200,000 long-lived objects (modules,
    classes, SQLAlchemy and pandas internals) for 0.25–0.35 s while holding the GIL, and the next
    task is not painted until it is done. `gc.freeze()` takes them out of every later collection;
    objects made afterwards (sessions, tasks) are still collected as before. The objects frozen
    are those of a warm process, which live as long as it does: nothing of note is kept alive.
    """
    global _HEAP_SETTLED
    if _HEAP_SETTLED:
        return False
    import gc

    gc.collect()  # garbage of the imports is freed first, not frozen
    gc.freeze()
    _HEAP_SETTLED = True
    return True
