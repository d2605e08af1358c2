"""``scope-eval methods``: every registered pruning method with its stage and options (registered in cli.py).

Read from the registry, so a method file dropped into scope_eval/pruning/methods/ (or installed through the
``scope_eval.methods`` entry point) is listed without any edit here. An option's line is the comment on its
dataclass field (``alpha: float = 1.0  # exponent of the saliency``), the place a method author documents it.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import json
import re
import tokenize
from typing import Any

import typer

STAGES = {"vision": "pre-LLM: selects before the language model", "llm": "in-LLM: drops inside the decoder"}


@dataclasses.dataclass(frozen=True)
class OptionInfo:
    name: str
    default: Any
    help: str


@dataclasses.dataclass(frozen=True)
class MethodInfo:
    name: str
    display_name: str
    stage: str
    summary: str
    options: tuple[OptionInfo, ...]


def describe_methods() -> list[MethodInfo]:
    from ..pruning import registry

    registry.method_options("none")  # imports every method file (and entry-point plugins)
    return [describe(cls) for _, cls in sorted(registry.METHODS.items(), key=lambda item: (item[1].report_rank, item[0]))]


def describe(cls: type) -> MethodInfo:
    comments = field_comments(cls)
    options = tuple(
        OptionInfo(f.name, f.default if f.default is not dataclasses.MISSING else None, comments.get(f.name, ""))
        for f in dataclasses.fields(cls)
        if f.init
    )
    doc = cls.__doc__ or ""
    generated = doc.startswith(f"{cls.__name__}(")  # @dataclass writes the signature where no docstring is
    summary = "" if generated else inspect.cleandoc(doc).split("\n\n")[0].replace("\n", " ").strip()
    return MethodInfo(cls.name, cls.label(), cls.stage, summary, options)


def field_comments(cls: type) -> dict[str, str]:
    """`name: type = default  # comment` lines of the class and its bases: {name: comment}."""
    found: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        lines = source.splitlines()
        try:
            tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
        except (tokenize.TokenError, SyntaxError):
            continue
        for token in tokens:
            if token.type != tokenize.COMMENT:
                continue
            line = lines[token.start[0] - 1]
            field = re.match(r"\s+([A-Za-z_]\w*)\s*:[^=]+=", line)
            if field and line.index("#") == token.start[1]:
                found[field.group(1)] = token.string.lstrip("#").strip()
    return found


def list_methods(
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """List the registered pruning methods: name, stage, options with their defaults and what each does."""
    methods = describe_methods()
    if as_json:
        typer.echo(json.dumps([dataclasses.asdict(method) for method in methods], indent=2, default=str))
        return
    for method in methods:
        title = method.name if method.display_name == method.name else f"{method.name} ({method.display_name})"
        typer.echo(f"{title}  [{STAGES.get(method.stage, method.stage)}]")
        if method.summary:
            typer.echo(f"    {method.summary}")
        for option in method.options:
            line = f"    {option.name}={option.default!r}"
            typer.echo(f"{line:36} {option.help}".rstrip())
        typer.echo("")
    typer.echo("Use: prune(model, NAME, budget, **options); lmms-eval --model_args method=NAME,budget=K,OPTION=VALUE; "
               "sweep configs: methods: [{name: NAME, options: {OPTION: VALUE}}]")  # fmt: skip
