"""The dashboard's media: a still of a finished chunk (ffmpeg, from its output in the store) and a local
file of a merged output to serve with HTTP ranges. Remote outputs (any fsspec URL) are copied into the
dashboard's cache once per (URL, size, modification); a thumbnail is made once per output version.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from pathlib import Path

from helios_kit.composition.locations import is_local, local_path
from helios_kit.errors import StoreError

#: Width of a chunk's thumbnail (height keeps the aspect).
THUMB_WIDTH = 160


class MediaCache:
    """Local copies and thumbnails under one folder (a temporary one by default)."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder or Path(tempfile.mkdtemp(prefix="helios-dashboard-"))
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def local_file(self, location: str) -> Path:
        """A local file holding `location` (itself when local); StoreError when it is not there."""
        if is_local(location):
            path = local_path(location)
            if not path.is_file():
                raise StoreError(f"{location}: not found")
            return path
        import fsspec

        fs, path = fsspec.core.url_to_fs(location)
        try:
            info = fs.info(path)
        except FileNotFoundError:
            raise StoreError(f"{location}: not found") from None
        version = f"{location}|{info.get('size')}|{info.get('mtime') or info.get('LastModified') or info.get('ETag')}"
        target = self.folder / f"{_digest(version)}{Path(path).suffix}"
        if not target.exists():
            partial = target.with_name(f"{target.name}.tmp-{os.getpid()}-{threading.get_ident()}")
            fs.get_file(path, str(partial))
            os.replace(partial, target)
        return target

    def thumbnail(self, location: str) -> Path:
        """A JPEG of the first frame of the video at `location` (made with ffmpeg, then kept)."""
        import ffmpeg

        from helios_kit.render.encode import find_ffmpeg

        source = self.local_file(location)
        stat = source.stat()
        target = self.folder / f"thumb-{_digest(f'{source}|{stat.st_size}|{stat.st_mtime_ns}')}.jpg"
        if target.exists():
            return target
        partial = target.with_name(f"{target.stem}.tmp-{threading.get_ident()}.jpg")
        try:
            (
                ffmpeg.input(str(source))
                .output(str(partial), vframes=1, vf=f"scale={THUMB_WIDTH}:-2", **{"q:v": 4})
                .overwrite_output()
                .run(cmd=find_ffmpeg(), capture_stdout=True, capture_stderr=True)
            )
        except ffmpeg.Error as error:
            last = (error.stderr or b"").decode(errors="replace").strip().splitlines()[-1:] or ["ffmpeg failed"]
            raise StoreError(f"{location}: no thumbnail: {last[0]}") from None
        os.replace(partial, target)
        return target


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]
