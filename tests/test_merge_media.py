"""A job's merge mixes the soundtrack from the media the last chunk's page showed (its manifest lists them),
so it steps no page in a browser of its own; a manifest without the list (written before it existed, or a
page that could not say) falls back to stepping the page (helios_kit/merging.py, composition/media.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

import helios_kit
from helios_kit.composition.media import MediaElement, MediaScan
from helios_kit.probe import probe
from helios_kit.render import audio as audio_module
from helios_kit.render.encode import find_ffmpeg
from helios_kit.spec import load
from helios_kit.store import ArtifactStore

PAGE = """<!doctype html><html><head>
<meta name="helios" content='{"width": 64, "height": 48, "fps": 10, "duration": 0.6}'>
</head><body style="margin:0;background:#123"><script>
  const track = document.createElement("audio");
  track.src = "sounds/tone%20a.ogg";
  document.body.append(track);
</script></body></html>
"""


@pytest.fixture
def job(tmp_path: Path) -> Path:
    comp = tmp_path / "comp"
    (comp / "sounds").mkdir(parents=True)
    tone = [find_ffmpeg(), "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=2"]
    subprocess.run([*tone, str(comp / "sounds" / "tone a.ogg")], check=True)
    (comp / "index.html").write_text(PAGE)
    job_file = tmp_path / "job.json"
    helios_kit.plan(comp, job_file=job_file, output="out.mp4", chunks=2)
    return job_file


@pytest.fixture
def discoveries(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each time the page is stepped again for its audio (the real discovery still runs)."""
    calls: list[str] = []
    discover = audio_module.discover_audio

    def counted(location: str, **kwargs: object) -> audio_module.AudioPlan:
        calls.append(location)
        return discover(location, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(audio_module, "discover_audio", counted)
    return calls


def _last_manifest(job: Path) -> tuple[ArtifactStore, str]:
    spec = load(job)
    return ArtifactStore(job.parent), spec.chunks[-1].output_file


def _has_the_tone(output: Path) -> None:
    info = probe(output)
    assert info.frame_count == 6
    assert info.audio_codec == "aac" and info.audio_duration_s == pytest.approx(0.6, abs=0.05)


@pytest.mark.render
def test_the_merge_mixes_the_media_the_last_chunk_showed_without_a_browser(job: Path, discoveries: list[str]) -> None:
    helios_kit.run_job(job)
    store, last = _last_manifest(job)
    manifest = store.read_manifest(last)
    assert manifest is not None and manifest.media is not None
    (element,) = manifest.media
    assert element.tag == "audio" and element.path == "sounds/tone a.ogg"  # the file, not the dead server's URL
    assert json.loads(manifest.model_dump_json(by_alias=True))["media"][0]["bornS"] == 0  # camelCase on the wire
    _has_the_tone(job.parent / "out.mp4")
    assert discoveries == []
    first = store.read_manifest(load(job).chunks[0].output_file)
    assert first is not None and first.media is None and first.media_seen == 1  # only the last chunk lists them


@pytest.mark.render
def test_a_manifest_without_the_list_steps_the_page_again(job: Path, discoveries: list[str]) -> None:
    helios_kit.run_job(job)
    store, last = _last_manifest(job)
    manifest_file = Path(store.path(store.manifest_name(last)))
    written = json.loads(manifest_file.read_text())
    del written["media"]  # as a manifest written before the list existed
    manifest_file.write_text(json.dumps(written))
    (job.parent / "out.mp4").unlink()
    report = helios_kit.run_job(job)
    assert report.rendered == 0 and report.skipped == 2  # only the merge ran again
    _has_the_tone(job.parent / "out.mp4")
    assert len(discoveries) == 1


def test_an_element_whose_path_leads_out_of_the_folder_has_no_source(tmp_path: Path) -> None:
    (tmp_path / "comp").mkdir()
    (tmp_path / "secret.ogg").write_bytes(b"x")
    scan = MediaScan(elements=[], frames_stepped=1, root=str(tmp_path / "comp"))
    inside = MediaElement(tag="audio", src="http://127.0.0.1:1/a.ogg", path="sounds/a.ogg")
    outside = MediaElement(tag="audio", src="http://127.0.0.1:1/x", path="../secret.ogg")
    remote = MediaElement(tag="audio", src="https://cdn.example/a.ogg")
    assert scan.source(inside) == str((tmp_path / "comp" / "sounds" / "a.ogg").resolve())
    assert scan.source(outside) is None
    assert scan.source(remote) == "https://cdn.example/a.ogg"
    assert MediaScan(elements=[], frames_stepped=1).source(inside) is None  # no folder known here


@pytest.mark.render
def test_the_merge_names_once_the_files_the_pages_asked_for_and_the_folder_lacks(
    job: Path, caplog: pytest.LogCaptureFixture
) -> None:
    page = job.parent / "comp" / "index.html"
    page.write_text(page.read_text().replace("<script>", '<img src="art/typo.png"><script>'))
    with caplog.at_level("WARNING", logger="helios.merge"):
        helios_kit.run_job(job)
    (line,) = [record.getMessage() for record in caplog.records if "does not have" in record.getMessage()]
    assert line.startswith("merge: warning:") and "(art/typo.png)" in line  # two chunks, one name


@pytest.mark.render
def test_the_merge_names_once_the_urls_the_pages_could_not_load(job: Path, caplog: pytest.LogCaptureFixture) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/font.woff2"
    page = job.parent / "comp" / "index.html"
    page.write_text(page.read_text().replace("<script>", f'<link rel="preload" href="{url}" as="fetch"><script>'))
    with caplog.at_level("WARNING", logger="helios.merge"):
        helios_kit.run_job(job)
    (line,) = [record.getMessage() for record in caplog.records if "could not load" in record.getMessage()]
    assert line.startswith("merge: warning:") and f"{url} (net::ERR_CONNECTION_REFUSED)" in line
