"""Rows of a batch: JSONL, CSV and JSON arrays parsed into props; the output template; two rows mapping to one
output named in one line; asset props turned into data URLs. Pure functions: property-tested."""

from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helios_kit.batching.rows import asset_props, output_for, outputs_for, parse_rows, split_template
from helios_kit.errors import SpecError

keys = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8)
cells = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\x00"), max_size=12)
scalars = st.one_of(st.integers(-1000, 1000), st.booleans(), st.none(), cells)


@given(st.lists(st.dictionaries(keys, scalars, min_size=1, max_size=4), min_size=1, max_size=6))
def test_jsonl_and_json_arrays_give_back_the_objects_in_order(objects: list[dict]) -> None:
    jsonl = "\n".join(json.dumps(obj) for obj in objects) + "\n"
    assert [row.props for row in parse_rows(jsonl, "rows.jsonl")] == objects
    assert [row.props for row in parse_rows(json.dumps(objects), "rows.json")] == objects
    assert [row.index for row in parse_rows(jsonl, "rows.jsonl")] == list(range(len(objects)))


@given(st.lists(keys, min_size=1, max_size=4, unique=True), st.data())
def test_csv_rows_are_the_header_zipped_with_each_record(header: list[str], data: st.DataObject) -> None:
    records = data.draw(st.lists(st.lists(cells, min_size=len(header), max_size=len(header)), min_size=1, max_size=5))
    records = [record for record in records if any(cell.strip() for cell in record)]
    if not records:
        return
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(records)
    rows = parse_rows(buffer.getvalue(), "rows.csv")
    assert [row.props for row in rows] == [dict(zip(header, record, strict=True)) for record in records]


def test_bad_rows_name_their_line() -> None:
    with pytest.raises(SpecError, match=r"rows.jsonl line 2: invalid JSON"):
        parse_rows('{"a": 1}\n{oops\n', "rows.jsonl")
    with pytest.raises(SpecError, match=r"rows.jsonl line 3: row 1 must be a JSON object"):
        parse_rows('{"a": 1}\n\n[1]\n', "rows.jsonl")
    with pytest.raises(SpecError, match=r"rows.csv line 3: row 1 has 3 fields, the header has 2"):
        parse_rows("id,name\n1,a\n2,b,c\n", "rows.csv")
    with pytest.raises(SpecError, match=r"rows.json: no rows"):
        parse_rows("[]", "rows.json")


def test_the_output_template_takes_row_keys_and_index() -> None:
    rows = parse_rows("id,name\na1,Ada\nb2,Bo\n", "rows.csv")
    assert outputs_for("{id}-{name}.mp4", rows, "rows.csv") == ["a1-Ada.mp4", "b2-Bo.mp4"]
    assert outputs_for("v{index:03d}.mp4", rows, "rows.csv") == ["v000.mp4", "v001.mp4"]
    assert split_template("out/{id}.mp4") == ("out", "{id}.mp4")
    assert split_template("{id}.mp4") == (".", "{id}.mp4")
    assert split_template("a/b/{team}/{id}.mp4") == ("a/b", "{team}/{id}.mp4")


def test_two_rows_mapping_to_one_output_is_one_line_naming_both() -> None:
    rows = parse_rows("id,name\n1,Ada\n2,Bo\n1,Cy\n", "rows.csv")
    with pytest.raises(SpecError) as caught:
        outputs_for("{id}.mp4", rows, "rows.csv")
    message = str(caught.value)
    assert "\n" not in message
    assert "row 0 (rows.csv line 2)" in message and "row 2 (rows.csv line 4)" in message and "1.mp4" in message


def test_a_missing_key_or_a_path_in_a_value_is_refused() -> None:
    (row,) = parse_rows('{"id": "../up"}\n', "rows.jsonl")
    with pytest.raises(SpecError, match=r"has no key 'name' \(keys: id\)"):
        output_for("{name}.mp4", row, "rows.jsonl")
    with pytest.raises(SpecError, match=r"id='../up' cannot be part of a file name"):
        output_for("{id}.mp4", row, "rows.jsonl")


