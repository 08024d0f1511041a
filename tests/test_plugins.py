"""Third-party plugins through real `helios` entry points: discovery, listing, filtering, broken plugins."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helios_kit.errors import UnknownNameError
from helios_kit.plugins import HeliosPlugins

PLUGIN_CODE = '''
"""A third party's helios plugin: a backend and a spec-loader scheme."""
from helios_kit.backends.base import Backend, BackendOptions, WorkerResult
from helios_kit.hookspecs import hookimpl
from helios_kit.spec import dumps
from helios_kit.planner import plan_job
from helios_kit.spec import RenderConfig


class ClusterOptions(BackendOptions):
    queue: str = "default"


class ClusterBackend(Backend):
    name = "cluster"
    Options = ClusterOptions

    def run_chunk(self, spec, chunk, context, *, cancel, timeout=None):
        return WorkerResult(chunk_id=chunk.id, status="ok", stdout=self.options.queue)


def load_demo(source, options):
    config = RenderConfig(input="index.html", frame_count=12)
    return dumps(plan_job(config, concurrency=3, job_id="demo-" + source.split("://", 1)[1]))


@hookimpl
def register_backends(register):
    register("cluster", ClusterBackend)


@hookimpl
def register_spec_loaders(register):
    register("demo", load_demo)
'''


def make_distribution(root: Path, name: str, module: str, code: str) -> None:
    (root / module).mkdir(parents=True)
    (root / module / "__init__.py").write_text(textwrap.dedent(code))
    info = root / f"{name.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(f"[helios]\n{module.split('_')[-1]} = {module}\n")
    (info / "RECORD").write_text("")


@pytest.fixture
def site(tmp_path) -> Path:
    root = tmp_path / "site"
    make_distribution(root, "helios-cluster", "helios_cluster", PLUGIN_CODE)
    make_distribution(root, "helios-broken", "helios_broken", "raise ImportError('needs libfoo 2.0')\n")
    return root


def helios(site: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environ = {**os.environ, "PYTHONPATH": str(site), **(env or {})}
    environ.pop("HELIOS_PLUGINS", None) if env is None or "HELIOS_PLUGINS" not in env else None
    project = site / "project"  # the current directory, where a URL job's composition is found
    project.mkdir(exist_ok=True)
    (project / "index.html").write_text("<!doctype html><p>demo</p>")
    return subprocess.run(
        [sys.executable, "-m", "helios_kit.cli", *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
        cwd=project,
    )


def test_entry_point_plugin_adds_backend_and_loader(site) -> None:
    result = helios(site, "plugins", "--json")
    assert result.returncode == 0, result.stderr
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    assert plugins["cluster"]["backends"] == ["cluster"]
    assert plugins["cluster"]["spec_loaders"] == ["demo"]
    assert "helios-cluster 0.1.0" in plugins["cluster"]["origin"]
    assert plugins["broken"]["error"] == "ImportError: needs libfoo 2.0"
    assert "helios plugin 'broken' skipped" in result.stderr
    # The plugin's loader scheme works end to end; the broken plugin does not break the command.
    result = helios(site, "job", "validate", "demo://abc")
    assert result.returncode == 0, result.stderr
    assert "demo-abc" in result.stdout and "3 chunks" in result.stdout


def test_table_output_shows_origin(site) -> None:
    result = helios(site, "plugins")
    assert result.returncode == 0
    assert "cluster" in result.stdout and "helios-cluster" in result.stdout and "needs libfoo" in result.stdout


def test_env_var_limits_entry_point_plugins(site) -> None:
    only = json.loads(helios(site, "plugins", "--json", env={"HELIOS_PLUGINS": "cluster"}).stdout)
    assert {p["name"] for p in only} >= {"builtin", "cluster"} and "broken" not in {p["name"] for p in only}
    none = json.loads(helios(site, "plugins", "--json", env={"HELIOS_PLUGINS": ""}).stdout)
    assert [p["name"] for p in none] == ["builtin"]


def test_unknown_names_list_the_known_ones() -> None:
    plugins = HeliosPlugins(load_entry_points=False)
    with pytest.raises(UnknownNameError, match=r"^unknown backend 'nope'; known: local$"):
        plugins.backend("nope")
    with pytest.raises(UnknownNameError, match=r"^unknown repository 'pg'; known: memory, sqlite$"):
        plugins.repository("pg")


def test_plugin_registered_in_code_can_override_and_is_attributed() -> None:
    from helios_kit.hookspecs import hookimpl

    class Plugin:
        @hookimpl
        def register_backends(self, register):
            register("local", "os:getcwd")
            register("extra", dict)

    plugins = HeliosPlugins(load_entry_points=False)
    plugins.register_plugin(Plugin(), name="mine")
    assert plugins.backend("extra") is dict
    assert plugins.backend("local") is os.getcwd  # later plugins override built-in names
    info = {i.name: i for i in plugins.plugin_infos()}["mine"]
    assert info.backends == ["extra", "local"]
