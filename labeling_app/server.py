"""The served app: `st.App` running the router (`app.py`) plus the routes that set and clear the session cookie and save drafts.

`rlhf app` runs `streamlit run labeling_app/server.py`; Streamlit finds `app` below and serves it
with uvicorn, reading `.streamlit/config.toml` and the `--server.*` flags as for any script.
(`streamlit run labeling_app/app.py` still works, without sessions that survive a reload.)

Why routes: a Streamlit script cannot set response headers, and a cookie that page JavaScript
could set could be read by page JavaScript too. So after a password sign-in the page POSTs a
one-time handoff nonce (in the body, never in a URL) to `/_rlhf/session`, which trades it for the
session token (`rlhf.sessions.redeem_handoff`) and answers with an HttpOnly, SameSite=Strict cookie
(Secure over https). A reload or a new tab sends the cookie; the router reads it through
`st.context.cookies`. `/_rlhf/sign-out` ends the session the cookie names and clears the cookie.
Both refuse cross-origin posts (no one can sign a browser into their account from elsewhere).
Sessions live in the database, so every process on one database serves every signed-in browser.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import streamlit as st
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from rlhf.sessions import COOKIE_NAME

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

ROUTER = Path(__file__).resolve().with_name("app.py")
SESSION_ROUTE = "/_rlhf/session"
SIGN_OUT_ROUTE = "/_rlhf/sign-out"
DRAFT_ROUTE = "/_rlhf/draft"
MAX_BODY_BYTES = 1024
MAX_DRAFT_BODY_BYTES = 1 << 20
"""A draft of up to `rlhf.demonstrations.MAX_DRAFT_CHARS` characters, JSON-escaped, fits."""


@lru_cache(maxsize=None)
def _engine_for(url: str) -> "Engine":
    from rlhf.db import make_engine

    return make_engine(url, pool_size=2)


def engine() -> "Engine":
    """The routes' own small pool (the scripts' engine lives in Streamlit's resource cache)."""
    from rlhf.db import database_url

    return _engine_for(database_url())


def same_origin(request: Request) -> bool:
    """True when the browser says the POST comes from a page of this host (Origin, else Referer)."""
    origin = request.headers.get("origin") or request.headers.get("referer") or ""
    host = request.headers.get("host", "")
    return bool(host) and any(origin == f"{scheme}://{host}" or origin.startswith(f"{scheme}://{host}/") for scheme in ("http", "https"))


def served_over_https(request: Request) -> bool:
    # Behind a TLS-terminating load balancer the app itself speaks plain http.
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto", "").split(",")[0].strip() == "https"


async def start_session(request: Request) -> Response:
    """POST {"handoff": nonce} → 204 with the session cookie, or 403 / 400 / 401."""
    from rlhf.sessions import redeem_handoff

    if not same_origin(request):
        return Response(status_code=403)
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        return Response(status_code=413)
    try:
        handoff = json.loads(body).get("handoff")
    except (ValueError, AttributeError):
        return Response(status_code=400)
    token = await run_in_threadpool(redeem_handoff, engine(), handoff)
    if token is None:
        return Response(status_code=401)
    response = Response(status_code=204, headers={"Cache-Control": "no-store"})
    response.set_cookie(COOKIE_NAME, token, path="/", httponly=True, samesite="strict", secure=served_over_https(request))
    return response


async def end_session(request: Request) -> Response:
    """POST → 204: the session the cookie names ends, and the cookie is cleared."""
    from rlhf.sessions import revoke_token

    if not same_origin(request):
        return Response(status_code=403)
    token = request.cookies.get(COOKIE_NAME)
    if token:
        await run_in_threadpool(revoke_token, engine(), token)
    response = Response(status_code=204, headers={"Cache-Control": "no-store"})
    response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="strict", secure=served_over_https(request))
    return response


def _save_draft_for(token: str, task_id, text) -> int:
    """Save a draft for the account the session cookie names; the HTTP status to answer."""
    from rlhf.annotate import AnnotationError
    from rlhf.demonstrations import save_draft
    from rlhf.roles import PermissionDenied
    from rlhf.sessions import resolve_token

    from labeling_app.common import idle_timeout

    found = resolve_token(engine(), token, idle=idle_timeout())
    if found is None:
        return 401
    try:
        save_draft(engine(), found.user, task_id, text)
    except PermissionDenied:
        return 403
    except (AnnotationError, ValueError):
        return 400
    return 204


async def save_draft(request: Request) -> Response:
    """POST {"task_id": int, "text": str} → 204 once the draft is stored for the signed-in account.

    The Write page's editor posts here as the annotator types (debounced), so saving a draft
    costs no Streamlit rerun. 401 when the session ended (the editor keeps the text in the
    browser and saves it after the next sign-in), 403 cross-origin or for an account that may
    not annotate, 400 for a bad body or task.
    """
    if not same_origin(request):
        return Response(status_code=403)
    token = request.cookies.get(COOKIE_NAME)
    if not token:
        return Response(status_code=401)
    body = await request.body()
    if len(body) > MAX_DRAFT_BODY_BYTES:
        return Response(status_code=413)
    try:
        payload = json.loads(body)
        task_id, text = payload["task_id"], payload["text"]
    except (ValueError, KeyError, TypeError):
        return Response(status_code=400)
    status = await run_in_threadpool(_save_draft_for, token, task_id, text)
    return Response(status_code=status, headers={"Cache-Control": "no-store"})


def navigation_only() -> None:
    """Run every page through the router, from the process's very first request.

    Streamlit treats a `pages/` folder beside the main script as a multipage-v1 app until some run
    calls `st.navigation` (a process-wide flag); until then a first request to `/compare` would run
    `pages/compare.py` alone, skipping the router and its sign-in. tests/app/conftest.py does the
    same for AppTest."""
    from streamlit.runtime.pages_manager import PagesManager

    PagesManager.uses_pages_directory = False


navigation_only()
app = st.App(
    ROUTER,
    routes=[
        Route(SESSION_ROUTE, start_session, methods=["POST"]),
        Route(SIGN_OUT_ROUTE, end_session, methods=["POST"]),
        Route(DRAFT_ROUTE, save_draft, methods=["POST"]),
    ],
)
