"""Seam checks: does a chunk that fast-forwarded to its first frame show what playing through shows?

A chunk of a job renders frame N by fast-forwarding from 0 without capture; the chunk before it reaches N
by playing every frame. With `verify.seams` in the JobSpec (or `helios job run --verify-seams`) each chunk
keeps two images beside its output in the store, committed before the chunk's own manifest:

* `<output>.seam-head.<png|jpg>`: its first frame, reached by fast-forward (no extra rendering);
* `<output>.seam-tail.<png|jpg>`: one frame more than its range, played through (the one extra frame a
  chunk costs; the job's last chunk has no neighbour and renders none).

Before the merge, :func:`check_seams` compares chunk i's tail with chunk i+1's head (PSNR over RGB, by
ffmpeg's `psnr` filter). Identical pixels give identical capture bytes (infinite PSNR); a seam below
`verify.minPsnr` fails the run with one line naming the seam, the frame and the PSNR.
"""

from __future__ import annotations

import math
import re
import subprocess
import tempfile
from pathlib import Path

from pydantic import BaseModel

from helios_kit.errors import RenderError
from helios_kit.spec import Chunk, JobSpec
from helios_kit.store import ArtifactStore

HEAD = "seam-head"
TAIL = "seam-tail"
SUFFIXES = (".png", ".jpg")


class SeamMismatch(RenderError):
    """Two chunks disagree at their boundary: the composition is not deterministic there (not retryable)."""

    retryable = False


class SeamResult(BaseModel):
    """One boundary: chunk `before`'s played-through frame `frame` vs chunk `after`'s fast-forwarded one."""

    before: int
    after: int
    frame: int
    psnr: float

    def line(self) -> str:
        shown = "inf" if math.isinf(self.psnr) else f"{self.psnr:.1f}"
        return f"seam {self.before}|{self.after} at frame {self.frame}: PSNR {shown} dB"


def seam_rel(output_rel: str, kind: str, suffix: str) -> str:
    """Where a chunk's seam image lives in the store, beside its output."""
    return f"{output_rel}.{kind}{suffix}"


def wanted(spec: JobSpec, chunk: Chunk) -> tuple[bool, bool]:
    """(head, tail): which seam images `chunk` must keep (the first chunk has no head, the last no tail)."""
    index = next(i for i, candidate in enumerate(spec.chunks) if candidate.id == chunk.id)
    return index > 0, index < len(spec.chunks) - 1


def find_image(store: ArtifactStore, output_rel: str, kind: str) -> str | None:
    """The store path of a chunk's seam image of `kind`, or None when it has none."""
    for suffix in SUFFIXES:
        rel = seam_rel(output_rel, kind, suffix)
        if store.exists(rel):
            return rel
    return None


def has_images(store: ArtifactStore, spec: JobSpec, chunk: Chunk) -> bool:
    """Whether the store holds every seam image `chunk` must keep (a chunk rendered without the check
    has none: it renders again when the check is on)."""
    head, tail = wanted(spec, chunk)
    return (not head or find_image(store, chunk.output_file, HEAD) is not None) and (
        not tail or find_image(store, chunk.output_file, TAIL) is not None
    )


def commit_images(store: ArtifactStore, output_rel: str, files: dict[str, str]) -> None:
    """Put a render's seam images (`{"head"|"tail": local path}`) beside `output_rel`, each atomically."""
    for kind, local in files.items():
        path = Path(local)
        rel = seam_rel(output_rel, HEAD if kind == "head" else TAIL, path.suffix)
        store.write_bytes(rel, path.read_bytes())


_PSNR = re.compile(r"average:(inf|[0-9.]+)")


def psnr(first: Path, second: Path) -> float:
    """PSNR (dB) of two images of the same size over RGB; inf when identical."""
    from helios_kit.render.encode import find_ffmpeg

    if first.read_bytes() == second.read_bytes():
        return math.inf
    argv = [find_ffmpeg(), "-v", "info", "-nostdin", "-i", str(first), "-i", str(second)]
    argv += ["-lavfi", "[0:v]format=rgb24[a];[1:v]format=rgb24[b];[a][b]psnr", "-f", "null", "-"]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    found = _PSNR.findall(done.stderr)
    if done.returncode != 0 or not found:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RenderError(f"seam check: cannot compare {first.name} and {second.name}: {last}")
    return math.inf if found[-1] == "inf" else float(found[-1])


def compare(store: ArtifactStore, spec: JobSpec, before: Chunk, after: Chunk, work: Path) -> SeamResult:
    """PSNR of `before`'s tail and `after`'s head (RenderError when an image is missing)."""
    images = []
    for chunk, kind in ((before, TAIL), (after, HEAD)):
        rel = find_image(store, chunk.output_file, kind)
        if rel is None:
            raise RenderError(f"seam check: chunk {chunk.id} has no {kind} image; run it again with --force")
        images.append(store.fetch(rel, work / f"{chunk.id}-{kind}{Path(rel).suffix}"))
    return SeamResult(before=before.id, after=after.id, frame=after.start_frame, psnr=psnr(*images))


def check_seams(store: ArtifactStore, spec: JobSpec) -> list[SeamResult]:
    """Compare every chunk boundary; raise SeamMismatch (one line) at the first below `verify.minPsnr`."""
    results = []
    with tempfile.TemporaryDirectory(prefix="helios-seams-") as work:
        for before, after in zip(spec.chunks, spec.chunks[1:], strict=False):
            result = compare(store, spec, before, after, Path(work))
            if result.psnr < spec.verify.min_psnr:
                raise SeamMismatch(
                    f"{result.line()} < {spec.verify.min_psnr:g}: chunk {after.id} (fast-forwarded) differs "
                    f"from chunk {before.id} (played through); the composition is not deterministic there"
                )
            results.append(result)
    return results
