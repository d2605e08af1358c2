"""Bench outputs: JSON, a markdown section, a rich table for the terminal, a PNG plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

COLUMNS: list[tuple[str, str]] = [
    ("method", "method"),
    ("budget", "budget"),
    ("visual_tokens", "visual tok"),
    ("prefill_tokens", "LM seq"),
    ("vision_ms", "vision ms"),
    ("selection_ms", "select ms"),
    ("lm_prefill_ms", "LM prefill ms"),
    ("ttft_ms", "TTFT ms"),
    ("decode_tokens_per_s", "decode tok/s"),
    ("total_ms", "total ms"),
    ("peak_memory_mb", "peak MB"),
    ("memory_increase_mb", "+MB in pass"),
    ("prefill_gflops", "prefill GFLOPs"),
    ("ideal_speedup", "ideal x"),
    ("measured_speedup", "measured x"),
    ("ideal_lm_speedup", "LM ideal x"),
    ("measured_lm_speedup", "LM measured x"),
    ("end_to_end_speedup", "total x"),
    ("selection_share", "select / unpruned TTFT"),
]


def cells(row: dict[str, Any]) -> list[str]:
    values = {
        **row,
        "prefill_gflops": row["flops"]["total_prefill"] / 1e9,
        "selection_share": row["selection_share_of_unpruned_prefill"],
    }
    out = []
    for key, _ in COLUMNS:
        value = values[key]
        if value is None:
            out.append("–" if key != "budget" else "all")
        elif key == "selection_share":
            out.append(f"{100 * value:.2f}%")
        elif key.endswith("speedup"):
            out.append(f"{value:.2f}")
        elif isinstance(value, float):
            out.append(f"{value:.4g}" if value < 10 else f"{value:.1f}")
        else:
            out.append(str(value))
    return out


def write_json(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")


def markdown(report: dict[str, Any], title: str | None = None) -> str:
    model, hardware, settings = report["model"], report["hardware"], report["settings"]
    device = (
        hardware.get("gpu")
        or f"{hardware['cpu']} ({hardware['cpu_count']} cores visible, torch threads {hardware['torch_threads']})"
    )
    height, width = settings["image_size"]
    lines = [
        f"## {title or model['source']}",
        "",
        f"- Command: `{report['command']}`",
        (
            f"- Model: {model['source']} ({model['family']}, {model['parameters']:,} parameters, "
            f"{model['dtype']} on {model['device']})"
        ),
        (
            f"- Hardware: {device}; torch {hardware['torch']}, transformers {hardware.get('transformers', '?')}, "
            f"{hardware['platform']}"
        ),
        (
            f"- Input: one {height}x{width} image, {settings['prompt_tokens']} prompt tokens, "
            f"{settings['new_tokens']} new tokens (greedy); budget policy {settings['budget_policy']}; "
            f"{settings['warmup']} warm-up round(s), medians of {settings['repeats']} repeat(s); {report['created']}"
        ),
        f"- Memory: {report['conventions']['memory']}",
        "",
        "| " + " | ".join(header for _, header in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(cells(row)) + " |" for row in report["rows"]]
    return "\n".join(lines) + "\n"


def print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"scope-eval bench: {report['model']['source']} on {report['model']['device']}")
    for key, header in COLUMNS:
        table.add_column(header, justify="left" if key == "method" else "right")
    for row in report["rows"]:
        table.add_row(*cells(row))
    Console(width=250).print(table)


def plot(report: dict[str, Any], path: Path) -> None:
    """Prefill time, prefill FLOPs and speed-up (measured beside ideal) against retained visual tokens."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_method: dict[str, list[dict[str, Any]]] = {}
    for row in report["rows"]:
        by_method.setdefault(row["method"], []).append(row)
    reference = by_method["none"][0]
    flops_unit, flops_scale = ("TFLOPs", 1e12) if reference["flops"]["total_prefill"] >= 1e12 else ("GFLOPs", 1e9)
    figure, (time_axis, flops_axis, speed_axis) = plt.subplots(1, 3, figsize=(16, 4.8))
    for method, method_rows in by_method.items():
        method_rows = sorted(method_rows, key=lambda r: r["visual_tokens"])
        if method != "none":
            method_rows = [*method_rows, reference]
        tokens = [r["visual_tokens"] for r in method_rows]
        style = {"marker": "o", "label": method}
        time_axis.plot(tokens, [r["ttft_ms"] for r in method_rows], **style)
        flops_axis.plot(tokens, [r["flops"]["total_prefill"] / flops_scale for r in method_rows], **style)
        (line,) = speed_axis.plot(tokens, [r["measured_speedup"] for r in method_rows], **style)
        if method != "none":  # the ideal differs per method only by its selection FLOPs
            speed_axis.plot(tokens, [r["ideal_speedup"] for r in method_rows], "--", color=line.get_color(), alpha=0.6)
    speed_axis.plot([], [], "k--", alpha=0.6, label="ideal (FLOP ratio), dashed")
    time_axis.set(title="time to first token (median)", xlabel="visual tokens reaching the LM", ylabel="ms")
    flops_axis.set(
        title="prefill FLOPs (vision + selection + projector + LM)",
        xlabel="visual tokens reaching the LM",
        ylabel=flops_unit,
    )
    speed_axis.set(
        title="speed-up over unpruned: measured vs ideal",
        xlabel="visual tokens reaching the LM",
        ylabel="x faster than 'none'",
    )
    for axis in (time_axis, flops_axis, speed_axis):
        axis.grid(alpha=0.3)
    speed_axis.legend(fontsize=8)
    model = report["model"]
    figure.suptitle(f"{model['source']} ({model['dtype']}, {report['hardware'].get('gpu') or model['device']})")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
