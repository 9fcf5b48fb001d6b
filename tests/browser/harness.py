"""Drive the real app in headless Chromium: start it on a free port as `rlhf app` does, open pages, wait for text.

Shared by the browser tests and `bench/bench_app.py`. Chromium is Debian's (`/usr/bin/chromium`);
never `playwright install` (it downloads browsers).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

REPO_ROOT = Path(__file__).resolve().parents[2]
APP = REPO_ROOT / "labeling_app" / "app.py"
SERVER = REPO_ROOT / "labeling_app" / "server.py"
"""What `rlhf app` serves: the router plus the session-cookie routes (a reload stays signed in)."""
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-sync"]
SCREENSHOTS = REPO_ROOT / "tests" / "artifacts" / "screenshots"
VIEWPORT = {"width": 1440, "height": 1000}


def chromium_available() -> bool:
    return Path(CHROMIUM).is_file()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class AppServer:
    """A running `streamlit run labeling_app/server.py` (or another script)."""

    url: str
    process: subprocess.Popen
    log_path: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def start_app(
    database_url: str, log_path: Path, *, timeout_s: float = 90.0, extra_env: Optional[dict[str, str]] = None, app: Path = SERVER, cli: bool = False
) -> AppServer:
    """Start `app` (default the annotation app as `rlhf app` serves it) on a free port against
    `database_url`; returns once `/_stcore/health` answers. `cli` starts it through the `rlhf app`
    command itself (without its local worker)."""
    port = free_port()
    env = dict(os.environ, RLHF_DATABASE_URL=database_url, **(extra_env or {}))
    if cli:
        command = [str(Path(sys.executable).with_name("rlhf")), "app", "--no-worker", "--port", str(port), "--address", "127.0.0.1"]
    else:
        command = [
            sys.executable, "-m", "streamlit", "run", str(app),
            "--server.headless", "true",
            "--server.port", str(port),
            "--server.address", "127.0.0.1",
            "--server.fileWatcherType", "none",
            "--browser.gatherUsageStats", "false",
        ]  # fmt: skip
    log = open(log_path, "wb")
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = AppServer(f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with {process.returncode}:\n{server.log()}")
        try:
            with urllib.request.urlopen(server.url + "/_stcore/health", timeout=2) as reply:
                if reply.status == 200:
                    return server
        except OSError:
            time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"streamlit did not answer within {timeout_s} s:\n{server.log()}")


def launch_chromium(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def wait_text(page, text: str, timeout_ms: float = 20_000) -> None:
    """Wait until `text` is visible somewhere on the page."""
    page.get_by_text(text, exact=False).first.wait_for(state="visible", timeout=timeout_ms)


def wait_idle(page, timeout_ms: float = 30_000) -> None:
    """Wait until no script run is in progress (Streamlit marks its root with the run state)."""
    page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(state="attached", timeout=timeout_ms)


NO_SKELETONS_JS = "() => !document.querySelector('[data-testid=\"stSkeleton\"]')"


def wait_loaded(page, timeout_ms: float = 30_000) -> None:
    """Wait until the run is over and every element is drawn. Streamlit loads widget code lazily and
    shows placeholders meanwhile; a key pressed before the buttons exist has no shortcut listening."""
    wait_idle(page, timeout_ms)
    page.wait_for_function(NO_SKELETONS_JS, timeout=timeout_ms)


def field(page, label: str):
    """The text box labelled `label` (not the "Show password" button next to a password box)."""
    return page.get_by_role("textbox", name=label, exact=True)


def sign_in(page, base_url: str, username: str, password: str) -> None:
    """Open the app and sign in through the form (Enter submits it)."""
    page.goto(base_url)
    field(page, "Username").fill(username)
    field(page, "Password").fill(password)
    field(page, "Password").press("Enter")


def open_page(page, title: str) -> None:
    """Click a page in the sidebar navigation (a full page load starts a new session, and the project
    selector's state with it)."""
    page.locator('[data-testid="stSidebarNav"]').get_by_text(title, exact=True).click()


def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path
