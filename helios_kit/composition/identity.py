"""A chunk's identity: the settings, frame range and entry point that decide its pixels, as one digest.

Content is not part of the digest: what a chunk's render loaded is recorded as its dependency list
(:mod:`helios_kit.composition.deps`) and checked file by file, so files the page never loaded never count.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import PurePosixPath

from helios_kit.spec import MANIFEST_SUFFIX, Chunk, JobSpec, RenderConfig

#: Bumped whenever the digest's inputs change meaning, so old manifests are never taken for complete.
IDENTITY_VERSION = 2


def job_outputs(spec: JobSpec) -> tuple[str, ...]:
    """Paths a job writes (relative to its directory): chunk outputs, their folders, the merged output."""
    paths = {spec.merge.output_file, spec.config.output}
    for chunk in spec.chunks:
        paths.add(chunk.output_file)
        parent = PurePosixPath(chunk.output_file).parent
        if str(parent) != ".":
            paths.add(str(parent))
    paths |= {path + MANIFEST_SUFFIX for path in list(paths)}
    return tuple(sorted(paths))


def config_digest(config: RenderConfig) -> str:
    """Hash of the settings that change pixels or encoding, the entry point (`input`) and everything else
    in the config but the output name and the job's range (props and seed included once they exist)."""
    data = config.model_dump(mode="json", by_alias=True, exclude={"output", "start_frame", "frame_count"})
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def chunk_digest(spec: JobSpec, chunk: Chunk) -> str:
    """Hash of a chunk's settings digest and frame range: what its done-manifest must record."""
    payload = {
        "v": IDENTITY_VERSION,
        "config": config_digest(spec.config),
        "startFrame": chunk.start_frame,
        "frameCount": chunk.frame_count,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