def test_a_prop_naming_a_file_next_to_the_rows_becomes_a_data_url(tmp_path: Path) -> None:
    (tmp_path / "photo.svg").write_text("<svg/>")
    props = {"photo": "photo.svg", "name": "Ada", "missing": "nope.png", "url": "http://127.0.0.1/x.png", "n": 3}
    resolved = asset_props(props, tmp_path, "row 0")
    assert resolved["photo"] == "data:image/svg+xml;base64," + base64.b64encode(b"<svg/>").decode()
    assert {key: resolved[key] for key in ("name", "missing", "url", "n")} == {
        "name": "Ada",
        "missing": "nope.png",
        "url": "http://127.0.0.1/x.png",
        "n": 3,
    }


def test_a_row_that_cannot_be_planned_fails_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from helios_kit.batching import rows as rows_module
    from helios_kit.batching.plan import BatchSettings, plan_batch

    (tmp_path / "card.html").write_text('<meta name="helios" content=\'{"width": 64, "height": 48, "fps": 10}\'>')
    (tmp_path / "big.png").write_bytes(b"x" * 100)
    monkeypatch.setattr(rows_module, "MAX_ASSET_BYTES", 10)
    parsed = parse_rows('{"id": "a"}\n{"id": "b", "photo": "big.png"}\n{"id": "c"}\n', "rows.jsonl")
    plan = plan_batch(
        str(tmp_path / "card.html"),
        parsed,
        str(tmp_path / "out/{id}.mp4"),
        BatchSettings(frame_count=2),
        rows_source="rows.jsonl",
        rows_dir=tmp_path,
        write=True,
    )
    assert [video.output for video in plan.planned] == ["a.mp4", "c.mp4"]
    (failed,) = [video for video in plan.videos if video.error]
    assert failed.error == "row 1 (rows.jsonl line 2): photo='big.png' is 100 bytes, more than 10 for an asset prop"
    assert sorted(path.name for path in plan.jobs_dir.glob("*.json")) == sorted(
        f"{video.job_id}.json" for video in plan.planned
    )


def test_the_batch_progress_counts_videos_and_frames() -> None:
    from helios_kit.batching.run import BatchEvent
    from helios_kit.commands.batch import BatchProgress
    from helios_kit.protocol import EventKind, ProgressEvent

    progress = BatchProgress(videos=2, frames=6)
    for index, output in enumerate(("a.mp4", "b.mp4")):
        progress(BatchEvent(index=index, output=output, event=ProgressEvent(kind=EventKind.RENDERED, frames=3)))
    progress(BatchEvent(index=0, output="a.mp4", event=ProgressEvent(kind=EventKind.MERGED)))
    tasks = {task.description: task for task in progress.progress.tasks}
    assert (tasks["videos"].completed, tasks["videos"].total) == (1, 2)
    assert (tasks["frames"].completed, tasks["frames"].total) == (6, 6)
    assert tasks["frames"].fields["rate"].endswith("frames/s")


def test_backend_flags_belong_to_their_backend(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "rows.csv").write_text("id\na\n")
    (tmp_path / "card.html").write_text("<p>")
    argv = [sys.executable, "-m", "helios_kit.cli", "batch", "card.html", "rows.csv", "-o", "o/{id}.mp4"]
    result = subprocess.run(
        [*argv, "--backend", "local", "--scheduler", "tcp://127.0.0.1:1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr == "error: --scheduler is an option of backend dask, not of 'local'\n"


def test_a_doit_cache_left_truncated_by_a_kill_is_dropped(tmp_path: Path) -> None:
    from helios_kit.batching.run import _usable_db

    good, cut, empty = tmp_path / "good.db", tmp_path / "cut.db", tmp_path / "empty.db"
    good.write_text('{"render:chunk-0": {}}')
    cut.write_text('{"render:chunk-0": {"checker": "md')
    empty.write_text("")
    assert [_usable_db(path).exists() for path in (good, cut, empty, tmp_path / "none.db")] == [
        True,
        False,
        False,
        False,
    ]
