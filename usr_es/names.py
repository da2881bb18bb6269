"""Names: the files of a dataset folder, the reserved namespaces and columns, the allowed state values.

One place each. This module imports nothing (no pyarrow), so every layer may use it without start-up cost.
"""

from __future__ import annotations

# -- files and folders of a dataset (paths relative to the dataset folder) ---------------------------
LOG_FILE = ".events.log"
QUARANTINE_FILE = ".events.log.quarantine"
LOCK_FILE = ".usr.lock"
RECORDS_FILE = "records.parquet"
META_FILE = "meta.md"
DERIVED_DIR = "_derived"
ARCHIVE_DIR = "_archived"
LAYOUT_FILE = f"{DERIVED_DIR}/layout.json"
INDEX_DIR = "_index"
INDEX_MANIFEST = f"{INDEX_DIR}/id.json"  # names the sorted runs `id-<start>-<end>.arrow` (ADR 0013)
HISTORY_DIR = "_history"
HISTORY_MANIFEST = f"{HISTORY_DIR}/history.json"  # names the sorted runs `h-<start>-<end>.arrow` (ADR 0020)
PAYLOAD_DIR = "_payloads"
REGISTRY_DIR = "_registry"
SNAPSHOT_DIR = "_snapshots"
CHECKPOINT_MANIFEST = "manifest.json"
#: The folder (in a dataset folder, or in a root for a dataset that does not exist yet) where a transfer
#: puts the files it sends before the write path takes them.
STAGING_DIR = ".usr-sync"
#: The root's registry (the folder holding it is a datasets root).
REGISTRY_FILE = "registry.yaml"

# -- reserved namespaces and columns ----------------------------------------------------------------
TOMBSTONE_NS = "usr"
STATE_NS = "usr_state"
RESERVED_NAMESPACES = frozenset({TOMBSTONE_NS, STATE_NS})
ID = "id"
DELETED = f"{TOMBSTONE_NS}__deleted"
MASKED = f"{STATE_NS}__masked"
#: Tombstone columns: shown only with `include_deleted`.
HIDDEN_PREFIX = f"{TOMBSTONE_NS}__"
#: Bool columns whose unset value reads as False in the live view.
FLAGS = (DELETED, MASKED)
#: Prefix of an overlay part's per-column "was written" mask column (ADR 0008).
WRITTEN = "__written__:"
#: The column of a purge part (`materialize --drop-deleted`): its ids' earlier rows are forgotten.
PURGED = "__purged__"
#: The base columns every records.parquet holds, in order.
ESSENTIAL_COLUMNS = ("id", "bio_type", "sequence", "alphabet", "length", "source", "created_at")

# -- allowed values of usr_state fields -------------------------------------------------------------
QC_STATUSES = ("fail", "pass", "unknown", "warn")
SPLITS = ("holdout", "test", "train", "val")
STATE_FIELDS = ("masked", "qc_status", "split", "supersedes", "lineage")
