"""A page a worker renders cannot reach the worker's metadata service or loopback services (render/netguard):
real Chromium renders a tiny composition whose script tries to read a loopback "metadata" server (a
synchronous XHR during load, so the attempt happens before frame 0); with the guard on the server never
sees a request and the render still succeeds; with the guard off (the control) it does see one, so the
test can fail. Plus the guard's host rules (property-based)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helios_kit.render.netguard import GuardPolicy, PageGuard
from helios_kit.spec import RenderConfig

PAGE = """<!doctype html><html><head><meta charset="utf-8"><style>html,body{margin:0;background:#123}</style>
</head><body><script>
  // the render waits for requests in flight before frame 0, so the attempt is made before the first frame
  fetch("METADATA_URL").then(r => r.text()).then(t => { document.body.dataset.leaked = t; })
    .catch(() => { document.body.dataset.leaked = "blocked"; });
</script></body></html>
"""


class MetadataServer:
    """A loopback stand-in for 169.254.169.254 that counts the requests it gets."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                owner.requests.append(self.path)
                body = b"SECRET-TOKEN"
                self.send_response(200)
                self.send_header("Access-Control-Allow-Origin", "*")
                self.send_header("Access-Control-Allow-Headers", "*")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = _answer
            do_OPTIONS = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/computeMetadata/v1/token"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def metadata() -> Iterator[MetadataServer]:
    server = MetadataServer()
    try:
        yield server
    finally:
        server.close()


def _render(tmp_path: Path, metadata: MetadataServer, name: str):
    from helios_kit.render import render_range

    folder = tmp_path / name
    folder.mkdir()
    (folder / "index.html").write_text(PAGE.replace("METADATA_URL", metadata.url))
    config = RenderConfig(input="index.html", width=96, height=64, fps=10, frame_count=2)
    return render_range(
        config, input_location=str(folder / "index.html"), start_frame=0, frame_count=2, output_path=folder / "o.mp4"
    )


@pytest.mark.render
def test_page_cannot_reach_loopback_metadata(tmp_path: Path, metadata: MetadataServer, monkeypatch) -> None:
    monkeypatch.setenv("HELIOS_NETGUARD", "on")
    monkeypatch.delenv("HELIOS_NETGUARD_ALLOW", raising=False)
    stats = _render(tmp_path, metadata, "guarded")
    assert metadata.requests == [], metadata.requests
    assert (tmp_path / "guarded" / "o.mp4").stat().st_size > 0 and stats is not None


@pytest.mark.render
def test_a_warm_tab_is_guarded_on_every_render_with_one_guard(
    tmp_path: Path, metadata: MetadataServer, monkeypatch
) -> None:
    """A warm browser keeps its tab across renders (each with its own composition server): every load gets a
    guard for that server, and the last render's guard is dropped rather than piling up."""
    from helios_kit.render import render_range
    from helios_kit.render.netguard import PageGuard
    from helios_kit.render.warm import WarmBrowser

    monkeypatch.setenv("HELIOS_NETGUARD", "on")
    monkeypatch.delenv("HELIOS_NETGUARD_ALLOW", raising=False)
    folder = tmp_path / "warm"
    folder.mkdir()
    (folder / "index.html").write_text(PAGE.replace("METADATA_URL", metadata.url))
    config = RenderConfig(input="index.html", width=96, height=64, fps=10, frame_count=2)
    with WarmBrowser() as warm:
        for run in range(3):
            render_range(
                config,
                input_location=str(folder / "index.html"),
                start_frame=0,
                frame_count=2,
                output_path=folder / f"o{run}.mp4",
                warm=warm,
            )
            listeners = warm._browser.cdp._listeners  # what the kept browser dispatches to
            guards = [fn for fn in listeners if isinstance(getattr(fn, "__self__", None), PageGuard)]
            assert len(guards) == 1, guards
    assert metadata.requests == [], metadata.requests
    assert all((folder / f"o{run}.mp4").stat().st_size > 0 for run in range(3))


@pytest.mark.render
def test_control_without_the_guard_the_page_reaches_it(tmp_path: Path, metadata: MetadataServer, monkeypatch) -> None:
    monkeypatch.setenv("HELIOS_NETGUARD", "off")
    _render(tmp_path, metadata, "open")
    assert metadata.requests, "the control page never tried: the guarded test would prove nothing"


@pytest.mark.render
def test_an_allowed_host_is_reachable(tmp_path: Path, metadata: MetadataServer, monkeypatch) -> None:
    monkeypatch.setenv("HELIOS_NETGUARD", "on")
    port = metadata.url.split(":")[2].split("/")[0]
    monkeypatch.setenv("HELIOS_NETGUARD_ALLOW", f"127.0.0.1:{port}")
    _render(tmp_path, metadata, "allowed")
    assert metadata.requests


@pytest.mark.render
def test_a_job_naming_the_metadata_service_as_its_composition_fails_cleanly(
    tmp_path: Path, metadata: MetadataServer, monkeypatch
) -> None:
    from helios_kit.errors import RenderError
    from helios_kit.render import render_range

    monkeypatch.setenv("HELIOS_NETGUARD", "on")
    monkeypatch.delenv("HELIOS_NETGUARD_ALLOW", raising=False)
    config = RenderConfig(input=metadata.url, width=96, height=64, fps=10, frame_count=2)
    with pytest.raises(RenderError) as raised:
        render_range(config, input_location=metadata.url, start_frame=0, frame_count=2, output_path=tmp_path / "o.mp4")
    assert metadata.requests == [], metadata.requests
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "o.mp4").exists()


class _Page:
    session_id = "s"


def _guard(allowed: list[str] | None = None) -> PageGuard:
    return PageGuard(_Page(), "http://127.0.0.1:4321/index.html", GuardPolicy(enabled=True, allowed=allowed or []))


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/computeMetadata/v1/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://metadata/computeMetadata/v1/",
        "http://127.0.0.1:8080/",
        "http://127.9.9.9/",
        "http://localhost:4321/",
        "http://[::1]:4321/",
        "http://[fe80::1]/",
        "http://[::ffff:169.254.169.254]/",
        "http://0.0.0.0:22/",
        "ws://127.0.0.1:9222/devtools",
        "http://foo.localhost/",
    ],
)
def test_internal_hosts_are_blocked(url: str) -> None:
    assert not _guard().allows(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:4321/assets/a.png",  # the page's own origin (the composition server)
        "data:image/png;base64,AAAA",
        "blob:http://127.0.0.1:4321/x",
        "https://93.184.216.34/font.woff2",
    ],
)
def test_own_origin_and_public_hosts_pass(url: str) -> None:
    assert _guard().allows(url)


@given(a=st.integers(0, 255), b=st.integers(0, 255), port=st.integers(1, 65535))
def test_every_link_local_address_is_blocked(a: int, b: int, port: int) -> None:
    assert not _guard().allows(f"http://169.254.{a}.{b}:{port}/")
    assert _guard([f"169.254.{a}.{b}:{port}"]).allows(f"http://169.254.{a}.{b}:{port}/")
