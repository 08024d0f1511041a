"""The backend contract: run one chunk (and optionally the merge) and report a WorkerResult.

A backend only executes. Retries, concurrency, progress and the decision of what is already done belong
to the executor and the artifact store; a backend honours the cancellation event and the timeout it is
given. Backend-specific settings are a pydantic `Options` model; `helios job run` turns each field into a
command-line option (`function_name` → `--function-name`), so a third-party backend gets its flags for free.
"""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from helios_kit.pricing import Pricing
from helios_kit.protocol import WireModel, WorkerRequest, WorkerResult, WorkerStatus
from helios_kit.spec import Chunk, JobSpec

#: The wire models live in helios_kit.protocol; a backend (the README's plugin example) imports them here.
__all__ = [
    "Backend",
    "BackendOptions",
    "ChunkContext",
    "WireModel",
    "WorkerRequest",
    "WorkerResult",
    "WorkerStatus",
]


class ChunkContext(WireModel):
    """Where a chunk's inputs come from and where its output must go."""

    job_url: str = Field(description="Where a worker loads the spec: local path, http(s):// or s3:// URL.")
    job_dir: str = Field(description="Local working directory: the job file's folder, or cwd for a URL.")
    store_url: str = Field(description="Artifact store (folder or fsspec URL) the chunk is committed to.")
    force: bool = Field(False, description="Render even when the store already holds a complete chunk.")
    verify_seams: bool = Field(False, description="Keep each chunk's seam images (helios_kit.seams).")

    def worker_request(self, chunk: Chunk) -> WorkerRequest:
        """The payload a worker needs to render `chunk` in this context."""
        return WorkerRequest(
            job_url=self.job_url,
            chunk_id=chunk.id,
            store=self.store_url,
            force=self.force,
            verify_seams=self.verify_seams,
        )


class BackendOptions(BaseModel):
    """Base of a backend's options; each field becomes `--field-name` on `helios job run`."""

    model_config = ConfigDict(extra="forbid")


class Backend(ABC):
    """Runs chunks somewhere. Subclasses set `name`, `Options` and implement `run_chunk`."""

    name: ClassVar[str] = "?"
    Options: ClassVar[type[BackendOptions]] = BackendOptions
    #: True when `run_chunk` takes an `on_frames` keyword (a FramesCallback) and calls it with the
    #: attempt's frames so far while it runs; the executor passes it only to such backends.
    reports_frames: ClassVar[bool] = False
    #: Extra attempts for a chunk when the run does not say (`helios job run --retries`).
    default_retries: ClassVar[int] = 2
    #: Straggler backups when the run does not say (`--backups/--no-backups`): on where a second attempt runs
    #: on other capacity (remote backends); a backend whose attempts share this machine's cores sets False.
    backups_by_default: ClassVar[bool] = True

    def __init__(self, options: BackendOptions | None = None) -> None:
        self.options = options if options is not None else self.Options()

    @abstractmethod
    def run_chunk(
        self,
        spec: JobSpec,
        chunk: Chunk,
        context: ChunkContext,
        *,
        cancel: threading.Event,
        timeout: float | None = None,
    ) -> WorkerResult:
        """Render `chunk` and commit it to `context.store_url`; never raise for a chunk's own failure.

        Report how it ended as the result's `status` (`cancelled` when `cancel` was set, `timed_out` when
        `timeout` passed) and whether another attempt may help as its `retryable`."""

    def run_merge(
        self,
        spec: JobSpec,
        context: ChunkContext,
        *,
        cancel: threading.Event,
        timeout: float | None = None,
    ) -> WorkerResult | None:
        """Merge on the backend; `None` (the default) means the merge runs locally."""
        return None

    def default_concurrency(self) -> int:
        return os.cpu_count() or 1

    @classmethod
    def pricing(cls) -> Pricing | None:
        """What running chunks here costs (helios_kit.pricing); None (the default): nothing per chunk, the
        workers are this machine's. A classmethod: estimates ask without building clients."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release clients, pools and processes."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
