"""`scope-eval toy-export`: write the shipped toy checkpoints in the original LLaVA codebase's layout.

The original codebase loads its vision tower by absolute path, so the export is made where it is used
(e.g. runs/toy_original) rather than shipped.
"""

from __future__ import annotations

from pathlib import Path

import typer

from .convert import export_llava_original

WEIGHTS = Path(__file__).parent / "weights"
KINDS = ("llava15", "llava_next")


def toy_export(
    output: Path = typer.Argument(Path("runs/toy_original"), help="folder for <output>/llava15 and <output>/llava_next"),
) -> None:
    """Export the toy LLaVA-1.5 and LLaVA-NeXT to the original LLaVA codebase's format (for llava_scope)."""
    for kind in KINDS:
        destination = export_llava_original(WEIGHTS / kind, output / kind)
        typer.echo(f"{kind}: {destination}")
