"""A JSON line cut short is reported at its own line and column, not at "column 1" of the newline (issue 16, item 13)."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rlhf.importer import ImportFormatError, import_file
from rlhf.importer.readers import parse_json_line

RECORD = {"prompt": "hello there, how are you doing today, my friend? Tell", "responses": [{"text": "fine, thanks", "model": "m"}]}
LINE = json.dumps(RECORD)
assert LINE[:81].endswith('"responses": ')  # cut there, the line stops where a value was expected
COLUMN = re.compile(r"\(column (\d+)\)")


def _column(message: str) -> int:
    return int(COLUMN.search(message).group(1))


def test_a_line_cut_off_at_column_82_is_reported_at_line_2_column_82(sqlite_engine, tmp_path):
    path = tmp_path / "cut.jsonl"
    path.write_text(LINE + "\n" + LINE[:81] + "\n" + LINE + "\n")  # the second line stops after 81 characters

    with pytest.raises(ImportFormatError) as caught:
        import_file(sqlite_engine, path, "demo")

    message = str(caught.value)
    assert f"{path}:2: malformed JSON" in message
    assert "(column 82)" in message and "the line ends there" in message


@given(data=st.data())
def test_any_truncation_reports_a_column_within_the_line(data):
    record = data.draw(
        st.fixed_dictionaries(
            {"prompt": st.text(max_size=30), "responses": st.lists(st.fixed_dictionaries({"text": st.text(max_size=20), "model": st.text(max_size=8)}), max_size=3)}
        )
    )
    line = json.dumps(record, ensure_ascii=data.draw(st.booleans()))
    cut = data.draw(st.integers(min_value=1, max_value=len(line) - 1))
    ending = data.draw(st.sampled_from(["\n", "\r\n", ""]))

    with pytest.raises(ImportFormatError) as caught:
        parse_json_line(line[:cut] + ending)

    column = _column(str(caught.value))
    assert 1 <= column <= cut + 1  # within the line, or just past its last character
    with pytest.raises(ImportFormatError) as bare:
        parse_json_line(line[:cut])
    assert column == _column(str(bare.value))  # the line's terminator does not move the column


def test_an_error_inside_the_line_keeps_its_column():
    with pytest.raises(ImportFormatError, match=r"\(column 16\)") as caught:
        parse_json_line('{"prompt": "x" "responses": []}\n')
    assert "ends there" not in str(caught.value)
