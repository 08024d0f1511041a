"""What a page could not load: the network errors Chromium logs (its Log domain), one line per URL.

A composition whose image, font, stylesheet or fetch fails (an unreachable host, a 404 from a CDN, a URL
the network guard blocks) still renders, without it. The render names those URLs, so nobody ships that
video unawares. The composition's own files are left out here: the composition server's record already
names those its folder lacks (:func:`helios_kit.composition.deps.missing_files_warning`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from helios_kit.render.browser import Page

#: The Log domain's text for a failed resource ("Failed to load resource: net::ERR_..." or "... status of 404").
_PREFIX = "Failed to load resource: "
_STATUS = re.compile(r"status of (\d{3})")
#: URLs named in a warning before "and N more".
SHOWN = 5


def failed_loads(page: Page, own_base_url: str | None) -> list[str]:
    """'<url> (<reason>)' for each resource `page` could not load, once each in order, leaving out the URLs
    of the render's own composition server (`own_base_url`)."""
    seen: dict[str, str] = {}
    for event in page.events("Log.entryAdded"):
        entry = event.get("entry") or {}
        url = str(entry.get("url") or "")
        if entry.get("source") != "network" or entry.get("level") != "error" or not url or url in seen:
            continue
        if own_base_url and url.startswith(own_base_url):
            continue
        seen[url] = _reason(str(entry.get("text") or ""))
    return [f"{url} ({reason})" for url, reason in seen.items()]


def _reason(text: str) -> str:
    status = _STATUS.search(text)
    return f"HTTP {status.group(1)}" if status else text.removeprefix(_PREFIX).strip() or "failed"


def failed_loads_warning(failed: Iterable[str]) -> str | None:
    """One line naming the resources a render's pages could not load, or None when there were none."""
    unique = list(dict.fromkeys(failed))
    if not unique:
        return None
    named = ", ".join(unique[:SHOWN]) + (f" and {len(unique) - SHOWN} more" if len(unique) > SHOWN else "")
    return f"warning: the page could not load {named}: the video renders without them"
