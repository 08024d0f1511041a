"""Errors a user can cause. The CLI prints them as one line and exits non-zero, never with a traceback."""

from __future__ import annotations


def describe(error: BaseException) -> str:
    """An exception in one line: `Type: first line of its message` (just `Type` when it has none)."""
    name = type(error).__name__
    text = str(error).strip()
    if not text:
        return name
    first = text.splitlines()[0]
    return first if first.startswith(name) else f"{name}: {first}"


class HeliosError(Exception):
    """Base for every error that is the user's to fix (bad spec, missing file, bad URL, unknown name).

    `retryable` is data, never parsed from the message: whether another attempt at the same work may
    succeed. Each class sets its default; a raise site that knows better passes `retryable=`.
    """

    exit_code = 2
    retryable = False

    def __init__(self, *args: object, retryable: bool | None = None) -> None:
        super().__init__(*args)
        if retryable is not None:
            self.retryable = retryable


class SpecError(HeliosError):
    """A JobSpec that does not parse or breaks an invariant; the message names the field path."""


class LoaderError(HeliosError):
    """A spec source that cannot be read: missing file, HTTP status, timeout, size cap, unsupported scheme.

    Retryable by default (a network blip); raise sites of permanent faults (not found, 4xx, too large,
    unsupported scheme, access denied) pass `retryable=False`."""

    retryable = True


class UnknownNameError(HeliosError):
    """A backend, loader or repository name that no plugin registered; the message lists the known names."""


class RenderError(HeliosError):
    """A render that cannot proceed: no browser, no ffmpeg, a composition that throws or never gets ready."""

    exit_code = 1
    #: Whether another attempt may succeed. The composition's own faults are deterministic: it would throw
    #: again at the same frame, so retrying them only wastes time.
    retryable = False


class BrowserFault(RenderError):
    """The browser failed for reasons outside the composition (a lost frame, a crash, a stalled DevTools
    call, often under heavy load): another attempt may well succeed."""

    retryable = True


class StoreError(HeliosError):
    """The artifact store cannot be read or written (retryable unless the raise site says otherwise)."""

    exit_code = 1
    retryable = True


class JobNotFoundError(HeliosError):
    """A job id the repository does not know."""
