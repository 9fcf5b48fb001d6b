"""`bench/run_all.py`: each module in its own subprocess, a failing or hanging module shown as FAILED, one table, two reports."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import run_all  # noqa: E402

# Like the real modules: postponed annotations and a dataclass (which looks its module up in sys.modules).
GOOD = '''
from __future__ import annotations

import os, sys
from dataclasses import dataclass
sys.path.insert(0, {bench!r})
from _common import BenchRow, main

@dataclass(frozen=True)
class Settings:
    size: int = 1

def run(quick=False):
    Settings()
    block = bytearray(80 * 1024 * 1024)  # touched below: shows in the child's peak memory
    block[::4096] = b"x" * len(block[::4096])
    return [BenchRow(work="thing per second", ours=2.0, unit="s", anchor=4.0, anchor_name="naive", ratio=2.0, target="≥ 1.5x",
                     note=f"quick={{quick}} pid={{os.getpid()}}")]

if __name__ == "__main__":
    main(run)
'''
BAD = '''
def run(quick=False):
    raise RuntimeError("database went away")
'''
SLOW = '''
import time

def run(quick=False):
    time.sleep(60)
    return []
'''
EMPTY = '''
def run(quick=False):
    return []
'''


@pytest.fixture
def fake_bench(tmp_path) -> Path:
    directory = tmp_path / "bench"
    directory.mkdir()
    for name, source in {"good": GOOD.format(bench=str(BENCH)), "bad": BAD, "slow": SLOW, "empty": EMPTY}.items():
        (directory / f"bench_{name}.py").write_text(source)
    (directory / "helper.py").write_text("raise SystemExit('not a bench module')\n")
    return directory


def test_discovery_and_selection(fake_bench):
    modules = run_all.discover(fake_bench)
    assert list(modules) == ["bad", "empty", "good", "slow"]
    assert list(run_all.select(modules, "good,bench_bad")) == ["bad", "good"]
    assert run_all.select(modules, None) == modules
    with pytest.raises(ValueError, match="unknown benchmark.*nope.*known: bad, empty, good, slow"):
        run_all.select(modules, "good,nope")
    assert set(run_all.discover()) >= {"import", "submit", "stats", "export", "reward", "ppo", "jobs", "app"}


def test_failures_stay_inside_their_module(fake_bench, tmp_path, capsys):
    results, json_path, md_path = run_all.run_all(quick=True, timeout_s=5, out_dir=tmp_path / "reports", bench_dir=fake_bench)
    by_name = {r.name: r for r in results}
    assert [r.name for r in results] == ["bad", "empty", "good", "slow"]
    assert (by_name["bad"].status, by_name["bad"].error) == ("failed", "exit 1: RuntimeError: database went away")
    assert (by_name["slow"].status, by_name["slow"].error) == ("timeout", "timed out after 5 s")
    assert by_name["empty"].status == "empty"
    good = by_name["good"]
    assert good.status == "ok" and good.returncode == 0
    assert good.rows[0]["note"].startswith("quick=True pid=")
    assert int(good.rows[0]["note"].split("pid=")[1]) != __import__("os").getpid()  # its own process
    assert good.peak_rss_mb > 80  # its own peak, from the kernel

    saved = json.loads(json_path.read_text())
    assert saved["quick"] is True and [m["status"] for m in saved["modules"]] == ["failed", "empty", "ok", "timeout"]
    markdown = md_path.read_text()
    assert "| good | thing per second | 2 s | 4 s (naive) | 2.00x | ≥ 1.5x |" in markdown
    assert "| bad | FAILED (failed) | - | - | - |  | exit 1: RuntimeError: database went away |" in markdown
    assert json_path.name.startswith("bench-") and md_path.stem == json_path.stem


def test_table_lines():
    ok = run_all.ModuleResult("stats", "p", "ok", 1.0, 10.0, 0, rows=[{"work": "alpha", "ours": 0.5, "unit": "s", "anchor": None, "ratio": None, "target": "≤ 2 s", "note": ""}])
    failed = run_all.ModuleResult("ppo", "p", "failed", 1.0, None, 1, error="exit 1: boom")
    lines = run_all.table_rows([ok, failed])
    assert lines == [["stats", "alpha", "0.5 s", "-", "-", "≤ 2 s", ""], ["ppo", "FAILED (failed)", "-", "-", "-", "", "exit 1: boom"]]
    text = run_all.format_text_table(lines)
    assert text.splitlines()[0].split(" | ")[:3] == ["module", "work           ", "ours "]


def test_command_line_exit_status_and_unknown_names(fake_bench, tmp_path, capsys):
    assert run_all.main(["--bench-dir", str(fake_bench), "--only", "good", "--out-dir", str(tmp_path), "--quick"]) == 0
    out = capsys.readouterr().out
    assert "good   | thing per second" in out and "reports:" in out
    assert run_all.main(["--bench-dir", str(fake_bench), "--only", "bad", "--out-dir", str(tmp_path)]) == 1
    assert run_all.main(["--bench-dir", str(fake_bench), "--only", "nope"]) == 2
