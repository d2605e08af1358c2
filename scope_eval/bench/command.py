"""`scope-eval bench`: prefill/decode time, memory and FLOPs of every method x budget on one model."""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

SHAPE_HELP = (
    "Built-in model: llava-1.5-7b, llava-1.5-13b, llava-next-7b (random weights, real dimensions), "
    "tiny-llava-1.5, tiny-llava-next (random, tiny widths, real 336/14 geometry), "
    "toy-llava-1.5, toy-llava-next (the shipped trained toy checkpoints), qwen2-vl-7b, qwen2.5-vl-7b (random "
    "weights, real dimensions, images up to max_pixels=1280*28*28), tiny-qwen2-vl, tiny-qwen2.5-vl."
)
ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2", "flex_attention")
# NeXT: 672x672 gives 5 crops = 2880 tokens; Qwen: a 640x480 photo (GQA's typical size) gives 23x17 = 391 tokens
DEFAULT_IMAGE_SIZE = {"llava-1.5": (336, 336), "llava-next": (672, 672), "qwen2-vl": (480, 640), "qwen2.5-vl": (480, 640)}


def bench(
    model: str | None = typer.Option(None, "--model", help="llava-hf checkpoint directory or hub id (local cache)."),
    shape: str | None = typer.Option(None, "--shape", help=SHAPE_HELP),
    methods: str = typer.Option(
        "all", "--methods", help="Comma-separated pruning methods, or 'all'. 'none' always runs."
    ),
    budgets: str | None = typer.Option(
        None, "--budgets", help="Comma-separated visual tokens per image (default: the paper's for the family)."
    ),
    budget_policy: str = typer.Option("per_crop", "--budget-policy", help="LLaVA-NeXT: per_crop (paper) or global."),
    method_option: list[str] = typer.Option(
        [], "--method-option", help="METHOD.KEY=VALUE, a method's option (repeatable), e.g. cdpruner.text_encoder=PATH, fastv.layer=1."
    ),
    dtype: str | None = typer.Option(
        None, "--dtype", help="bfloat16 | float16 | float32 (default: bf16 on CUDA, fp32 on CPU)."
    ),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)."),
    repeats: int = typer.Option(5, "--repeats", help="Measured passes per case (medians are reported)."),
    warmup: int = typer.Option(2, "--warmup", help="Unmeasured passes per case first."),
    image_size: str | None = typer.Option(
        None, "--image-size", help="HxW of the test image (default: 336x336; NeXT 672x672)."
    ),
    prompt_tokens: int = typer.Option(32, "--prompt-tokens", help="Text tokens after the image."),
    new_tokens: int = typer.Option(8, "--new-tokens", help="Tokens generated (greedy, EOS suppressed)."),
    attention: str | None = typer.Option(
        None, "--attention", help="attn_implementation: sdpa, eager, flash_attention_2 (default: transformers')."
    ),
    threads: int | None = typer.Option(None, "--threads", help="torch CPU threads (default: torch's)."),
    out: Path | None = typer.Option(None, "--out", help="Write OUT.json, OUT.md and OUT.png."),
    title: str | None = typer.Option(None, "--title", help="Heading of the markdown section (default: the model)."),
) -> None:
    """Measure what pruning saves (prefill time, FLOPs, memory) and what selection costs."""
    with _exit_on_bad_input():
        import torch

        from . import output
        from .loading import BenchError, load_bench_model, resolve_device, resolve_dtype
        from .runner import BenchSettings, run_bench
        from .shapes import PAPER_BUDGETS, QWEN_SHAPES, SHAPES, TOY_CHECKPOINTS
        from .summary import report

        if (model is None) == (shape is None):
            raise BenchError("pass exactly one of --model (a checkpoint) or --shape (a built-in model)")
        known = [*SHAPES, *TOY_CHECKPOINTS, *QWEN_SHAPES]
        if shape is not None and shape not in known:
            raise BenchError(f"unknown --shape {shape!r}; choose one of: {', '.join(known)}")
        _check_numbers(threads=threads, repeats=repeats, warmup=warmup, prompt_tokens=prompt_tokens, new_tokens=new_tokens)
        if attention is not None and attention not in ATTENTION_IMPLEMENTATIONS:
            raise BenchError(f"unknown --attention {attention!r}; choose one of: {', '.join(ATTENTION_IMPLEMENTATIONS)}")
        if threads is not None:
            torch.set_num_threads(threads)
        target = resolve_device(_device_name(device))
        bench_model = load_bench_model(shape or model, target, resolve_dtype(dtype, target), attention)
        size = _image_size(image_size) if image_size else DEFAULT_IMAGE_SIZE[bench_model.family]
        settings = BenchSettings(
            methods=_method_list(methods),
            method_options=_method_options(method_option),
            budgets=_int_list(budgets, "--budgets") if budgets else _paper_budgets(bench_model, size),
            budget_policy=budget_policy,
            repeats=repeats,
            warmup=warmup,
            image_size=size,
            prompt_tokens=prompt_tokens,
            new_tokens=new_tokens,
        )
        command = _command_line(
            shape,
            model,
            settings,
            dtype=str(bench_model.dtype).removeprefix("torch."),
            device=str(target),
            threads=threads,
            out=out,
            attention=attention,
        )
        run = run_bench(bench_model, settings, progress=lambda line: typer.echo(line, err=True))
        summary = report(bench_model, settings, run, command)
        output.print_table(summary)
        if out is not None:
            output.write_json(summary, out.with_suffix(".json"))
            out.with_suffix(".md").write_text(output.markdown(summary, title))
            output.plot(summary, out.with_suffix(".png"))
            typer.echo(f"wrote {out.with_suffix('.json')}, .md, .png", err=True)


