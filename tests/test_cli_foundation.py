"""The CLI's foundation: emit-job through the real command, validate, plugins, and a malformed-spec corpus."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from helios_kit.cli import cli
from helios_kit.planner import plan_job
from helios_kit.spec import RenderConfig, dumps, load

HELIOS = [sys.executable, "-m", "helios_kit.cli"]


def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([*HELIOS, *args], capture_output=True, text=True, cwd=cwd, timeout=60)


def test_seed_emit_job_two_chunks(tmp_path) -> None:
    (tmp_path / "comp.html").write_text("<h1>hi</h1>")
    result = run(
        "render",
        "comp.html",
        "--emit-job",
        "job.json",
        "--concurrency",
        "2",
        "--duration",
        "2",
        "--fps",
        "30",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1
    assert "job.json" in result.stdout and "2 chunks" in result.stdout and "60 frames" in result.stdout
    spec = load(tmp_path / "job.json")
    assert [(c.start_frame, c.frame_count) for c in spec.chunks] == [(0, 30), (30, 30)]
    merge = spec.merge.command
    assert merge.index(spec.chunks[0].output_file) < merge.index(spec.chunks[1].output_file)
    assert spec.config.input == "comp.html"
    # Each emit gets its own job id.
    run("render", "comp.html", "--emit-job", "job2.json", "--duration", "2", cwd=tmp_path)
    assert load(tmp_path / "job2.json").job_id != spec.job_id


def test_emit_job_paths_are_relative_to_the_job_file(tmp_path) -> None:
    (tmp_path / "comp").mkdir()
    (tmp_path / "comp" / "index.html").write_text(
        '<meta name="helios" content=\'{"width":640,"height":360,"fps":25,"duration":2}\'>'
    )
    (tmp_path / "jobs").mkdir()
    result = run(
        "render", "comp", "--emit-job", "jobs/job.json", "-o", "jobs/final.mp4", "--chunk-frames", "20", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    spec = load(tmp_path / "jobs" / "job.json")
    assert spec.config.input == "../comp/index.html"
    assert spec.config.output == "final.mp4"
    assert (spec.config.width, spec.config.height, spec.config.fps, spec.config.frame_count) == (640, 360, 25, 50)
    assert [c.frame_count for c in spec.chunks] == [20, 20, 10]


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    for name in ("render", "merge", "job", "worker", "plugins"):
        assert name in result.output
    job_help = CliRunner().invoke(cli, ["job", "--help"]).output
    for name in ("validate", "run", "status", "list", "cancel"):
        assert name in job_help, job_help


def test_plugins_lists_builtins() -> None:
    result = CliRunner().invoke(cli, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    builtin = next(p for p in json.loads(result.output) if p["name"] == "builtin")
    assert "local" in builtin["backends"]
    assert {"file", "http", "https", "s3"} <= set(builtin["spec_loaders"])
    assert {"sqlite", "memory"} <= set(builtin["repositories"])


def test_validate_prints_a_summary(tmp_path) -> None:
    spec = plan_job(RenderConfig(input="index.html", frame_count=90), concurrency=3)
    (tmp_path / "job.json").write_text(dumps(spec))
    (tmp_path / "index.html").write_text("<!doctype html><p>intro</p>")  # validate checks it is reachable
    result = CliRunner().invoke(cli, ["job", "validate", str(tmp_path / "job.json")])
    assert result.exit_code == 0, result.output
    assert "composition: found at" in result.output
    assert spec.job_id in result.output and "90 frames" in result.output and "3 chunks" in result.output


def _valid() -> dict:
    return json.loads(dumps(plan_job(RenderConfig(input="index.html", frame_count=60), concurrency=4)))


def _with(path: list, value=None, delete: bool = False):
    def build() -> str:
        data = _valid()
        target = data
        for key in path[:-1]:
            target = target[key]
        if delete:
            del target[path[-1]]
        else:
            target[path[-1]] = value
        return json.dumps(data)

    return build


MALFORMED = {
    "not json": (lambda: "{nope", r"invalid JSON at line 1, column 2"),
    "truncated": (lambda: json.dumps(_valid())[:-5], r"invalid JSON at line 1"),
    "array": (lambda: "[]", r"must be a JSON object"),
    "empty object": (lambda: "{}", r"jobId: required field is missing"),
    "zero frames": (_with(["chunks", 3, "frameCount"], 0), r"chunks\[3\]\.frameCount: must be > 0"),
    "negative start": (_with(["chunks", 0, "startFrame"], -1), r"chunks\[0\]\.startFrame: must be >= 0"),
    "gap": (_with(["chunks", 2, "startFrame"], 31), r"chunks\[2\]\.startFrame: expected 30"),
    "short coverage": (_with(["config", "frameCount"], 61), r"chunks\[3\]\.frameCount: chunks end at frame 60"),
    "duplicate id": (_with(["chunks", 1, "id"], 0), r"chunks\[1\]\.id: duplicate id 0"),
    "absolute output": (_with(["chunks", 1, "outputFile"], "/tmp/x.mp4"), r"chunks\[1\]\.outputFile: .*absolute"),
    "escaping output": (_with(["merge", "outputFile"], "../out.mp4"), r"merge\.outputFile: .*'\.\.'"),
    "windows path": (_with(["config", "output"], "C:\\out.mp4"), r"config\.output: must be a relative POSIX path"),
    "merge order": (
        _with(
            ["merge", "inputs"],
            ["chunks/chunk-0001.mp4", "chunks/chunk-0000.mp4", "chunks/chunk-0002.mp4", "chunks/chunk-0003.mp4"],
        ),
        r"merge\.inputs: must be the chunk outputs in order",
    ),
    "unknown key": (_with(["config", "bitrate"], "5M"), r"config\.bitrate: unknown key"),
    "unknown top key": (_with(["extra"], 1), r"extra: unknown key"),
    "missing config": (_with(["config"], delete=True), r"config: required field is missing"),
    "bad version": (_with(["version"], 9), r"version: must be 1"),
    "bad job id": (_with(["jobId"], "a b"), r"jobId: must match"),
    "fps zero": (_with(["config", "fps"], 0), r"config\.fps: must be > 0"),
    "width string": (_with(["config", "width"], "wide"), r"config\.width: must be an integer \(got 'wide'\)"),
    "odd height": (_with(["config", "height"], 719), r"config\.height: must be even"),
    "bad capture": (_with(["config", "capture"], "photo"), r"config\.capture: must be one of"),
    "crf range": (_with(["config", "crf"], 99), r"config\.crf: must be <= 63"),
    "no chunks": (_with(["chunks"], []), r"chunks: must not be empty"),
    "chunk not object": (_with(["chunks", 0], 5), r"chunks\[0\]: must be an object"),
    "helios bad command": (
        lambda: json.dumps(
            {
                "metadata": {"fps": 30},
                "chunks": [{"id": 0, "command": "rm -rf /"}],
                "mergeCommand": "helios merge o.mp4 a.mp4",
            }
        ),
        r"chunks\[0\]\.command: expected a 'helios render' command",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_spec_corpus_ends_in_one_clear_line(tmp_path, case) -> None:
    build, pattern = MALFORMED[case]
    path = tmp_path / "job.json"
    path.write_text(build())
    result = CliRunner().invoke(cli, ["job", "validate", str(path)])
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    assert lines[0].startswith("error: ")
    import re

    assert re.search(pattern, lines[0]), lines[0]


def test_errors_from_a_real_process_have_no_traceback(tmp_path) -> None:
    for args in (
        ["job", "validate", str(tmp_path / "missing.json")],
        ["job", "validate", "ftp://x/y.json"],
        ["render", "nope.html", "--emit-job", "j.json", "--duration", "1"],
    ):
        result = run(*args, cwd=tmp_path)
        assert result.returncode != 0
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "supported: file" in run("job", "validate", "ftp://x/y.json").stderr


def test_backend_flags_import_no_client_library() -> None:
    """`helios job run` declares every backend's flags; that must not load any backend's client or worker
    machinery (they load when that backend runs)."""
    heavy = ["httpx", "boto3", "psutil", "distributed", "helios_kit.backends.warm_workers", "helios_kit.worker.lines"]
    code = (
        "import sys\n"
        "from helios_kit.commands.job import job_group\n"
        "assert '--service-url' in [o for p in job_group.commands['run'].params for o in p.opts]\n"
        f"print(sorted(name for name in {heavy!r} if name in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout


_GC_PROBE_COMMAND = """
import gc

