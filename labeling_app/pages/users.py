"""Users (admin): add accounts, change roles, deactivate and reactivate, reset passwords (one-time password shown once)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from labeling_app import common as c

REVEAL = "users.reveal"  # (username, one-time password) to show on the next render only
# The roles in the order the forms offer them: the least powerful first (the default).
ROLE_CHOICES = ("annotator", "admin", "external")
ROLE_HELP = {"annotator": "annotator: rates and compares", "admin": "admin: everything", "external": "external: a label source (dataset, model judge); never signs in"}


def _admin():
    user = c.signed_in_user()
    if not c.is_admin(user):
        c.flash("Only admins manage users.", "error")
        return None
    return user


def add_user() -> None:
    """Callback: create the account; without a typed password, a one-time one that must be changed at first sign-in."""
    from rlhf.auth import PasswordPolicyError, UserExists, create_user, one_time_password
    from rlhf.roles import PermissionDenied

    actor = _admin()
    if actor is None:
        return
    username = (st.session_state.get("users.new_name") or "").strip()
    role = st.session_state.get("users.new_role") or "annotator"
    typed = st.session_state.pop("users.new_password", "") or ""
    generated = role != "external" and not typed
    password = one_time_password() if generated else (typed or None)
    try:
        create_user(c.get_engine(), actor, username, password, role, must_change_password=generated)
    except (ValueError, PasswordPolicyError, UserExists, PermissionDenied) as exc:
        c.flash(f"Not created: {exc}", "error")
        return
    c.flash(f"Created {role} {username!r}.")
    st.session_state["users.new_name"] = ""
    if generated:
        st.session_state[REVEAL] = (username, password)


def act(action: str, username: str) -> None:
    """Callback for the per-user actions: role, deactivate, reactivate, reset."""
    from rlhf.auth import LastAdminError, UserNotFound, deactivate_user, reactivate_user, reset_password, set_role
    from rlhf.roles import PermissionDenied

    actor = _admin()
    if actor is None:
        return
    engine = c.get_engine()
    try:
        if action == "role":
            role = st.session_state.get(f"users.role.{username}")
            set_role(engine, actor, username, role)
            c.flash(f"{username!r} is now {role}.")
        elif action == "deactivate":
            deactivate_user(engine, actor, username)
            c.flash(f"{username!r} can no longer sign in or annotate (their annotations stay).")
        elif action == "reactivate":
            reactivate_user(engine, actor, username)
            c.flash(f"{username!r} can sign in again.")
        elif action == "reset":
            st.session_state[REVEAL] = (username, reset_password(engine, actor, username))
    except (LastAdminError, UserNotFound, PermissionDenied, ValueError) as exc:
        c.flash(str(exc), "error")


def reveal_once() -> None:
    shown = st.session_state.pop(REVEAL, None)
    if shown is None:
        return
    username, password = shown
    with st.container(border=True):
        st.warning(f"One-time password for **{username}** — shown only now. Pass it on safely; they choose their own at first sign-in.", icon=":material/key:")
        st.code(password, language=None)


def main() -> None:
    user = c.require_role("admin")
    engine = c.get_engine()
    from rlhf.auth import list_users

    st.subheader("Users")
    reveal_once()
    users = list_users(engine, user)
    frame = pd.DataFrame(
        [
            {
                "username": u.username,
                "role": u.role,
                "active": u.active,
                "must change password": u.must_change_password,
                "last sign-in": u.last_login_at,
                "locked until": u.locked_until,
            }
            for u in users
        ]
    )
    st.dataframe(frame, hide_index=True, width="stretch")

    add, manage = st.columns(2, gap="large")
    with add, st.container(border=True):
        st.markdown("**Add a user**")
        with st.form("users.add", clear_on_submit=False, border=False):
            st.text_input("Username", key="users.new_name", max_chars=150)
            st.selectbox("Role", ROLE_CHOICES, key="users.new_role", format_func=ROLE_HELP.get)
            st.text_input("Password (leave empty for a one-time password)", key="users.new_password", type="password", autocomplete="new-password")
            st.form_submit_button("Add user", type="primary", on_click=add_user, icon=":material/person_add:")
    with manage, st.container(border=True):
        st.markdown("**Manage a user**")
        if not users:
            return
        names = [u.username for u in users]
        chosen = st.selectbox("User", names, key="users.selected")
        target = next(u for u in users if u.username == chosen)
        st.caption(f"{target.role} · {'active' if target.active else 'deactivated'}" + (" · must change password" if target.must_change_password else ""))
        with st.container(horizontal=True, vertical_alignment="bottom"):
            st.selectbox("Role", ROLE_CHOICES, index=ROLE_CHOICES.index(target.role), key=f"users.role.{chosen}", format_func=ROLE_HELP.get)
            st.button("Change role", key="users.set_role", on_click=act, args=("role", chosen))
        with st.container(horizontal=True):
            if target.active:
                st.button("Deactivate", key="users.deactivate", on_click=act, args=("deactivate", chosen), icon=":material/block:")
            else:
                st.button("Reactivate", key="users.reactivate", on_click=act, args=("reactivate", chosen), icon=":material/check_circle:")
            if target.role != "external":
                st.button("Reset password", key="users.reset", on_click=act, args=("reset", chosen), icon=":material/lock_reset:")


main()
