"""Progress reporting shared by long runs (import, generation, training) and the job worker.

A long-running function takes `reporter: Reporter | None`. The CLI passes a console reporter
(a tqdm bar); the job worker passes one that writes progress, metrics and the log tail to the
job's row; tests pass a `RecordingReporter`. Cancellation is polled through `should_stop()`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


class Cancelled(Exception):
    """Raised by a long run when its reporter asks it to stop."""


class Reporter(Protocol):
    def progress(self, done: float, total: float | None = None, message: str = "") -> None:
        """`done` units of `total` finished (total None: unknown)."""

    def metrics(self, step: int, values: dict[str, float]) -> None:
        """One point of the metrics time series (loss, accuracy, kl, score, ...)."""

    def log(self, line: str) -> None:
        """A human-readable line for the log tail."""

    def should_stop(self) -> bool:
        """True when the run was cancelled: stop at the next safe point, raising Cancelled."""


class NullReporter:
    """Reports nowhere."""

    def progress(self, done: float, total: float | None = None, message: str = "") -> None:
        pass

    def metrics(self, step: int, values: dict[str, float]) -> None:
        pass

    def log(self, line: str) -> None:
        pass

    def should_stop(self) -> bool:
        return False


class ConsoleReporter:
    """A tqdm progress bar on stderr; log lines and metrics are printed above it."""

    def __init__(self, description: str = "", unit: str = "it") -> None:
        self._description = description
        self._unit = unit
        self._bar = None

    def _ensure_bar(self, total: float | None):
        if self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=self._description, unit=self._unit, dynamic_ncols=True)
        return self._bar

    def progress(self, done: float, total: float | None = None, message: str = "") -> None:
        bar = self._ensure_bar(total)
        if total is not None and bar.total != total:
            bar.total = total
        bar.n = done
        if message:
            bar.set_postfix_str(message, refresh=False)
        bar.refresh()

    def metrics(self, step: int, values: dict[str, float]) -> None:
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
        self.log(f"step {step}: {shown}")

    def log(self, line: str) -> None:
        if self._bar is not None:
            self._bar.write(line)
        else:
            import sys

            print(line, file=sys.stderr)

    def should_stop(self) -> bool:
        return False

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


@dataclass
class RecordingReporter:
    """Keeps everything it is told; tests read it. `stop_after` progress calls, it asks to stop."""

    progress_calls: list[tuple[float, float | None, str]] = field(default_factory=list)
    metric_points: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    stop_after: int | None = None

    def progress(self, done: float, total: float | None = None, message: str = "") -> None:
        self.progress_calls.append((done, total, message))

    def metrics(self, step: int, values: dict[str, float]) -> None:
        self.metric_points.append((step, dict(values)))

    def log(self, line: str) -> None:
        self.lines.append(line)

    def should_stop(self) -> bool:
        return self.stop_after is not None and len(self.progress_calls) >= self.stop_after


def check_stop(reporter: Reporter | None) -> None:
    """Raise Cancelled when the reporter asks to stop; call it at safe points of a loop."""
    if reporter is not None and reporter.should_stop():
        raise Cancelled("cancelled")
