"""Stateless workers: run one chunk of a job from `{"jobUrl", "chunkId", "store"}` (CLI, Lambda, Cloud Run)."""

from __future__ import annotations

from helios_kit.worker.runtime import ResolvedComposition, WorkerRuntime, default_store_url, resolve_composition

__all__ = ["ResolvedComposition", "WorkerRuntime", "default_store_url", "resolve_composition"]
