"""The CLI's tables, drawn by ``rich``.

Piped or redirected (not a terminal), a table is plain text: no ANSI codes, as wide as
its widest cells (never wrapped nor cut), columns left-aligned and two spaces apart,
trailing blanks dropped, so ``grep``/``awk`` read it as before. On a terminal, headers
are bold and the table fits the terminal's width by wrapping only the long free-text
columns (reasons, errors, network); the key fields (names, statuses, versions,
counts) keep their full width, even if the line then runs past the edge.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Sequence

#: Headers of free-text columns that may wrap on a narrow terminal; every other column
#: keeps its widest cell whole.
WRAPPABLE = frozenset({"REASONS", "ERROR", "NETWORK", "HOW IT ENDED", "LOCATION",
                       "NODES (VERSION HELD)"})
GAP = 2


MIN_WRAP = 12


def column_widths(headers: Sequence[str], cells: Sequence[Sequence[str]], *,
                  width: int | None) -> list[int]:
    """Each column's width: its widest cell, except that with a ``width`` to fit, the
    :data:`WRAPPABLE` columns share what the others leave (at least :data:`MIN_WRAP` each)."""
    widest = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]
    natural = sum(widest) + GAP * max(len(widest) - 1, 0)
    wrappable = [i for i, h in enumerate(headers) if h in WRAPPABLE and widest[i] > MIN_WRAP]
    if width is None or natural <= width or not wrappable:
        return widest
    fixed = natural - sum(widest[i] for i in wrappable)
    room = max(width - fixed, 0)
    out = list(widest)
    # share the room in proportion to each free-text column's natural width
    total = sum(widest[i] for i in wrappable)
    for i in wrappable:
        out[i] = max(MIN_WRAP, min(widest[i], room * widest[i] // total))
    return out


def draw(headers: Sequence[str], cells: Sequence[Sequence[str]], *, terminal: bool = False,
         width: int | None = None) -> str:
    """The table of ``cells`` (rows of strings) under ``headers``, as text to print.

    ``terminal``: bold headers (ANSI) and fit ``width`` (default: the terminal's)."""
    if terminal and width is None:
        width = shutil.get_terminal_size((100, 24)).columns
    widths = column_widths(headers, cells, width=width if terminal else None)
    if not terminal and all(_plain(text) for text in (*headers, *(c for row in cells for c in row))):
        return _draw_plain(headers, cells, widths)
    return _draw_rich(headers, cells, widths, terminal=terminal)


def _plain(text: str) -> bool:
    """One line of printable ASCII: one character, one column, as rich counts it."""
    return text.isascii() and text.isprintable()


def _draw_plain(headers: Sequence[str], cells: Sequence[Sequence[str]], widths: Sequence[int]) -> str:
    """What :func:`_draw_rich` prints when piped, for cells of printable ASCII, without
    importing rich (~30 ms of a short command's CPU): padded columns two spaces apart,
    trailing blanks dropped."""
    gap = " " * GAP
    return "\n".join(gap.join(text.ljust(size) for text, size in zip(row, widths, strict=True)).rstrip()
                     for row in (headers, *cells))


def _draw_rich(headers: Sequence[str], cells: Sequence[Sequence[str]], widths: Sequence[int], *,
               terminal: bool) -> str:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, show_edge=False, pad_edge=False, padding=(0, GAP // 2),
                  header_style="bold" if terminal else "", expand=False)
    for header, size in zip(headers, widths, strict=True):
        if header in WRAPPABLE:
            table.add_column(header, overflow="fold", width=size)
        else:
            table.add_column(header, no_wrap=True, width=size)
    for row in cells:
        table.add_row(*(Text(cell) for cell in row))  # Text: a "[...]" in a cell is no markup
    needed = sum(widths) + GAP * max(len(widths) - 1, 0)
    out = io.StringIO()
    console = Console(file=out, width=max(needed, 1), force_terminal=terminal, no_color=not terminal,
                      color_system="standard" if terminal else None, highlight=False, emoji=False,
                      legacy_windows=False, soft_wrap=False)
    console.print(table)
    return "\n".join(line.rstrip() for line in out.getvalue().rstrip("\n").splitlines())
