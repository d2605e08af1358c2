"""Independent pieces of a report (one row's statistics, one plot) spread over forked processes.

Forked workers inherit what the parent holds (the tidy table, the statistics, imported task functions), so
nothing but an item's index and its result crosses a process boundary, and no worker re-imports torch or
lmms-eval. Every piece depends only on its inputs and its own seeds, so the results, returned in the
items' order, are the same for any number of processes. Where fork is unavailable (Windows) or one
process is asked for, the pieces run here, one after another.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

Result = TypeVar("Result")

_function: Callable[[Any], Any] | None = None  # in a forked worker: what map_forked was given


def map_forked(function: Callable[[Any], Result], items: Sequence[Any], processes: int, chunksize: int = 1) -> list[Result]:
    """[function(item) for item in items], over up to `processes` forked processes. Items and results are
    pickled (keep them small: indices, paths, dicts of numbers); `function` is not (a closure is fine)."""
    count = min(processes, len(items))
    if count <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        return [function(item) for item in items]
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(count, mp_context=context, initializer=_share, initargs=(function,)) as pool:
        return list(pool.map(_call, items, chunksize=chunksize))


def _share(function: Callable[[Any], Any]) -> None:
    global _function
    _function = function


def _call(item: Any) -> Any:
    return _function(item)  # type: ignore[misc]
