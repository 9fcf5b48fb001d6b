"""Sign in: username and password (throttled by the backend), or the configured OIDC provider."""

from __future__ import annotations

import streamlit as st

from labeling_app import common as c
from labeling_app import flow


def sign_in() -> None:
    """Form callback: check the password with `rlhf.auth.authenticate`; the password never stays in session state."""
    from rlhf.auth import AccountDisabled, AuthenticationError, TooManyAttempts, authenticate

    username = (st.session_state.get("login.username") or "").strip()
    password = st.session_state.pop("login.password", "") or ""
    if not username or not password:
        st.session_state["login.error"] = "Enter your username and password."
        return
    engine = c.get_engine()
    try:
        user = authenticate(engine, username, password)
    except TooManyAttempts as exc:
        st.session_state["login.error"] = f"Too many failed sign-ins for this name. Try again in {int(exc.retry_after_s + 0.999)} s."
        return
    except AccountDisabled as exc:
        st.session_state["login.error"] = str(exc)
        return
    except AuthenticationError:
        st.session_state["login.error"] = "Unknown username or wrong password."
        return
    if user.role not in c.SIGN_IN_ROLES:
        st.session_state["login.error"] = "Unknown username or wrong password."
        return
    c.start_session(user)
    st.session_state.pop("login.error", None)
    if not user.must_change_password:
        flow.resume_pending(engine, user)


def main() -> None:
    _, middle, _ = st.columns([1, 2, 1])
    with middle:
        st.title("RLHF Studio")
        st.caption("Judge language-model outputs. Sign in to start.")
        notice = st.session_state.get(c.NOTICE)
        if notice:
            st.warning(c.safe_markdown(notice))
        error = st.session_state.pop("login.error", None)
        if error:
            st.error(error)
        with st.form("login.form", border=True):
            st.text_input("Username", key="login.username", autocomplete="username")
            st.text_input("Password", key="login.password", type="password", autocomplete="current-password")
            st.form_submit_button("Sign in", type="primary", on_click=sign_in, width="stretch")
        if c.oidc_configured():
            st.button("Sign in with single sign-on", on_click=st.login, icon=":material/login:", width="stretch")
        st.caption("First start: `rlhf init` printed an admin account and one-time password in the console.")


main()
