"""The job-dir rule: a local job resolves in its folder; a URL job in the current directory when the
composition is there, else relative to the job's URL (over http, or downloaded from fsspec)."""

from __future__ import annotations

from pathlib import Path

import fsspec
import pytest

from helios_kit.composition import job_dir_for, resolve_composition
from helios_kit.errors import SpecError
from helios_kit.planner import plan_job
from helios_kit.render.server import CompositionServer
from helios_kit.spec import RenderConfig, dumps


def spec_for(input_ref: str = "comp/index.html"):
    return plan_job(RenderConfig(input=input_ref, frame_count=4), concurrency=2, job_id="rule")


def write_comp(folder: Path) -> None:
    (folder / "comp").mkdir(parents=True)
    (folder / "comp" / "index.html").write_text("<p>hi</p>")


def test_a_local_job_resolves_in_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_comp(tmp_path / "project")
    (tmp_path / "project" / "job.json").write_text(dumps(spec_for()))
    monkeypatch.chdir(tmp_path)
    resolved = resolve_composition(spec_for(), str(tmp_path / "project" / "job.json"), tmp_path / "ws")
    assert Path(resolved.input_location) == tmp_path / "project" / "comp" / "index.html"
    assert resolved.root == (tmp_path / "project" / "comp").resolve()


def test_an_http_job_uses_the_current_directory_when_the_composition_is_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "job.json").write_text(dumps(spec_for()))  # the server has only the job file
    write_comp(tmp_path / "here")
    monkeypatch.chdir(tmp_path / "here")
    with CompositionServer(tmp_path / "site") as site:
        url = site.base_url + "job.json"
        assert job_dir_for(url) == tmp_path / "here"
        resolved = resolve_composition(spec_for(), url, tmp_path / "ws", job_dir=job_dir_for(url))
    assert Path(resolved.input_location) == tmp_path / "here" / "comp" / "index.html"
    assert "current directory" in resolved.source


def test_an_http_job_with_nothing_local_resolves_relative_to_its_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_comp(tmp_path / "site" / "jobs")
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path / "empty")
    with CompositionServer(tmp_path / "site") as site:
        url = site.base_url + "jobs/job.json"
        resolved = resolve_composition(spec_for(), url, tmp_path / "ws", job_dir=job_dir_for(url))
        assert resolved.input_location == site.base_url + "jobs/comp/index.html"
    assert resolved.root is None and "relative to the job URL" in resolved.source


def test_an_fsspec_job_downloads_unless_the_composition_is_local(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe("/rule-jobs/job.json", dumps(spec_for()).encode())
    fs.pipe("/rule-jobs/comp/index.html", b"<p>remote</p>")
    fs.pipe("/rule-jobs/chunks/chunk-0000.mp4", b"an output, never downloaded")
    url = "memory://rule-jobs/job.json"
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path / "empty")
    remote = resolve_composition(spec_for(), url, tmp_path / "ws", job_dir=job_dir_for(url))
    assert remote.downloaded and Path(remote.input_location).read_text() == "<p>remote</p>"
    assert not (tmp_path / "ws" / "job" / "chunks").exists()
    write_comp(tmp_path / "here")
    monkeypatch.chdir(tmp_path / "here")
    local = resolve_composition(spec_for(), url, tmp_path / "ws2", job_dir=job_dir_for(url))
    assert not local.downloaded and Path(local.input_location).read_text() == "<p>hi</p>"


def test_an_absolute_input_cannot_be_resolved_for_a_remote_job(tmp_path: Path) -> None:
    spec = spec_for("/nowhere/comp/index.html")
    with pytest.raises(SpecError, match=r"config\.input: absolute path"):
        resolve_composition(spec, "memory://rule-jobs/job.json", tmp_path / "ws", job_dir=tmp_path)
