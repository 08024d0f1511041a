"""Naming what a page could not load, from the network errors Chromium logs."""

from __future__ import annotations

from typing import Any

from helios_kit.render.load_failures import failed_loads, failed_loads_warning


class _LoggedPage:
    def __init__(self, entries: list[dict[str, Any]]) -> None:
        self.entries = entries

    def events(self, method: str) -> list[dict[str, Any]]:
        return [{"entry": entry} for entry in self.entries] if method == "Log.entryAdded" else []


NOT_FOUND = "Failed to load resource: the server responded with a status of 404"


def _error(url: str, text: str, source: str = "network", level: str = "error") -> dict[str, Any]:
    return {"source": source, "level": level, "url": url, "text": text}


def test_each_url_once_with_its_reason_and_never_the_composition_s_own_files() -> None:
    page = _LoggedPage([
        _error("https://cdn.example/a.png", "Failed to load resource: net::ERR_NAME_NOT_RESOLVED"),
        _error("https://cdn.example/b.css", f"{NOT_FOUND} (Not Found)"),
        _error("https://cdn.example/a.png", "Failed to load resource: net::ERR_NAME_NOT_RESOLVED"),
        _error("http://127.0.0.1:4000/typo.png", "Failed to load resource: the server responded with a status of 404"),
        _error("https://cdn.example/c.js", "Uncaught TypeError", source="javascript"),
        _error("https://cdn.example/d.png", "a warning", level="warning"),
        _error("", "Failed to load resource: net::ERR_FAILED"),
    ])  # fmt: skip
    assert failed_loads(page, "http://127.0.0.1:4000/") == [  # type: ignore[arg-type]
        "https://cdn.example/a.png (net::ERR_NAME_NOT_RESOLVED)",
        "https://cdn.example/b.css (HTTP 404)",
    ]


def test_the_warning_names_five_then_counts() -> None:
    assert failed_loads_warning([]) is None
    urls = [f"https://cdn.example/{n}.png (HTTP 404)" for n in range(7)]
    line = failed_loads_warning(urls + urls[:2])
    assert line is not None and line.startswith("warning: the page could not load https://cdn.example/0.png")
    assert "4.png" in line and "5.png" not in line and "and 2 more" in line
