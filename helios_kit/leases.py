"""Chunk leases in the artifact store: which runner is rendering a chunk right now (docs/ARCHITECTURE.md,
"Leases").

Runners that share a store (two `helios job run` on one machine, or on several machines sharing an S3
bucket) take a lease on a chunk before rendering it, so no chunk is rendered twice. A lease is a small JSON
object next to the chunk's output, `<output>.lease-<generation>`, naming its holder (host, pid, run id) and
its expiry; the holder renews it while the chunk renders (:class:`LeaseKeeper`, a heartbeat thread). The
highest generation present is the chunk's lease:

* no lease, or the highest one released or expired: the chunk is free; a runner takes it by creating the
  next generation with an atomic create-if-absent (``O_EXCL`` on a local folder, ``IfNoneMatch='*'`` on S3,
  ``ifGenerationMatch=0`` on GCS). Of two runners racing for the same generation exactly one wins, so taking
  over an expired lease needs no delete and no compare-and-swap: generations only grow.
* a runner that was killed stops renewing; its lease expires after its TTL and the next runner takes over.
* a holder that finds a newer generation while renewing has lost its lease (it stalled past its expiry and
  someone took over): :class:`LeaseKeeper` sets its ``lost`` event, which cancels the attempt.
* after a commit the holder deletes its generations (on an object store, batched: :meth:`LeaseStore.flush`,
  one request for up to :data:`DELETE_BATCH` chunks and at the end of the run); after a failure it writes a
  released generation.

Expiry is wall-clock time (UTC): runners on several machines need roughly synchronized clocks (a skew well
under the TTL). A run's holder identity is :class:`LeaseHolder`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from helios_kit.errors import StoreError, describe
from helios_kit.protocol import WireModel
from helios_kit.store import ArtifactStore, is_s3, object_exists, read_bytes

log = logging.getLogger("helios.leases")

#: Seconds a lease lasts unless renewed (the holder renews every third of it).
DEFAULT_LEASE_TTL_S = 30.0
#: Environment variable overriding the default TTL (tests use a short one).
LEASE_TTL_ENV = "HELIOS_LEASE_TTL"
LEASE_MARK = ".lease-"
#: Leases of committed chunks deleted together in one request on an object store (see LeaseStore.flush).
DELETE_BATCH = 100


def default_lease_ttl() -> float:
    """`HELIOS_LEASE_TTL` when set to a positive number, else 30 s."""
    try:
        value = float(os.environ.get(LEASE_TTL_ENV, "") or DEFAULT_LEASE_TTL_S)
    except ValueError:
        return DEFAULT_LEASE_TTL_S
    return value if value > 0 else DEFAULT_LEASE_TTL_S


class LeaseHolder(BaseModel):
    """Who holds a lease: one run of one process on one host."""

    host: str = Field(default_factory=socket.gethostname)
    pid: int = Field(default_factory=os.getpid)
    run_id: str = Field(default_factory=lambda: uuid.uuid4().hex[:12])

    def __str__(self) -> str:
        return f"{self.host}:{self.pid} (run {self.run_id})"


class Lease(WireModel):
    """One generation of a chunk's lease."""

    output: str
    generation: int
    holder: LeaseHolder
    expires_at: datetime
    released: bool = False

    def live(self, now: datetime | None = None) -> bool:
        return not self.released and self.expires_at > (now or datetime.now(UTC))


def held_at(output_path: str) -> bool:
    """Whether a live lease sits beside the chunk output at local path `output_path` (the dashboard's
    `leased` state): the highest generation, not released and not expired (one being written counts)."""
    folder, name = os.path.split(output_path)
    prefix = name + LEASE_MARK
    try:
        generations = sorted(entry for entry in os.listdir(folder or ".") if entry.startswith(prefix))
    except OSError:
        return False
    if not generations:
        return False
    try:
        with open(os.path.join(folder, generations[-1]), "rb") as file:
            return Lease.model_validate_json(file.read()).live()
    except FileNotFoundError:  # released and removed since the listing
        return False
    except (OSError, ValidationError):  # being written
        return True


