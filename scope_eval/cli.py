"""The `scope-eval` command. Subpackages own their commands; this file only wires them."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Evaluate visual-token pruning in LLaVA models.")

# Each subpackage exposes plain functions with typer-annotated parameters; registration lines go here.


def main() -> None:
    app()


if __name__ == "__main__":
    main()
