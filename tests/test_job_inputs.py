"""The CLI side of bad input: deeply nested job files, codec flags that are ffmpeg options, and the
original Helios CLI's `helios job run --adapter`, each one line and a non-zero exit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fakes.jobs import make_job

from helios_kit.commands.job import ADAPTER_BACKENDS, backend_for_adapter
from helios_kit.errors import SpecError
from helios_kit.spec import MAX_JSON_DEPTH

TESTS = Path(__file__).resolve().parent


def helios(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HELIOS_HOME=str(cwd / "home"), HELIOS_WORKER_RENDER="fakes.renders:bytes_render")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "helios_kit.cli", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("text", ["[" * 100_000, '{"config": ' * 100_000])
def test_a_deeply_nested_job_file_is_one_line(tmp_path: Path, command, text) -> None:
    job = tmp_path / "deep.json"
    job.write_text(text)
    line = one_error_line(helios("job", command, str(job), cwd=tmp_path))
    assert line == f"error: {job}: JSON nested more than {MAX_JSON_DEPTH} levels deep"


@pytest.mark.parametrize("flag", ["--video-codec", "--audio-codec", "--pixel-format"])
@pytest.mark.parametrize("value", ["-vf", "libx264 -vf scale=2:2", "a;b"])
def test_codec_flags_take_names_only(tmp_path: Path, flag, value) -> None:
    (tmp_path / "c.html").write_text("<p>hi</p>")
    args = ["render", "c.html", "--emit-job", "job.json", "--frame-count", "4", flag, value]
    line = one_error_line(helios(*args, cwd=tmp_path))
    assert line.startswith(f"error: {flag}: must be a name like libx264, yuv420p or prores_ks")
    assert not (tmp_path / "job.json").exists()


@pytest.mark.parametrize(
    ("adapter", "message"),
    [
        ("aws", "error: backend lambda: --function is required"),
        ("gcp", "error: backend cloudrun: --service-url is required"),
        ("azure", "error: --adapter: 'azure' is not available; known: local (= --backend local), aws (= --backend"),
    ],
)
def test_adapter_names_the_backend_it_stands_for(tmp_path: Path, adapter, message) -> None:
    job = make_job(tmp_path / "job", frames=4, chunks=2)
    assert one_error_line(helios("job", "run", str(job), "--adapter", adapter, cwd=tmp_path)).startswith(message)


def test_adapter_and_a_different_backend_conflict(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job", frames=4, chunks=2)
    line = one_error_line(helios("job", "run", str(job), "--adapter", "aws", "--backend", "local", cwd=tmp_path))
    assert line == "error: --adapter aws means --backend lambda, but --backend local was given"


def test_adapter_local_runs_the_job(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job", frames=4, chunks=2)
    result = helios("job", "run", str(job), "--adapter", "local", "--no-merge", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith("2 chunks: 2 rendered")


def test_the_alias_table() -> None:
    assert ADAPTER_BACKENDS == {"local": "local", "aws": "lambda", "gcp": "cloudrun"}
    assert backend_for_adapter(None, None) == "local"
    assert backend_for_adapter("cloudrun", None) == "cloudrun"
    assert backend_for_adapter("lambda", "aws") == "lambda"
    with pytest.raises(SpecError):
        backend_for_adapter(None, "fly")
