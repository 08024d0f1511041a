"""A job resolved for execution: its spec, where it came from, its artifact store and its composition.

:class:`JobContext` is what the run module (:mod:`helios_kit.run`) prepares once per run and what decides
completeness: a chunk is complete when the store holds its output with a done-manifest for the chunk's
digest whose recorded dependencies are all unchanged (docs/ARCHITECTURE.md, "Incrementality"); the merge is
up to date when the merged output's manifest records its inputs' manifests.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from helios_kit.backends.base import ChunkContext
from helios_kit.composition import (
    DependencyChecker,
    ResolvedComposition,
    chunk_digest,
    config_digest,
    default_store_url,
    is_http,
    is_local,
    resolve_composition,
)
from helios_kit.spec import Chunk, JobSpec
from helios_kit.store import ArtifactStore, DoneManifest, manifest_current

#: doit's cache for `helios job run`, per job, under the job dir's `.helios/`.
STATE_DIR = ".helios"


@dataclass
class JobContext:
    """A job resolved for execution: its spec, where it came from, its store and its composition."""

    spec: JobSpec
    job_url: str
    job_dir: Path
    store: ArtifactStore
    composition: ResolvedComposition
    force: bool = False
    workspace: Path | None = None
    _digests: dict[int, str] = field(default_factory=dict)
    _checker: DependencyChecker | None = None

    @property
    def input_location(self) -> str:
        return self.composition.input_location

    @property
    def checker(self) -> DependencyChecker:
        """One dependency checker per run: each file hashed and each URL fetched at most once."""
        if self._checker is None:
            self._checker = self.composition.checker()
        return self._checker

    def close(self) -> None:
        """Remove the downloaded copy of a remote composition, if any."""
        if self.workspace is not None:
            shutil.rmtree(self.workspace, ignore_errors=True)
            self.workspace = None

    @classmethod
    def prepare(
        cls,
        spec: JobSpec,
        job_url: str,
        job_dir: str | Path,
        *,
        store_url: str | None = None,
        force: bool = False,
    ) -> JobContext:
        """Resolve the composition (as the workers do, see helios_kit.composition) and the store (default:
        the job dir)."""
        job_dir = Path(job_dir)
        workspace = Path(tempfile.mkdtemp(prefix="helios-resolve-"))
        try:
            composition = resolve_composition(spec, job_url, workspace, job_dir=job_dir)
        except BaseException:
            shutil.rmtree(workspace, ignore_errors=True)
            raise
        downloaded = any(workspace.iterdir())  # an fsspec composition: kept for the merge's audio, see close()
        if not downloaded:
            shutil.rmtree(workspace, ignore_errors=True)
        if store_url is None:  # a local job: its folder; http(s): the current folder; s3:// etc.: the job's folder
            store_url = str(job_dir) if is_local(job_url) or is_http(job_url) else default_store_url(job_url)
        return cls(
            workspace=workspace if downloaded else None,
            spec=spec,
            job_url=job_url,
            job_dir=job_dir,
            store=ArtifactStore(store_url),
            composition=composition,
            force=force,
        )

    def chunk_context(self) -> ChunkContext:
        return ChunkContext(job_url=self.job_url, job_dir=str(self.job_dir), store_url=self.store.url, force=self.force)

    def digest(self, chunk: Chunk) -> str:
        if chunk.id not in self._digests:
            self._digests[chunk.id] = chunk_digest(self.spec, chunk)
        return self._digests[chunk.id]

    def chunk_complete(self, chunk: Chunk) -> bool:
        return self.store.is_complete(chunk.output_file, self.digest(chunk), self.checker)

    def input_manifests(self) -> list[DoneManifest | None]:
        """The manifests of the merge inputs (None where a chunk is not complete)."""
        manifests: list[DoneManifest | None] = []
        for chunk in self.spec.chunks:
            manifest = self.store.read_manifest(chunk.output_file)
            if manifest is None or not manifest_current(manifest, self.digest(chunk), self.checker):
                manifests.append(None)
            else:
                manifests.append(manifest)
        return manifests

    def merge_digest(self, manifests: list[DoneManifest | None]) -> str | None:
        """Hash of the inputs' manifests (digest, bytes) and the output settings; None when one is missing."""
        if any(manifest is None for manifest in manifests):
            return None
        payload = {
            "config": config_digest(self.spec.config),
            "output": self.spec.merge.output_file,
            "inputs": [[m.digest, m.sha256, m.size] for m in manifests if m is not None],
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def missing_chunks(self, manifests: list[DoneManifest | None]) -> list[int]:
        return [chunk.id for chunk, manifest in zip(self.spec.chunks, manifests, strict=True) if manifest is None]