import click

ON_AT_IMPORT = gc.isenabled()


@click.command("gc-probe")
def probe() -> None:
    print(f"import={ON_AT_IMPORT} run={gc.isenabled()} frozen={gc.get_freeze_count()}")
"""

_GC_PROBE_MAIN = """
import atexit
import gc
import sys

from helios_kit import cli

cli.COMMANDS["gc-probe"] = ("gc_probe_command:probe", "Say what the collector was doing.")
atexit.register(lambda: print(f"exit frozen={gc.get_freeze_count()}"))  # runs after main's exit freeze
sys.argv = ["helios", "gc-probe"]
cli.main()
"""


def test_the_executable_keeps_the_collector_out_of_start_up_and_exit(tmp_path) -> None:
    """`helios` (cli.main): the collector is off while the subcommand's module loads, back on (with the
    start-up heap frozen) when it runs, and the heap is frozen again at exit; click's runner leaves it alone."""
    (tmp_path / "gc_probe_command.py").write_text(_GC_PROBE_COMMAND)
    (tmp_path / "probe_main.py").write_text(_GC_PROBE_MAIN)
    done = subprocess.run(
        [sys.executable, "probe_main.py"], capture_output=True, text=True, cwd=tmp_path, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    running, exiting = done.stdout.splitlines()
    assert running.startswith("import=False run=True frozen=")
    frozen_running, frozen_exiting = int(running.rsplit("=", 1)[1]), int(exiting.rsplit("=", 1)[1])
    assert frozen_running > 10_000  # click and all that helios_kit.cli loads, frozen before the command runs
    assert frozen_exiting > frozen_running  # what the command made was frozen too, before the final collection
