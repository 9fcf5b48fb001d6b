"""Account: change your password (required before anything else when an admin set a one-time password).

A change ends every session of the account (other browsers must sign in again) and opens a fresh
one here; the form is cleared and the user goes to their first page.
"""

from __future__ import annotations

import streamlit as st

from labeling_app import common as c
from labeling_app import flow

# Set by a successful change; the next run leaves the page.
CHANGED = "account.changed"


def change() -> None:
    """Form callback: `rlhf.auth.change_password`; passwords are dropped from session state at once."""
    from rlhf.auth import AuthenticationError, PasswordPolicyError, TooManyAttempts, change_password

    old = st.session_state.pop("account.old", "") or ""
    new = st.session_state.pop("account.new", "") or ""
    again = st.session_state.pop("account.again", "") or ""
    user = c.signed_in_user()
    if user is None:
        return
    if new != again:
        st.session_state["account.error"] = "The two new passwords differ."
        return
    engine = c.get_engine()
    try:
        change_password(engine, user, old, new)
    except TooManyAttempts as exc:
        st.session_state["account.error"] = f"Too many failed attempts. Try again in {int(exc.retry_after_s + 0.999)} s."
        return
    except AuthenticationError:
        st.session_state["account.error"] = "The current password is wrong."
        return
    except PasswordPolicyError as exc:
        st.session_state["account.error"] = str(exc).capitalize() + "."
        return
    # change_password ended every session of the account, this browser's too: open a new one.
    c.start_session(user, via=st.session_state.get(c.VIA, "password"))
    st.session_state[CHANGED] = True
    flow.resume_pending(engine, user)


def leave_after_change(user) -> None:
    """After a change, go to the role's first page (the form is already cleared) with the message."""
    if st.session_state.pop(CHANGED, False):
        c.flash("Password changed.")
        st.switch_page(f"pages/{c.page_specs_for(user.role)[0].file}")


def main() -> None:
    user = c.require_role("annotator")
    leave_after_change(user)
    must = c.needs_password_change(user)
    _, middle, _ = st.columns([1, 2, 1])
    with middle:
        st.subheader("Change your password" if must else "Account")
        st.caption(f"Signed in as **{user.username}** ({user.role}).")
        if must:
            st.info("You signed in with a one-time password. Choose your own to continue.")
        error = st.session_state.pop("account.error", None)
        if error:
            st.error(error)
        from rlhf.auth import MIN_PASSWORD_LENGTH

        with st.form("account.form", border=True, clear_on_submit=True):
            st.text_input("Current password", key="account.old", type="password", autocomplete="current-password")
            st.text_input(f"New password (at least {MIN_PASSWORD_LENGTH} characters)", key="account.new", type="password", autocomplete="new-password")
            st.text_input("New password again", key="account.again", type="password", autocomplete="new-password")
            st.form_submit_button("Change password", type="primary", on_click=change)
        if must:
            st.button("Sign out", on_click=c.sign_out, kwargs={"keep_pending": False})


main()
