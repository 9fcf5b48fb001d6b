"""`rlhf agreement`, `rlhf stats`, `rlhf leaderboard`: output, exit codes, and fuzzed CSV parsing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from rlhf.cli import app
from rlhf.stats import CsvInputError, _parse_csv_text, ratings_from_records

runner = CliRunner()

KRIPPENDORFF_2011 = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def ratings_csv(tmp_path: Path, coders=KRIPPENDORFF_2011, name="ratings.csv") -> Path:
    lines = ["item,annotator,value"]
    for coder, row in enumerate(coders):
        for unit, value in enumerate(row):
            if value is not None:
                lines.append(f"u{unit + 1},coder{coder + 1},{value}")
    return write(tmp_path / name, "\n".join(lines) + "\n")


def run_json(args: list[str]) -> dict:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("level, alpha", [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849), ("ratio", 0.797)])
def test_agreement_json_on_the_worked_example(tmp_path, level, alpha):
    out = run_json(["agreement", str(ratings_csv(tmp_path)), "--level", level, "--json", "--bootstrap", "100"])
    assert round(out["krippendorff_alpha"], 3) == alpha
    assert round(out["gwet_ac1"], 3) == 0.775
    assert out["fleiss_kappa"] is None
    assert (out["n_items"], out["n_annotators"], out["n_annotations"]) == (12, 4, 41)
    assert out["percent_agreement"] == pytest.approx(0.818, abs=1e-3)
    assert "cohen_kappa" not in out  # four annotators


def test_agreement_two_annotators_reports_cohen(tmp_path):
    path = ratings_csv(tmp_path, KRIPPENDORFF_2011[:2])
    ordinal = run_json(["agreement", str(path), "--level", "ordinal", "--json", "--bootstrap", "0"])
    assert {"cohen_kappa", "cohen_kappa_linear", "cohen_kappa_quadratic"} <= set(ordinal)
    assert all(isinstance(ordinal[k], float) for k in ("cohen_kappa", "cohen_kappa_linear", "cohen_kappa_quadratic"))
    nominal = run_json(["agreement", str(path), "--level", "nominal", "--json", "--bootstrap", "0"])
    assert "cohen_kappa" in nominal and "cohen_kappa_linear" not in nominal


def test_agreement_nominal_text_labels_and_fleiss(tmp_path):
    rows = ["item,annotator,value"] + [f"{i},{w},{'yes' if (i + j) % 3 else 'no'}" for i in range(10) for j, w in enumerate("abc")]
    out = run_json(["agreement", str(write(tmp_path / "labels.csv", "\n".join(rows))), "--json", "--bootstrap", "0"])
    assert isinstance(out["fleiss_kappa"], float)
    assert out["n_annotators"] == 3


def test_agreement_table_output(tmp_path):
    result = runner.invoke(app, ["agreement", str(ratings_csv(tmp_path)), "--level", "interval", "--bootstrap", "50"])
    assert result.exit_code == 0, result.output
    assert "krippendorff_alpha" in result.stdout and "0.8491" in result.stdout
    assert "note: fleiss_kappa" in result.stdout


@pytest.mark.parametrize(
    "text, level, message",
    [
        ("item,annotator\n1,a\n", "nominal", "line 1: missing column 'value'"),
        ("item,annotator,value\n1,a,1\n1,b\n", "nominal", "line 3: expected 3 fields, got 2"),
        ("item,annotator,value\n1,a,1\n1,b,lots\n", "ordinal", "line 3, column 'value': 'lots' is not a number"),
        ("item,annotator,value\n1,a,1\n1,a,2\n", "nominal", "line 3: annotator 'a' already rated item '1' on line 2"),
        ("item,annotator,value\n1,,1\n", "nominal", "line 2, column 'annotator': empty"),
        ("item,annotator,value\n1,a,-2\n", "ratio", "line 2, column 'value': '-2' is negative"),
        ("item,annotator,value\n1,a,nan\n", "interval", "line 2, column 'value': 'nan' is not a number"),
        ("", "nominal", "empty file"),
        ("item,annotator,value,value\n", "nominal", "column 'value' appears twice"),
        ('item,annotator,value\n1,a,"unclosed\n', "nominal", "line"),
    ],
)
def test_bad_csv_exits_2_naming_the_place(tmp_path, text, level, message):
    path = write(tmp_path / "bad.csv", text)
    result = runner.invoke(app, ["agreement", str(path), "--level", level])
    assert result.exit_code == 2
    assert message in result.stderr
    assert str(path) in result.stderr


def test_unreadable_inputs_exit_2(tmp_path):
    missing = runner.invoke(app, ["agreement", str(tmp_path / "nope.csv")])
    assert missing.exit_code == 2 and "no such file" in missing.stderr
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"item,annotator,value\n\xff\xfe,a,1\n")
    result = runner.invoke(app, ["agreement", str(binary)])
    assert result.exit_code == 2 and "not UTF-8" in result.stderr
    level = runner.invoke(app, ["agreement", str(ratings_csv(tmp_path)), "--level", "cardinal"])
    assert level.exit_code == 2 and "--level" in level.stderr


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.text(alphabet=st.sampled_from(list("item,anotvlu\n\r\"'x0123.-e ;\t")), max_size=200),
    st.sampled_from(["nominal", "ordinal", "interval", "ratio"]),
)
def test_csv_parser_fuzz_either_parses_or_names_the_problem(text, level):
    try:
        name, header, records = _parse_csv_text("fuzz.csv", "item,annotator,value\n" + text)
        frame = ratings_from_records(name, header, records, level)
    except CsvInputError as exc:
        assert str(exc).startswith("fuzz.csv")
        return
    assert list(frame.columns) == ["item", "annotator", "value", "line"]
    assert not frame.duplicated(["item", "annotator"]).any()
    if level != "nominal" and len(frame):
        assert frame["value"].dtype.kind == "f"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_csv_reader_fuzz_on_raw_bytes(tmp_path_factory, data):
    from rlhf.stats import read_ratings_csv

    path = tmp_path_factory.mktemp("fuzz") / "raw.csv"
    path.write_bytes(data)
    try:
        read_ratings_csv(path, "interval")
    except CsvInputError as exc:
        assert str(path) in str(exc)


def comparisons_csv(tmp_path: Path, rows: list[str]) -> Path:
    return write(tmp_path / "comparisons.csv", "model_a,model_b,winner\n" + "\n".join(rows) + "\n")


def test_leaderboard_csv_json(tmp_path):
    rows = ["big,small,a"] * 30 + ["big,small,b"] * 10 + ["small,big,tie"] * 5 + ["mid,big,b"] * 6 + ["mid,small,a"] * 6 + ["mid,small,both_bad"] * 2
    out = run_json(["leaderboard", str(comparisons_csv(tmp_path, rows)), "--json", "--bootstrap", "50"])
    assert [m["model"] for m in out["models"]] == ["big", "mid", "small"]
    top = out["models"][0]
    assert top["elo_low"] <= top["elo"] <= top["elo_high"] and top["rank"] == 1
    assert out["n_comparisons"] == len(rows) and out["tie_parameter"] > 0
    assert out["components"] == {"0": ["big", "mid", "small"]}


def test_leaderboard_table_says_when_the_graph_is_split(tmp_path):
    rows = ["a,b,a", "a,b,b", "a,b,a", "c,d,tie", "c,d,a"]
    result = runner.invoke(app, ["leaderboard", str(comparisons_csv(tmp_path, rows)), "--bootstrap", "20"])
    assert result.exit_code == 0, result.output
    assert "not connected" in result.stdout and "component 0: a, b" in result.stdout and "component 1: c, d" in result.stdout


@pytest.mark.parametrize(
    "rows, message",
    [
        (["x,y,draw"], "line 2, column 'winner': 'draw' is not one of a, b, tie, both_bad"),
        (["x,x,a"], "line 2: model 'x' is compared with itself"),
        (["x,,a"], "line 2, column 'model_b': empty"),
    ],
)
def test_leaderboard_bad_csv(tmp_path, rows, message):
    result = runner.invoke(app, ["leaderboard", str(comparisons_csv(tmp_path, rows))])
    assert result.exit_code == 2 and message in result.stderr


def test_leaderboard_needs_exactly_one_source(tmp_path):
    assert runner.invoke(app, ["leaderboard"]).exit_code == 2
    both = runner.invoke(app, ["leaderboard", str(comparisons_csv(tmp_path, ["x,y,a"])), "--project", "p"])
    assert both.exit_code == 2


def test_stats_and_leaderboard_for_a_project(sqlite_engine):
    from test_stats_project import build

    build(sqlite_engine)
    url = sqlite_engine.url.render_as_string(hide_password=False)
    out = run_json(["stats", "--project", "stats-demo", "--json", "--bootstrap", "50", "--database-url", url])
    assert set(out["dimensions"]) == {"helpfulness", "honesty"}
    for summary in list(out["dimensions"].values()) + [out["preferences"]]:
        assert {"krippendorff_alpha", "fleiss_kappa", "gwet_ac1", "percent_agreement", "n_items", "n_annotators", "n_annotations"} <= set(summary)
    assert {a["username"] for a in out["annotators"]} == {"ann0", "ann1", "ann2", "ann3"}
    assert [m["model"] for m in out["leaderboard"]] == ["gamma-70b", "beta-7b", "alpha-1b"]
    table = runner.invoke(app, ["stats", "--project", "stats-demo", "--bootstrap", "0", "--database-url", url])
    assert table.exit_code == 0, table.output
    assert "dimension helpfulness" in table.stdout and "annotators" in table.stdout and "leaderboard" in table.stdout
    board = run_json(["leaderboard", "--project", "stats-demo", "--json", "--bootstrap", "20", "--database-url", url])
    assert board["models"][0]["model"] == "gamma-70b"
    missing = runner.invoke(app, ["stats", "--project", "nope", "--database-url", url])
    assert missing.exit_code == 2 and "nope" in missing.stderr


def test_commands_do_not_import_torch(tmp_path):
    path = ratings_csv(tmp_path)
    comparisons = comparisons_csv(tmp_path, ["x,y,a", "x,y,b", "y,x,tie"])
    code = (
        "import sys, json\n"
        "from typer.testing import CliRunner\n"
        "from rlhf.cli import app\n"
        "assert 'pandas' not in sys.modules and 'torch' not in sys.modules\n"
        f"r = CliRunner().invoke(app, ['agreement', {str(path)!r}, '--json', '--bootstrap', '10'])\n"
        "assert r.exit_code == 0, r.output\n"
        f"r = CliRunner().invoke(app, ['leaderboard', {str(comparisons)!r}, '--json', '--bootstrap', '10'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
