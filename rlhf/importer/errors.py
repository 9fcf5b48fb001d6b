"""The one error every bad import raises: it names the file, the line (or row) and the field."""

from __future__ import annotations


class ImportFormatError(ValueError):
    """Bad input to an import: malformed line, missing or misnamed column, empty text, wrong type,
    unsupported format, file too large, or no records.

    `path` is the source as given (a file path, or "<records>"), `line` the 1-based line (JSONL,
    CSV) or row (Parquet, arrow) where it was found, `field` the offending field path
    (e.g. `responses[2].text`). Rendered as `file.jsonl:17: field 'responses[2].text': empty text`.
    Nothing of the source is written when this is raised.
    """

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None, field: str | None = None) -> None:
        self.path = path
        self.line = line
        self.field = field
        self.message = message
        super().__init__(self._render())

    def _render(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path + (f":{self.line}" if self.line is not None else "") + ": "
        elif self.line is not None:
            where = f"line {self.line}: "
        what = f"field '{self.field}': " if self.field else ""
        return f"{where}{what}{self.message}"

    def located(self, *, path: str | None = None, line: int | None = None) -> "ImportFormatError":
        """A copy with the place filled in where it was still unknown (parsers raise without it)."""
        return ImportFormatError(
            self.message,
            path=self.path if self.path is not None else path,
            line=self.line if self.line is not None else line,
            field=self.field,
        )
