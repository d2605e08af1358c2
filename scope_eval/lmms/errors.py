"""The one error type of the lmms-eval glue that ends a run.

lmms-eval's CLI catches ``Exception`` around each evaluation, logs it and exits with status 0, and its
``llava_hf`` wrappers turn a failed ``generate()`` into an empty answer that is then scored as wrong.
An error that must fail the run therefore derives from ``BaseException`` (like ``KeyboardInterrupt``):
neither layer catches it, Python prints the chained traceback and the process exits with status 1
(torchrun / accelerate then stop the other ranks).
"""

from __future__ import annotations


class RunAborted(BaseException):
    """A scope_eval model or task cannot produce faithful results; the evaluation must stop."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def abort_on_error(what: str):
    """Context manager: re-raise any ``Exception`` inside as ``RunAborted`` naming ``what`` failed."""
    return _AbortOnError(what)


class _AbortOnError:
    def __init__(self, what: str):
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, traceback) -> bool:
        if exc is not None and isinstance(exc, Exception):
            raise RunAborted(f"{self.what} failed: {type(exc).__name__}: {exc}") from exc
        return False
