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
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from helios_kit.spec import Chunk, JobSpec


class WireModel(BaseModel):
    """camelCase on the wire (JSON payloads between clients and workers), snake_case in Python."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class ChunkContext(WireModel):
    """Where a chunk's inputs come from and where its output must go."""

    job_url: str = Field(description="Where a worker loads the spec: local path, http(s):// or s3:// URL.")
    job_dir: str = Field(description="Local working directory: the job file's folder, or cwd for a URL.")
    store_url: str = Field(description="Artifact store (folder or fsspec URL) the chunk is committed to.")
    force: bool = Field(False, description="Render even when the store already holds a complete chunk.")


class WorkerRequest(WireModel):
    """The payload a stateless worker receives: `{"jobUrl": ..., "chunkId": ..., "store": ...}`."""

    job_url: str
    chunk_id: int
    store: str | None = None
    force: bool = False


class WorkerResult(WireModel):
    """What running one chunk (or the merge) produced."""

    chunk_id: int | None = None
    exit_code: int
    stdout: str = ""
    stderr: str = ""
    output_file: str | None = None
    duration_ms: float = 0.0
    skipped: bool = Field(False, description="The store already held a complete chunk; nothing rendered.")
    retryable: bool = Field(True, description="False for errors a retry cannot fix (bad spec, unknown chunk).")
    frames: int = 0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class BackendOptions(BaseModel):
    """Base of a backend's options; each field becomes `--field-name` on `helios job run`."""

    model_config = ConfigDict(extra="forbid")


class Backend(ABC):
    """Runs chunks somewhere. Subclasses set `name`, `Options` and implement `run_chunk`."""

    name: ClassVar[str] = "?"
    Options: ClassVar[type[BackendOptions]] = BackendOptions
    #: How the executor runs many chunks at once: worker processes (CPU-bound local rendering) or threads
    #: (remote invocations that mostly wait on the network).
    parallelism: ClassVar[Literal["process", "thread"]] = "thread"

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
        """Render `chunk` and commit it to `context.store_url`; never raise for a chunk's own failure."""

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

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release clients, pools and processes."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
