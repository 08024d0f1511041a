"""THE composition: the one owner of what a composition is and where it lives.

- :mod:`.locations`: what scheme a reference is, the job-dir rule, the default store of a job;
- :mod:`.meta`: the entry HTML of a reference and the `<meta name="helios">` settings it declares;
- :mod:`.resolve`: where a job's composition is rendered from (local, http(s), downloaded from fsspec);
- :mod:`.identity`: a chunk's settings digest (what its done-manifest must match);
- :mod:`.deps`: dependency records (what a render loaded) and the check that none changed.

No other module parses composition locations. Client (the job run) and workers call these, so they agree
on a composition's identity, or resume would break. See docs/ARCHITECTURE.md.
"""

from helios_kit.composition.deps import FILE_HASHER, Dependency, DependencyChecker, FileHasher
from helios_kit.composition.identity import chunk_digest, config_digest, job_outputs
from helios_kit.composition.locations import (
    default_store_url,
    is_http,
    is_local,
    job_dir_for,
    local_path,
    parent_url,
    scheme_of,
)
from helios_kit.composition.meta import CompositionInput, CompositionMeta, locate_entry, read_meta, resolve_input
from helios_kit.composition.resolve import ResolvedComposition, fetch_file, resolve_composition

__all__ = [
    "FILE_HASHER",
    "CompositionInput",
    "CompositionMeta",
    "Dependency",
    "DependencyChecker",
    "FileHasher",
    "ResolvedComposition",
    "chunk_digest",
    "config_digest",
    "default_store_url",
    "fetch_file",
    "is_http",
    "is_local",
    "job_dir_for",
    "job_outputs",
    "local_path",
    "locate_entry",
    "parent_url",
    "read_meta",
    "resolve_composition",
    "resolve_input",
    "scheme_of",
]