def _now() -> datetime:
    return datetime.now(UTC)


class LeaseStore:
    """Leases on a store's outputs for one holder, with a TTL."""

    def __init__(self, store: ArtifactStore, holder: LeaseHolder | None = None, ttl: float | None = None) -> None:
        self.store = store
        self.holder = holder or LeaseHolder()
        self.ttl = ttl or default_lease_ttl()
        self._doomed: list[str] = []  # leases of committed chunks to delete together (object stores)
        self._doomed_lock = threading.Lock()
        #: Renews the leases of this store's keepers, all on one thread (started with the first keeper).
        self.renewer = LeaseRenewer(self)

    # -- names -------------------------------------------------------------------------------------------
    def _path(self, rel: str, generation: int) -> str:
        return self.store.path(f"{rel}{LEASE_MARK}{generation:06d}")

    def generations(self, rel: str) -> list[int]:
        """The lease generations present for `rel` (one listing of its folder, or of its prefix on S3)."""
        base = self.store.path(rel) + LEASE_MARK
        folder, _, name = base.rpartition("/")
        try:
            if self.store.is_local:
                names = os.listdir(folder) if os.path.isdir(folder) else []
            else:
                self.store.refresh()
                names = [path.rpartition("/")[2] for path in self._list_prefix(folder, name)]
        except FileNotFoundError:
            return []
        except Exception as error:
            raise StoreError(f"store {self.store.url}: cannot list leases of {rel}: {describe(error)}") from None
        found = []
        for entry in names:
            suffix = entry[len(name) :] if entry.startswith(name) else ""
            if suffix.isdigit():
                found.append(int(suffix))
        return sorted(found)

    def _list_prefix(self, folder: str, name: str) -> list[str]:
        fs = self.store.fs
        if is_s3(fs):  # one ListObjectsV2 with a prefix, not the whole folder
            return list(fs.find(folder, prefix=name))
        if _is_gcs(fs):  # objects.list with the lease prefix (gcsfs keeps a prefix listing out of its cache)
            return list(fs.find(folder, prefix=name))
        if not fs.exists(folder):
            return []
        return [path for path in fs.ls(folder, detail=False) if path.rpartition("/")[2].startswith(name)]

    # -- reading -----------------------------------------------------------------------------------------
    def read(self, rel: str, generation: int) -> Lease | None:
        """The lease of `generation` (None when gone); one being written counts as held for a TTL."""
        path = self._path(rel, generation)
        try:
            data = read_bytes(self.store.fs, path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except Exception as error:
            raise StoreError(f"store {self.store.url}: cannot read lease {path}: {describe(error)}") from None
        try:
            return Lease.model_validate_json(data)
        except ValidationError:  # an O_EXCL lease whose content is still being written: held, for now
            return Lease(
                output=rel,
                generation=generation,
                holder=LeaseHolder(host="?", pid=0, run_id="?"),
                expires_at=_now() + timedelta(seconds=self.ttl),
            )

    def current(self, rel: str) -> Lease | None:
        """The highest generation's lease of `rel`, if any."""
        generations = self.generations(rel)
        return self.read(rel, generations[-1]) if generations else None

    # -- taking, renewing, giving back -------------------------------------------------------------------
    def acquire(self, rel: str) -> Lease | None:
        """Take the lease of `rel` when it is free (none, released or expired); None when another holder has
        a live one or wins the race for the next generation. The usual case, a chunk nobody leased, costs
        one create (generation 0 exists whenever any generation does: generations are removed from the top
        down, so a listing is needed only when the create fails)."""
        lease = Lease(output=rel, generation=0, holder=self.holder, expires_at=_now() + timedelta(seconds=self.ttl))
        if self._create(self._path(rel, 0), _encode(lease)):
            return lease
        generations = self.generations(rel)
        if generations:
            top = self.read(rel, generations[-1])
            if top is not None and top.live():
                return None
        generation = generations[-1] + 1 if generations else 0
        lease = Lease(
            output=rel, generation=generation, holder=self.holder, expires_at=_now() + timedelta(seconds=self.ttl)
        )
        if not self._create(self._path(rel, generation), _encode(lease)):
            return None
        return lease

    def renew(self, lease: Lease) -> bool:
        """Push `lease`'s expiry a TTL ahead; False when it was lost (a newer generation exists)."""
        if object_exists(self.store.fs, self._path(lease.output, lease.generation + 1)):
            return False
        lease.expires_at = _now() + timedelta(seconds=self.ttl)
        self._overwrite(self._path(lease.output, lease.generation), _encode(lease))
        return True

    def flush(self) -> None:
        """Delete the leases of committed chunks queued by :meth:`release` (one batch request per thousand on
        an object store). The run calls it when its chunks are done; until then a queued lease only tells
        another runner that the chunk is taken, and the chunk's manifest that it is done."""
        with self._doomed_lock:
            paths, self._doomed = self._doomed, []
        if not paths:
            return
        try:
            self.store.fs.rm(paths)
        except FileNotFoundError:
            pass
        except Exception as error:  # left behind, they expire; the next run of the chunk removes them
            log.warning("store %s: cannot remove %d leases of committed chunks: %s", self.store.url, len(paths), error)

    def release(self, lease: Lease, *, done: bool) -> None:
        """Give `lease` back: after a commit, delete the chunk's generations up to ours (nothing is left
        behind); otherwise write a released generation so the next runner may take it at once."""
        if done:
            paths = [self._path(lease.output, generation) for generation in range(lease.generation, -1, -1)]
            if self.store.is_local:
                for path in paths:
                    with contextlib.suppress(FileNotFoundError):
                        self.store.fs.rm(path)
                return
            with self._doomed_lock:
                self._doomed.extend(paths)
                full = len(self._doomed) >= DELETE_BATCH
            if full:
                self.flush()
            return
        released = lease.model_copy(update={"generation": lease.generation + 1, "released": True})
        self._create(self._path(lease.output, released.generation), _encode(released))

    # -- atomic create-if-absent -------------------------------------------------------------------------
    def _create(self, path: str, data: bytes) -> bool:
        """Create `path` with `data` unless it exists; True when this call created it."""
        try:
            if self.store.is_local:
                return _create_local(path, data)
            if is_s3(self.store.fs):
                return _create_s3(self.store.fs, path, data)
            if _is_gcs(self.store.fs):
                return _create_gcs(self.store.fs, path, data)
            return self._create_unguarded(path, data)
        except StoreError:
            raise
        except Exception as error:
            raise StoreError(f"store {self.store.url}: cannot write lease {path}: {describe(error)}") from None

    def _create_unguarded(self, path: str, data: bytes) -> bool:
        """Stores with no conditional write (memory://, others): check then write; not safe across hosts."""
        if self.store.fs.exists(path):
            return False
        self.store.fs.pipe_file(path, data)
        return True

    def _overwrite(self, path: str, data: bytes) -> None:
        try:
            if self.store.is_local:
                tmp = f"{path}.renew-{uuid.uuid4().hex}"
                with open(tmp, "wb") as handle:
                    handle.write(data)
                os.replace(tmp, path)
            else:
                self.store.fs.pipe_file(path, data)
        except Exception as error:
            raise StoreError(f"store {self.store.url}: cannot renew lease {path}: {describe(error)}") from None


def _encode(lease: Lease) -> bytes:
    return lease.model_dump_json(by_alias=True).encode()


def _create_local(path: str, data: bytes) -> bool:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return True


def _create_s3(fs: Any, path: str, data: bytes) -> bool:
    """A conditional PUT (`If-None-Match: *`): S3 answers 412 when the key exists (409 on a race)."""
    from botocore.exceptions import ClientError

    bucket, key, _ = fs.split_path(path)
    try:
        fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
    except FileExistsError:  # s3fs translates 412 PreconditionFailed
        return False
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in {"PreconditionFailed", "ConditionalRequestConflict"} or status in {409, 412}:
            return False
        raise
    return True


def _is_gcs(fs: Any) -> bool:
    """gcsfs' filesystems by protocol: its class is `GCSFileSystem` or, since 2026, `ExtendedGcsFileSystem`
    (a name check missed the latter and fell back to the unguarded check-then-write)."""
    protocols = fs.protocol if isinstance(fs.protocol, tuple | list) else (fs.protocol,)
    return bool({"gs", "gcs"} & set(protocols))


def _create_gcs(fs: Any, path: str, data: bytes) -> bool:
    """An upload with `ifGenerationMatch=0` (create only): GCS answers 412 when the object exists, which
    gcsfs raises as FileExistsError. gcsfs retries transient failures, so a 412 can also answer the retry of
    our own upload that went through: the object then holds exactly our bytes (a lease names its holder's
    run and an expiry to the microsecond), and that is a win, not a loss."""
    bucket, key, _ = fs.split_path(path)
    try:
        fs.call(
            "POST",
            f"{fs._location}/upload/storage/v1/b/{bucket}/o",
            uploadType="media",
            name=key,
            ifGenerationMatch=0,
            data=data,
        )
    except FileExistsError:
        with contextlib.suppress(FileNotFoundError):
            return bool(fs.cat_file(path) == data)
        return False
    fs.invalidate_cache(path)
    return True


class LeaseKeeper:
    """Renews a lease every third of its TTL while a chunk renders; sets `lost` when it was taken over. The
    renewals of every keeper of one LeaseStore run on that store's one :class:`LeaseRenewer` thread (a run
    with 100 chunks in flight has one renewing thread, not 100)."""

    def __init__(self, leases: LeaseStore, lease: Lease) -> None:
        self.leases = leases
        self.lease = lease
        self.lost = threading.Event()
        self.due = 0.0  # when the renewer renews it next (monotonic)

    def __enter__(self) -> LeaseKeeper:
        self.leases.renewer.add(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.leases.renewer.remove(self)

    def renew(self) -> None:
        """One renewal (on the renewer's threads); a store blip is logged, the next beat tries again."""
        if self.lost.is_set():
            return
        try:
            if not self.leases.renew(self.lease):
                log.warning("lease of %s was taken over; stopping this attempt", self.lease.output)
                self.lost.set()
        except StoreError as error:  # a blip: the next beat tries again, well before the expiry
            log.warning("cannot renew the lease of %s: %s", self.lease.output, error)


class LeaseRenewer:
    """The one thread renewing the leases of a LeaseStore's keepers, each a third of the TTL after its last
    renewal; the renewals due at once go out together on `renewers` threads. The thread starts with the
    first keeper and ends with the last."""

    def __init__(self, leases: LeaseStore, renewers: int = 4) -> None:
        self.leases = leases
        self.renewers = renewers
        self._keepers: set[LeaseKeeper] = set()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def add(self, keeper: LeaseKeeper) -> None:
        with self._wake:
            keeper.due = time.monotonic() + self.leases.ttl / 3
            self._keepers.add(keeper)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="helios-leases", daemon=True)
                self._thread.start()
            self._wake.notify()

    def remove(self, keeper: LeaseKeeper) -> None:
        """Stop renewing `keeper`'s lease; a renewal of it already under way ends first (the caller releases
        the lease next, which must not race a renewal's write)."""
        with self._wake:
            self._keepers.discard(keeper)
            while keeper.due < 0:  # being renewed
                self._wake.wait()
            self._wake.notify_all()  # the last keeper gone: the thread ends now, not at the next due time

    def _run(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(self.renewers, thread_name_prefix="helios-lease") as pool:
            while True:
                with self._wake:
                    if not self._keepers:
                        self._thread = None
                        return
                    now = time.monotonic()
                    due = [keeper for keeper in self._keepers if keeper.due <= now]
                    if not due:
                        self._wake.wait(min(keeper.due for keeper in self._keepers) - now)
                        continue
                    for keeper in due:
                        keeper.due = -1.0  # being renewed
                list(pool.map(LeaseKeeper.renew, due))
                with self._wake:
                    for keeper in due:
                        keeper.due = time.monotonic() + self.leases.ttl / 3
                    self._wake.notify_all()
