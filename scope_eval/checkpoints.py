"""How a `pretrained` value is read, one rule for the sweep configs and the lmms-eval model args."""

from __future__ import annotations

import os


def looks_like_local_path(pretrained: str) -> bool:
    """A hub id is 'org/name'; anything else with a separator, or starting like a path, is a folder."""
    return pretrained.startswith(("/", "~", ".")) or pretrained.count("/") > 1 or os.sep != "/" and os.sep in pretrained


def model_arg_problem(value: str) -> str | None:
    """Why ``value`` cannot travel as one value of lmms-eval's ``k=v,k=v`` arguments (--model_args,
    --gen_kwargs), or None when it can.

    lmms-eval (utils.simple_parse_args_string) splits the text at commas outside quotes and brackets, then
    each part at its first '=': an '=' inside a value arrives intact (``pretrained=/ckpt/lr=1e-5``), but a
    comma splits the value, and a quote or an unbalanced bracket swallows the commas of the arguments after
    it."""
    if "," in value:
        return "contains ',', where lmms-eval splits its k=v,... arguments"
    if '"' in value or "'" in value:
        return "contains a quote, which makes lmms-eval's k=v,... parser read the following arguments into it"
    depth = 0
    for character in value:
        depth += character in "{[" or -(character in "}]")
        if depth < 0:
            break
    if depth:
        return "has unbalanced brackets, which make lmms-eval's k=v,... parser read the following arguments into it"
    return None
