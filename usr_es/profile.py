"""Column profiles for `usr describe`: non-null counts, an example value and list lengths, accumulated batch
by batch so a profile of the whole view needs one pass in bounded memory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from .jsontext import json_value
from .results import ColumnProfile


@dataclass
class ColumnStats:
    """One column's profile, accumulated batch by batch (`usr describe`)."""

    name: str
    type: pa.DataType
    non_null: int = 0
    example: Any = None
    has_example: bool = False
    lists: int = 0
    len_sum: int = 0
    len_min: int | None = None
    len_max: int | None = None

    def add(self, column: pa.Array, pc: Any) -> None:
        valid = len(column) - column.null_count
        self.non_null += valid
        if not self.has_example and valid:
            self.example = json_value(column.drop_null()[0].as_py())
            self.has_example = True
        if is_list_type(self.type) and valid:
            lengths = pc.list_value_length(column)
            bounds = pc.min_max(lengths).as_py()
            self.lists += valid
            self.len_sum += int(pc.sum(lengths).as_py() or 0)
            self.len_min = bounds["min"] if self.len_min is None else min(self.len_min, bounds["min"])
            self.len_max = bounds["max"] if self.len_max is None else max(self.len_max, bounds["max"])

    def result(self, rows: int, type_text: str) -> ColumnProfile:
        is_list = is_list_type(self.type)
        return ColumnProfile(
            name=self.name,
            type=type_text,
            rows=rows,
            non_null=self.non_null,
            null_pct=round(100.0 * (rows - self.non_null) / rows, 2) if rows else 0.0,
            example=self.example,
            list_len_min=self.len_min if is_list else None,
            list_len_max=self.len_max if is_list else None,
            list_len_mean=round(self.len_sum / self.lists, 2) if is_list and self.lists else None,
        )


def is_list_type(dtype: pa.DataType) -> bool:
    return bool(pa.types.is_list(dtype) or pa.types.is_large_list(dtype) or pa.types.is_fixed_size_list(dtype))
