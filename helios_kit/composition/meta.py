"""A composition's entry (HTML file, folder with index.html, or http(s) URL) and the settings it declares.

A composition may declare its intended settings in its HTML head::

    <meta name="helios" content='{"width": 1280, "height": 720, "fps": 30, "duration": 4, "seed": 7}'>

Command-line flags override them; the defaults apply where neither says.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from helios_kit.composition.locations import is_http, is_local, local_path
from helios_kit.errors import HeliosError


class CompositionMeta(BaseModel):
    """Settings a composition declares for itself (all optional)."""

    model_config = ConfigDict(extra="ignore")

    width: int | None = Field(None, gt=0)
    height: int | None = Field(None, gt=0)
    fps: float | None = Field(None, gt=0)
    duration: float | None = Field(None, gt=0)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    #: Default props (a JSON object); `--props` overrides them key by key.
    props: dict[str, Any] | None = None


class CompositionInput(BaseModel):
    """A resolved composition: an absolute HTML file path, or a URL."""

    location: str
    is_url: bool
    meta: CompositionMeta = CompositionMeta()

    @property
    def root(self) -> Path | None:
        """The folder served for a local composition (its HTML file's folder)."""
        return None if self.is_url else Path(self.location).parent


class _MetaFinder(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.content: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "meta" and self.content is None:
            values = dict(attrs)
            if (values.get("name") or "").lower() == "helios":
                self.content = values.get("content") or ""


def read_meta(html: str, source: str) -> CompositionMeta:
    """Parse the `<meta name="helios">` tag of an HTML document (absent → empty meta)."""
    finder = _MetaFinder()
    finder.feed(html)
    if finder.content is None:
        return CompositionMeta()
    try:
        return CompositionMeta.model_validate(json.loads(finder.content))
    except (ValueError, ValidationError, RecursionError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise HeliosError(f'{source}: invalid <meta name="helios"> content: {first}') from None


def locate_entry(ref: str) -> tuple[str | None, Path | None]:
    """`(url, None)` for an http(s) composition, `(None, html_file)` for a local one (a folder means its
    index.html); HeliosError naming the reference when it is missing or of another scheme."""
    if is_http(ref):
        return ref, None
    if not is_local(ref):
        raise HeliosError(f"unsupported composition location {ref!r}: use a local path or an http(s):// URL")
    path = local_path(ref)
    if path.is_dir():
        index = path / "index.html"
        if not index.is_file():
            raise HeliosError(f"composition folder has no index.html: {ref}")
        return None, index.resolve()
    if not path.is_file():
        raise HeliosError(f"composition not found: {ref}")
    return None, path.resolve()


def resolve_input(ref: str) -> CompositionInput:
    """Resolve INPUT for `helios render`: a URL as is; a folder to its index.html; a file to its absolute
    path, with the settings its meta tag declares."""
    url, html_file = locate_entry(ref)
    if url is not None:
        return CompositionInput(location=url, is_url=True)
    assert html_file is not None
    try:
        html = html_file.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise HeliosError(f"cannot read composition {ref}: {error.strerror or error}") from None
    return CompositionInput(location=str(html_file), is_url=False, meta=read_meta(html, ref))
