"""Command-line lists read one way in every command: `--method a --method b` and `--method a,b` alike."""

from __future__ import annotations

from typing import Iterable

import typer


def split_values(values: Iterable[str] | None) -> list[str] | None:
    """Repeated and comma-separated values, in order; None when the option was not given."""
    if not values:
        return None
    return [part.strip() for value in values for part in str(value).split(",") if part.strip()]


def whole_numbers(values: Iterable[str] | None, option: str) -> list[int] | None:
    parts = split_values(values)
    if parts is None:
        return None
    if not parts:
        raise typer.BadParameter("empty: give whole numbers, e.g. 64 or 192,128", param_hint=f"'{option}'")
    try:
        return [int(part) for part in parts]
    except ValueError:
        raise typer.BadParameter(f"{', '.join(parts)}: whole numbers only, e.g. 64 or 192,128", param_hint=f"'{option}'") from None
