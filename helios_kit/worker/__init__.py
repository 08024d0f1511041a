"""Stateless workers: run one chunk of a job from `{"jobUrl", "chunkId", "store"}` (CLI, Lambda, Cloud Run)."""

from __future__ import annotations

from helios_kit.worker.runtime import WorkerRuntime

__all__ = ["WorkerRuntime"]
