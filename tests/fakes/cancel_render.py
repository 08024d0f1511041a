"""A render for worker processes that blocks until its cancel event is set, leaving files that say what
happened: `<HELIOS_TEST_EVENTS>/started-<start frame>` when it begins, `cancelled-<start frame>` when its
cancel event (the job's cancel marker, a caller gone) stopped it. Used where a test must see a remote
invocation stop because of a cancel, not because a timer ran out."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from helios_kit.errors import RenderError

#: Hang guard only: a render that is never cancelled fails after this long (the test fails with it).
_GUARD_S = 600.0


def wait_for_cancel_render(config: Any, *, start_frame: int, cancel: threading.Event | None, **_: Any) -> Any:
    events = Path(os.environ["HELIOS_TEST_EVENTS"])
    events.mkdir(parents=True, exist_ok=True)
    (events / f"started-{start_frame}").write_text("1")
    if cancel is not None and cancel.wait(_GUARD_S):
        (events / f"cancelled-{start_frame}").write_text("1")
        raise RenderError("render cancelled")
    raise RenderError("never cancelled")
