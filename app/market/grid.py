"""The grid of SPEC §3: columns are time windows, rows are price bands, a cell is "<t_start>:<row>".

Pure functions of the settings and the server clock; no I/O. Integer cents and Unix seconds only.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from app.config import Settings
from app.errors import BadRequest, Unprocessable

_CELL_RE = re.compile(r"([0-9]{1,12}):([0-9]{1,9})")


@dataclass(frozen=True, slots=True)
class GridSpec:
    column_seconds: int
    price_step: int  # cents
    min_lead_columns: int
    columns_ahead: int
    rows_each_side: int

    @classmethod
    def from_settings(cls, s: Settings) -> GridSpec:
        return cls(s.column_seconds, s.price_step, s.min_lead_columns, s.columns_ahead, s.rows_each_side)

    def column_of(self, t_s: float) -> int:
        """Start (Unix seconds) of the column containing `t_s`."""
        return int(t_s // self.column_seconds) * self.column_seconds

    def row_of(self, price_cents: int) -> int:
        return price_cents // self.price_step

    def band(self, row: int) -> tuple[int, int]:
        """[low, high] in cents, both inclusive."""
        return row * self.price_step, (row + 1) * self.price_step

    def placeable_columns(self, now_s: float) -> range:
        now_col = self.column_of(now_s)
        c = self.column_seconds
        return range(now_col + self.min_lead_columns * c, now_col + self.columns_ahead * c, c)

    def placeable_rows(self, current_row: int) -> range:
        return range(max(0, current_row - self.rows_each_side), current_row + self.rows_each_side + 1)

    def cells(self, now_s: float, current_row: int) -> Iterator[tuple[int, int]]:
        for t_start in self.placeable_columns(now_s):
            for row in self.placeable_rows(current_row):
                yield t_start, row


def parse_cell(cell: object, spec: GridSpec) -> tuple[int, int]:
    """Parse ``"<t_start>:<row>"`` strictly; 400 `invalid_cell` for anything else."""
    if not isinstance(cell, str):
        raise BadRequest('cell must be a string "<t_start>:<row>"', code="invalid_cell")
    m = _CELL_RE.fullmatch(cell)
    if m is None:
        raise BadRequest('cell must look like "1763712005:6712"', code="invalid_cell")
    t_start, row = int(m.group(1)), int(m.group(2))
    if t_start % spec.column_seconds:
        raise BadRequest(f"cell start must be a multiple of {spec.column_seconds} s", code="invalid_cell")
    if str(t_start) != m.group(1) or str(row) != m.group(2):
        raise BadRequest("cell has leading zeros", code="invalid_cell")
    return t_start, row


def check_placeable(t_start: int, row: int, now_s: float, current_row: int, spec: GridSpec) -> None:
    """422 with a specific code unless the cell is placeable now (SPEC §3)."""
    cols = spec.placeable_columns(now_s)
    if t_start < cols.start:
        raise Unprocessable("That column has started or is too close to start.", code="cell_too_soon")
    if t_start >= cols.stop:
        raise Unprocessable("That column is too far ahead.", code="cell_too_far")
    if abs(row - current_row) > spec.rows_each_side:
        raise Unprocessable("That price band is too far from the current price.", code="row_out_of_range")
