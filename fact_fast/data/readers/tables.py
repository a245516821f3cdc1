"""Reading published label tables: CSV rows with line numbers, label values, views, empty splits.

Every error names the file, and for a bad value its line and column, so a user can fix the
table; nothing here guesses a label.
"""
from __future__ import annotations

import csv
import math
from operator import itemgetter
from collections.abc import Iterator, Sequence

__all__ = ["UNCERTAIN_POLICIES", "BLANK_POLICIES", "LabelDecoder", "read_csv", "column_index",
           "parse_views", "require_nonempty"]

UNCERTAIN_POLICIES = ("u_ones", "u_zeros", "ignore")
BLANK_POLICIES = ("unknown", "negative")
NAN = float("nan")


class LabelDecoder:
    """Label cell text -> 1.0 / 0.0 / NaN.

    ``1`` and ``0`` (also written ``1.0``, ``0.0``) are positive and negative; a blank cell or
    ``nan`` is unknown (NaN, masked in every loss and metric) or, with ``blank="negative"``,
    negative. ``-1`` is uncertain: allowed only with an ``uncertain`` policy -- ``"u_ones"``
    (-> 1), ``"u_zeros"`` (-> 0) or ``"ignore"`` (-> NaN). Anything else raises ``ValueError``
    naming the file, line and column.
    """

    def __init__(self, uncertain: str | None = None, blank: str = "unknown"):
        if uncertain is not None and uncertain not in UNCERTAIN_POLICIES:
            raise ValueError(f"uncertain must be one of {list(UNCERTAIN_POLICIES)} or None, got {uncertain!r}")
        if blank not in BLANK_POLICIES:
            raise ValueError(f"blank must be one of {list(BLANK_POLICIES)}, got {blank!r}")
        self.uncertain, self.blank = uncertain, blank
        blank_value = NAN if blank == "unknown" else 0.0
        self._values = {"1": 1.0, "0": 0.0, "": blank_value, "nan": blank_value}
        if uncertain is not None:
            self._values["-1"] = {"u_ones": 1.0, "u_zeros": 0.0, "ignore": NAN}[uncertain]
        # the cells of published tables as written (looked up before any parsing: 3M cells in CheXpert)
        self._exact = dict(self._values, **{k + ".0": v for k, v in self._values.items() if k not in ("", "nan")},
                           NaN=blank_value)

    def row(self, cells: Sequence[str], columns: Sequence[int], header: Sequence[str], path, line: int) -> list:
        """The label values of ``cells[j]`` for ``j`` in ``columns`` (errors name ``header[j]``)."""
        values = list(map(self._exact.get, itemgetter(*columns)(cells))) if len(columns) > 1 else \
            [self._exact.get(cells[columns[0]])]
        if None in values:
            values = [self(cells[j], path, line, header[j]) if v is None else v for v, j in zip(values, columns)]
        return values

    def __call__(self, text: str, path, line: int, column: str) -> float:
        token = text.strip().lower()
        value = self._values.get(token)
        if value is not None:
            return value
        try:  # other spellings of the same numbers: "1.0", "-1.0", "0.00"
            number = float(token)
        except ValueError:
            number = None
        if number is not None and math.isfinite(number) and number == int(number):
            value = self._values.get(str(int(number)))
            if value is not None:
                return value
        allowed = "1, 0, blank/NaN" + (", -1 (uncertain)" if self.uncertain else "")
        hint = ("; -1 marks an uncertain label: pass uncertain='u_ones', 'u_zeros' or 'ignore'"
                if number == -1 and self.uncertain is None else "")
        raise ValueError(f"{path}: line {line}, column {column!r}: label value {text!r} is not one of "
                         f"{allowed}{hint}")


def read_csv(path, what: str) -> tuple[list, Iterator[tuple[int, list]]]:
    """Open a CSV table -> ``(header, rows)``; ``rows`` yields ``(line number, cells)`` for each
    non-empty row, checking that it has as many cells as the header. ``what`` names the dataset
    in errors. (Streams the file: CheXpert's train.csv has 223k rows; the file is opened again
    by ``rows`` so that nothing is left open when the caller stops at a header error.)"""
    with open(path, newline="", encoding="utf-8-sig") as f:
        first = next(csv.reader(f), None)
    if first is None:
        raise ValueError(f"{what}: {path} is empty (no header row)")
    header = [h.strip() for h in first]

    def rows():
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            next(reader)
            for cells in reader:
                if not cells or (len(cells) == 1 and not cells[0].strip()):
                    continue
                if len(cells) != len(header):
                    raise ValueError(f"{what}: {path}: line {reader.line_num} has {len(cells)} cells, "
                                     f"the header has {len(header)}")
                yield reader.line_num, cells

    return header, rows()


def column_index(header: Sequence[str], column: str, path, what: str, argument: str | None = None) -> int:
    """Position of ``column`` in ``header`` or ``ValueError`` naming the file and the columns."""
    if column not in header:
        arg = f"{argument}: " if argument else ""
        raise ValueError(f"{what}: {arg}column {column!r} missing from {path} (columns: {list(header)})")
    return list(header).index(column)


def parse_views(views, allowed: Sequence[str], what: str) -> frozenset | None:
    """``views`` ("all", one name or a list of names from ``allowed``) -> set of names, or None
    for all views."""
    names = [views] if isinstance(views, str) else list(views)
    if "all" in names:
        if len(names) > 1:
            raise ValueError(f"{what}: views: 'all' cannot be combined with {names}")
        return None
    bad = [v for v in names if v not in allowed]
    if bad or not names:
        raise ValueError(f"{what}: views: unknown view(s) {bad or names}; valid values: 'all' or "
                         f"any of {list(allowed)}")
    return frozenset(names)


def require_nonempty(n: int, what: str, split: str, source, detail: str = "") -> None:
    """An empty split is an error naming the split and the file it was read from."""
    if n == 0:
        raise ValueError(f"{what}: split {split!r} read from {source} is empty{detail}")
