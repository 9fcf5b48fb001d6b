"""`rlhf generate`: file mode, bad input (exit 2, file/line/field, nothing written), the --policy round mode."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from rlhf.cli import EXIT_BAD_INPUT, app

runner = CliRunner()


def _prompts(tmp_path, text='{"prompt": "hello", "category": "greeting", "id": "p1"}\n{"prompt": "what is two plus three ?"}\n'):
    path = tmp_path / "prompts.jsonl"
    path.write_text(text)
    return path


def test_generate_writes_n_responses_per_prompt(tiny_model_dir, tmp_path):
    out = tmp_path / "out.jsonl"
    result = runner.invoke(
        app,
        ["generate", "--model", str(tiny_model_dir), "--prompts", str(_prompts(tmp_path)), "--out", str(out),
         "--n", "3", "--temperatures", "0.3,0.8,1.2", "--max-new-tokens", "4", "--seed", "5", "--batch-size", "2"],
    )
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records if "id" in r] == ["p1"]
    temperatures = [[resp["meta"]["temperature"] for resp in r["responses"]] for r in records]
    assert all(t == [0.3, 0.8, 1.2][: len(t)] for t in temperatures)
    assert "wrote" in result.stdout


def test_generate_is_deterministic_for_a_seed(tiny_model_dir, tmp_path):
    texts = []
    for name in ("a.jsonl", "b.jsonl"):
        out = tmp_path / name
        args = ["generate", "--model", str(tiny_model_dir), "--prompts", str(_prompts(tmp_path)), "--out", str(out), "--n", "2", "--temperature", "1.0", "--max-new-tokens", "6", "--seed", "11"]
        assert runner.invoke(app, args).exit_code == 0
        texts.append([[r["text"] for r in rec["responses"]] for rec in map(json.loads, out.read_text().splitlines())])
    assert texts[0] == texts[1]


@pytest.mark.parametrize(
    ("content", "name", "expected"),
    [
        ('{"prompt": "ok"}\n{"prompt": 3}\n', "prompts.jsonl", "prompts.jsonl:2: field 'prompt'"),
        ('{"prompt": "ok"}\nnot json\n', "prompts.jsonl", "prompts.jsonl:2: invalid JSON"),
        ('{"prompt": "ok", "category": ["x"]}\n', "prompts.jsonl", "prompts.jsonl:1: field 'category'"),
        ("", "empty.txt", "empty.txt: no prompts in file"),
    ],
)
def test_bad_prompts_file_exits_2_naming_file_line_field_and_writes_nothing(tmp_path, content, name, expected):
    path = tmp_path / name
    path.write_text(content)
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["generate", "--model", "never-loaded", "--prompts", str(path), "--out", str(out)])
    assert result.exit_code == EXIT_BAD_INPUT
    assert expected in result.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--temperatures", "0.3,hot"], "'hot' is not a number"),
        (["--n", "0"], "n must be at least 1"),
        (["--top-p", "2"], "top_p must be in (0, 1]"),
        (["--round", "1"], "--project and --round go with --policy"),
        ([], "give --prompts FILE and --out FILE"),
    ],
)
def test_bad_options_exit_2(args, expected):
    result = runner.invoke(app, ["generate", *args])
    assert result.exit_code == EXIT_BAD_INPUT
    assert expected in result.stderr


def test_unknown_model_exits_2_and_keeps_the_old_output(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text("old\n")
    result = runner.invoke(app, ["generate", "--model", str(tmp_path / "no-such-model"), "--prompts", str(_prompts(tmp_path)), "--out", str(out)])
    assert result.exit_code == EXIT_BAD_INPUT
    assert "no-such-model" in result.stderr
    assert out.read_text() == "old\n"


def test_policy_round_end_to_end(tiny_model_dir, tmp_path):
    from sqlmodel import select

    from rlhf.db import init_database, make_engine, session_scope
    from rlhf.importer import import_records
    from rlhf.schema import Artifact, Response

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    engine = make_engine(url)
    init_database(engine)
    import_records(engine, [{"prompt": "hello", "responses": [{"text": "hi", "model": "base"}]}], "demo", max_pairs_per_prompt=0)
    result = runner.invoke(
        app,
        ["generate", "--policy", str(tiny_model_dir), "--project", "demo", "--round", "1", "--n", "2", "--max-new-tokens", "4", "--database-url", url],
    )
    assert result.exit_code == 0, result.output
    assert "round 1 of project 'demo'" in result.stdout
    with session_scope(engine) as session:
        assert {r.round for r in session.exec(select(Response))} == {0, 1}
        assert [a.kind for a in session.exec(select(Artifact))] == ["generation"]
    engine.dispose()


def test_policy_round_errors_exit_2(tiny_model_dir, tmp_path):
    from rlhf.db import init_database, make_engine

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    init_database(make_engine(url))
    base = ["generate", "--policy", str(tiny_model_dir), "--database-url", url]
    result = runner.invoke(app, [*base, "--project", "absent", "--round", "1"])
    assert result.exit_code == EXIT_BAD_INPUT and "no project 'absent'" in result.stderr
    result = runner.invoke(app, [*base, "--project", "absent"])
    assert result.exit_code == EXIT_BAD_INPUT and "--policy needs --project NAME and --round N" in result.stderr
    result = runner.invoke(app, [*base, "--project", "p", "--round", "1", "--prompts", "x.jsonl"])
    assert result.exit_code == EXIT_BAD_INPUT and "drop --prompts" in result.stderr


def test_command_module_does_not_import_torch():
    code = "import sys, rlhf.cli.generation; print('torch' in sys.modules)"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "False"
