"""usr_es: Universal Sequence Record, event-sourced. The log is the truth; Parquet files are caches.

Light at import: `Dataset` (and pyarrow behind it) loads on first use, so `usr --help` and
`import usr_es` stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .alphabet import ALPHABETS, BIO_TYPES, compute_id, normalize_sequence
from .errors import (
    AlphabetError,
    CommitError,
    ConcurrencyError,
    CorruptLog,
    DatasetExists,
    DuplicateIDError,
    IntegrityError,
    InvalidInput,
    NamespaceError,
    NotFound,
    RegistryError,
    SchemaError,
    UsrError,
)

__version__ = "0.1.0"
USR_EVENT_VERSION = 1

if TYPE_CHECKING:
    from .dataset import Dataset
    from .results import DatasetInfo, Receipt, VerifyReport
    from .root import Root

__all__ = [
    "ALPHABETS",
    "BIO_TYPES",
    "USR_EVENT_VERSION",
    "AlphabetError",
    "CommitError",
    "ConcurrencyError",
    "CorruptLog",
    "Dataset",
    "DatasetExists",
    "DatasetInfo",
    "DuplicateIDError",
    "IntegrityError",
    "InvalidInput",
    "NamespaceError",
    "NotFound",
    "Receipt",
    "RegistryError",
    "Root",
    "SchemaError",
    "UsrError",
    "VerifyReport",
    "__version__",
    "compute_id",
    "normalize_sequence",
]

_LAZY = {
    "Dataset": "dataset",
    "DatasetInfo": "results",
    "Receipt": "results",
    "Root": "root",
    "VerifyReport": "results",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'usr_es' has no attribute {name!r}")
