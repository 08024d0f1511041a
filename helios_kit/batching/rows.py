"""Rows of a batch: parse JSONL, CSV or a JSON array into props objects; map each row to its output path
through the output template (`out/{id}.mp4`, `{index}`); turn props naming a local file into data URLs.

Pure functions over text and paths; every user error is one :class:`~helios_kit.errors.SpecError` line
naming the rows file, the row and its line.
"""

from __future__ import annotations

import base64
import csv
import io
import mimetypes
import os
import string
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, JsonValue

from helios_kit.errors import SpecError
from helios_kit.spec import parse_json

#: A prop naming a file bigger than this is an error: its bytes travel inside every chunk's JobSpec.
MAX_ASSET_BYTES = 8 * 1024 * 1024
ROW_FORMATS = ("jsonl", "csv", "json")


class Row(BaseModel):
    """One row: its position (`{index}`, from 0), the line it starts on, and its props."""

    index: int
    line: int
    props: dict[str, JsonValue]

    def label(self, source: str) -> str:
        return f"row {self.index} ({source} line {self.line})"


def row_format(name: str, text: str) -> str:
    """`jsonl`, `csv` or `json` from the file's suffix, else from its first character."""
    suffix = PurePosixPath(name).suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix in (".csv", ".json"):
        return suffix[1:]
    first = text.lstrip()[:1]
    return "json" if first == "[" else "jsonl" if first == "{" else "csv"


def parse_rows(text: str, source: str, fmt: str | None = None) -> list[Row]:
    """The rows of `text` (`fmt` or guessed from `source`); SpecError naming the line of a bad row."""
    fmt = fmt or row_format(source, text)
    if fmt == "jsonl":
        rows = _jsonl_rows(text, source)
    elif fmt == "csv":
        rows = _csv_rows(text, source)
    elif fmt == "json":
        rows = _json_rows(text, source)
    else:
        raise SpecError(f"{source}: unknown rows format {fmt!r} (known: {', '.join(ROW_FORMATS)})")
    if not rows:
        raise SpecError(f"{source}: no rows")
    return rows


def _object(value: Any, source: str, index: int, line: int) -> Row:
    if not isinstance(value, dict):
        raise SpecError(f"{source} line {line}: row {index} must be a JSON object, got {type(value).__name__}")
    return Row(index=index, line=line, props=value)


def _jsonl_rows(text: str, source: str) -> list[Row]:
    rows: list[Row] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            value = parse_json(line, f"{source} line {number}")
            rows.append(_object(value, source, len(rows), number))
    return rows


def _json_rows(text: str, source: str) -> list[Row]:
    data = parse_json(text, source)
    if not isinstance(data, list):
        raise SpecError(f"{source}: must be a JSON array of objects, got {type(data).__name__}")
    return [_object(value, source, index, 1) for index, value in enumerate(data)]


def _csv_rows(text: str, source: str) -> list[Row]:
    reader = csv.reader(io.StringIO(text))
    header: list[str] | None = None
    rows: list[Row] = []
    for record in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in record):
            continue
        if header is None:
            header = [cell.strip() for cell in record]
            if any(not name for name in header) or len(set(header)) != len(header):
                raise SpecError(f"{source} line {line}: the header needs distinct, non-empty column names")
            continue
        if len(record) != len(header):
            raise SpecError(
                f"{source} line {line}: row {len(rows)} has {len(record)} fields, the header has {len(header)}"
            )
        rows.append(Row(index=len(rows), line=line, props=dict(zip(header, record, strict=True))))
    return rows


def read_rows(path: str | Path) -> list[Row]:
    """Read and parse a rows file; SpecError when it cannot be read."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError(f"rows file {path}: cannot read it: {getattr(error, 'strerror', None) or error}") from None
    return parse_rows(text, str(path))


# ---------------------------------------------------------------------------------------------------
# The output template


def template_fields(template: str) -> list[str]:
    """The field names of an output template (`out/{id}.mp4` → [`id`]); SpecError when it is malformed."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as error:
        raise SpecError(f"-o {template!r}: {error}") from None
    fields = [name for _, name, _, _ in parsed if name is not None]
    if any(not name for name in fields):
        raise SpecError(f"-o {template!r}: use named fields like {{id}} or {{index}}, not {{}}")
    return fields


def split_template(template: str) -> tuple[str, str]:
    """(fixed folder, the rest): `out/{id}.mp4` → (`out`, `{id}.mp4`); the folder becomes the batch's root."""
    fixed = template.split("{", 1)[0]
    folder, sep, _ = fixed.rpartition("/")
    if not sep:
        return ".", template
    return folder or "/", template[len(folder) + 1 :]


def output_for(template: str, row: Row, source: str) -> str:
    """The row's output path from the template (relative to the template's fixed folder)."""
    values: dict[str, Any] = {**row.props, "index": row.index}
    for name in template_fields(template):
        key = name.split(".")[0].split("[")[0]
        if key not in values:
            keys = ", ".join(sorted(row.props)) or "none"
            raise SpecError(f"-o {template!r}: {row.label(source)} has no key {key!r} (keys: {keys})")
        text = str(values[key])
        if "/" in text or "\\" in text or text.startswith(".") or not text.strip():
            raise SpecError(f"-o: {row.label(source)}: {key}={text!r} cannot be part of a file name")
    try:
        return template.format_map(values)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as error:
        raise SpecError(f"-o {template!r}: {row.label(source)}: {error}") from None


def outputs_for(template: str, rows: list[Row], source: str) -> list[str]:
    """Each row's output; SpecError naming both rows when two map to one output."""
    seen: dict[str, Row] = {}
    outputs = []
    for row in rows:
        output = output_for(template, row, source)
        other = seen.get(output)
        if other is not None:
            raise SpecError(
                f"-o {template!r}: {other.label(source)} and {row.label(source)} both map to {output}; "
                "use a key that differs per row, or {index}"
            )
        seen[output] = row
        outputs.append(output)
    return outputs


# ---------------------------------------------------------------------------------------------------
# Asset props


def looks_like_path(value: str) -> bool:
    """A string that may name a file: no URL scheme, not too long, with a file suffix."""
    if not 0 < len(value) < 1024 or "://" in value or value.startswith("data:"):
        return False
    return "." in os.path.splitext(value)[1]


def asset_props(props: dict[str, Any], base: Path, where: str) -> dict[str, Any]:
    """`props` with each top-level string naming an existing file (relative to `base`, the rows file's folder)
    replaced by a `data:` URL of its bytes: the page loads it on any backend, and a changed file changes the
    props, so the video (and only it) renders again. URLs are left for the page to load."""
    resolved = dict(props)
    for key, value in props.items():
        if not isinstance(value, str) or not looks_like_path(value):
            continue
        path = Path(value) if Path(value).is_absolute() else base / value
        if not path.is_file():
            continue
        size = path.stat().st_size
        if size > MAX_ASSET_BYTES:
            raise SpecError(f"{where}: {key}={value!r} is {size} bytes, more than {MAX_ASSET_BYTES} for an asset prop")
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        resolved[key] = f"data:{kind};base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    return resolved
