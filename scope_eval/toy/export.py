"""`scope-eval toy-export`: write the shipped toy checkpoints in the original LLaVA codebase's layout.

The original codebase loads its vision tower by absolute path, so the export is made where it is used
(e.g. runs/toy_original) rather than shipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .convert import export_llava_original

WEIGHTS = Path(__file__).parent / "weights"
KINDS = ("llava15", "llava_next")


def toy_export(
    folder: Optional[Path] = typer.Argument(None, metavar="OUTPUT", help="the same as --output (kept for scripts)"),
    output: Optional[Path] = typer.Option(None, "--output", help="folder for OUTPUT/llava15 and OUTPUT/llava_next (default: runs/toy_original)"),
) -> None:
    """Export the toy LLaVA-1.5 and LLaVA-NeXT to the original LLaVA codebase's format (for llava_scope)."""
    if folder is not None and output is not None and folder != output:
        raise typer.BadParameter(f"given twice ({folder} and {output}); pass only --output", param_hint="--output")
    output = output or folder or Path("runs/toy_original")
    for kind in KINDS:
        destination = export_llava_original(WEIGHTS / kind, output / kind)
        typer.echo(f"{kind}: {destination}")