def _paper_budgets(bench_model, image_size: tuple[int, int]) -> list[int]:
    """The paper's budgets of the family; Qwen: Table 8's keep ratios applied to the test image's tokens."""
    from scope_eval.pruning.plan import PruningPlan

    from .loading import build_inputs
    from .shapes import PAPER_BUDGETS, PAPER_KEEP_RATIOS

    if bench_model.family not in PAPER_KEEP_RATIOS:
        return list(PAPER_BUDGETS[bench_model.family])
    tokens = int((build_inputs(bench_model, image_size, 0)["input_ids"] == bench_model.config.image_token_id).sum())
    return [PruningPlan.build("scope", keep_ratio=r).ratio_budget(tokens) for r in PAPER_KEEP_RATIOS[bench_model.family]]


@contextmanager
def _exit_on_bad_input() -> Iterator[None]:
    """Bad input ends the command with its message and exit status 2, without a traceback."""
    from scope_eval.pruning import PruningError

    from .loading import BenchError

    try:
        yield
    except (BenchError, PruningError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=2) from error


def _check_numbers(**values: int | None) -> None:
    """Counts that torch or the runner would reject with a raw error (torch.set_num_threads(0): RuntimeError)."""
    from .loading import BenchError

    minimum = {"threads": 1, "repeats": 1, "warmup": 0, "prompt_tokens": 0, "new_tokens": 1}
    for name, value in values.items():
        if value is not None and value < minimum[name]:
            option = "--" + name.replace("_", "-")
            raise BenchError(f"{option} must be at least {minimum[name]}, got {value}")


def _device_name(device: str | None) -> str | None:
    """The --device text, checked the way torch parses it, so a typo names the accepted forms."""
    import torch

    from .loading import BenchError

    if device is None:
        return None
    try:
        torch.device(device)
    except (RuntimeError, ValueError):
        raise BenchError(f"unknown --device {device!r}; use cpu, cuda or cuda:N") from None
    return device


def _method_list(text: str) -> list[str]:
    import importlib

    from scope_eval.pruning import METHODS, PruningError

    importlib.import_module("scope_eval.pruning.methods")  # registers every method
    names = list(METHODS) if text.strip() == "all" else [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in METHODS]
    if unknown or not names:
        raise PruningError(
            f"unknown method(s) {', '.join(unknown) or '(none given)'}; choose from: {', '.join(METHODS)}, or all"
        )
    return names


def _method_options(items: list[str]) -> dict[str, dict[str, object]]:
    """``["cdpruner.text_encoder=PATH", "fastv.layer=1"]`` -> {method: {option: value}}; values read as YAML
    scalars (1 -> int, 0.5 -> float, true -> bool), as in a sweep config."""
    import yaml

    from .loading import BenchError

    options: dict[str, dict[str, object]] = {}
    for item in items:
        target, separator, value = item.partition("=")
        method, dot, key = target.partition(".")
        if not separator or not dot or not method or not key:
            raise BenchError(f"--method-option takes METHOD.KEY=VALUE, e.g. fastv.layer=1; got {item!r}")
        options.setdefault(method.strip(), {})[key.strip()] = yaml.safe_load(value)
    return options


def _int_list(text: str, option: str) -> list[int]:
    from .loading import BenchError

    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise BenchError(f"{option} takes whole numbers separated by commas, e.g. 192,128,64; got {text!r}") from error


def _image_size(text: str) -> tuple[int, int]:
    from .loading import BenchError

    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise BenchError(f"--image-size takes HEIGHTxWIDTH in pixels, e.g. 480x640; got {text!r}")
    return int(parts[0]), int(parts[1])


def _command_line(shape, model, settings, *, dtype: str, device: str, threads, out, attention) -> str:
    """The run as an explicit command line (every default resolved), for the record."""
    words = [
        "scope-eval",
        "bench",
        "--shape" if shape else "--model",
        shape or model,
        "--methods",
        ",".join(settings.methods),
        "--budgets",
        ",".join(map(str, settings.budgets)),
        "--budget-policy",
        settings.budget_policy,
        "--dtype",
        dtype,
        "--device",
        device,
        "--repeats",
        str(settings.repeats),
        "--warmup",
        str(settings.warmup),
        "--image-size",
        "x".join(map(str, settings.image_size)),
        "--prompt-tokens",
        str(settings.prompt_tokens),
        "--new-tokens",
        str(settings.new_tokens),
    ]
    for method, options in settings.method_options.items():
        words += [item for key, value in options.items() for item in ("--method-option", f"{method}.{key}={value}")]
    if attention is not None:
        words += ["--attention", attention]
    if threads is not None:
        words += ["--threads", str(threads)]
    if out is not None:
        words += ["--out", str(out)]
    return shlex.join(words)
