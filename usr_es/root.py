"""`Root`: a datasets root -- the folder holding `registry.yaml` and the datasets -- as the public API sees it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .registry import NamespaceSpec, register_namespace, split_columns_spec

if TYPE_CHECKING:
    from .dataset import Dataset
    from .results import DatasetSummary


class Root:
    """A datasets root. `Root(path).register_namespace("mock", "mock__score:float64")` creates or extends
    its `registry.yaml`; `dataset("ns/name")` opens a dataset under it."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path).expanduser().resolve()

    def register_namespace(
        self,
        namespace: str,
        columns: str | list[tuple[str, str]],
        *,
        owner: str | None = None,
        description: str | None = None,
        overwrite: bool = False,
    ) -> NamespaceSpec:
        """Add (or with `overwrite`, replace) a namespace: `columns` as `'ns__a:float64,ns__b:list<string>'`
        (the CLI's `--columns`) or as (name, type) pairs."""
        pairs = split_columns_spec(columns) if isinstance(columns, str) else columns
        return register_namespace(
            self.path, namespace, pairs, owner=owner, description=description, overwrite=overwrite
        )

    def dataset(self, name: str) -> Dataset:
        """The dataset `name` (or `ns/name`) under this root; it need not exist yet (for `init`)."""
        from .dataset import Dataset

        return Dataset.open(self.path, name)

    def datasets(self) -> list[DatasetSummary]:
        """Summaries of every dataset under this root."""
        from .dataset import Dataset

        return Dataset.list_all(self.path)
