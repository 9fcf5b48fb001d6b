"""Entry script: a router. It decides who is signed in and which pages they get, then runs the chosen page.

- a new browser session (reload, new tab) first signs in from its session cookie (`common.restore_session`);
- signed out → the sign-in page only (OIDC sign-in is mapped to an account first when configured),
  under every page's URL too, so a deep link shows the sign-in form and, once signed in, the page
  it named when the role may open it (the first page otherwise);
- signed in with a one-time password → the change-password page only;
- annotators → Rate, Compare, My progress, Account; admins also get the Admin section.
Pages a role cannot use are not in its navigation, so their URLs lead nowhere; each page also
guards itself (`common.require_role`), and the backend checks the role on every write.
"""

from __future__ import annotations

import streamlit as st

from labeling_app import common as c


def sign_out() -> None:
    """Sidebar button: end this sign-in everywhere it is held (and the provider's, for OIDC sign-ins)."""
    via = st.session_state.get(c.VIA)
    c.sign_out(keep_pending=False)
    if via == "oidc" and c.oidc_configured():
        st.logout()


def build_pages(role: str) -> dict[str, list]:
    """`st.Page`s for the role, grouped by menu section; the first page is the default."""
    sections: dict[str, list] = {}
    for index, spec in enumerate(c.page_specs_for(role)):
        page = st.Page(c.page_path(spec.file), title=spec.title, icon=spec.icon, url_path=spec.url_path, default=index == 0)
        sections.setdefault(spec.section, []).append(page)
    return sections


def sign_in_pages() -> list:
    """The sign-in page, at `/login` and under every page's URL (hidden), so a deep link opened while
    signed out shows the form instead of "Page not found", and the rerun after sign-in, which asks
    for that URL again, lands on the page when the role has it."""
    login = c.page_path("login.py")
    pages = [st.Page(login, title="Sign in", icon=":material/login:", url_path="login", default=True)]
    pages += [st.Page(login, title="Sign in", icon=":material/login:", url_path=spec.url_path, visibility="hidden") for spec in c.PAGE_SPECS]
    return pages


def sidebar(user) -> None:
    c.project_selector(user)
    with st.sidebar:
        st.caption(f"Signed in as **{user.username}** · {user.role}")
        st.button("Sign out", on_click=sign_out, icon=":material/logout:", key="app.sign_out")
        c.sync_session_cookie()


def main() -> None:
    # A file shipped in the package: a ":material/..." favicon is an SVG the browser fetches from a fonts host.
    st.set_page_config(page_title="RLHF Studio", page_icon=c.APP_DIR / "static" / "icon.png", layout="wide")
    c.require_database()
    c.restore_session()
    if st.session_state.get(c.USER_ID) is None and c.oidc_configured() and st.user.is_logged_in:
        problem = c.sign_in_with_oidc()
        if problem:
            st.session_state[c.NOTICE] = problem
    user = c.signed_in_user()
    if user is None:
        page = st.navigation(sign_in_pages(), position="hidden")
        c.sync_session_cookie()
    elif c.needs_password_change(user):
        page = st.navigation([st.Page(c.page_path("account.py"), title="Change password", icon=":material/key:", url_path="account", default=True)], position="hidden")
        c.sync_session_cookie()
    else:
        sidebar(user)
        # expanded: an admin has more pages than the sidebar shows before a "View more" toggle.
        page = st.navigation(build_pages(user.role), expanded=True)
    c.show_flash()
    page.run()


# Streamlit runs this script as the module `__main__` and leaves it installed in `sys.modules` (AppTest
# does the same in its host process). A process started with multiprocessing's "spawn" from that host
# re-runs `__main__`'s file as `__mp_main__` before doing its work: the guard keeps that run from
# starting the app in the child (which then waited forever for a database and a browser session).
if __name__ == "__main__":
    main()
