"""Bench outputs: JSON, a markdown section, a rich table for the terminal, a PNG plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

Columns = list[tuple[str, str]]
CASE = [("method", "method"), ("budget", "budget")]
# Two tables: what was measured, then what it means against the unpruned model.
MEASURED: Columns = [
    *CASE,
    ("visual_tokens", "visual tok"),
    ("prefill_tokens", "LM seq"),
    ("vision_ms", "vision ms"),
    ("selection_ms", "select ms"),
    ("lm_prefill_ms", "LM prefill ms"),
    ("ttft_ms", "TTFT ms"),
    ("ttft_range", "TTFT min-max"),
    ("ttft_cpu_ms", "TTFT CPU-time ms"),
    ("decode_tokens_per_s", "decode tok/s"),
    ("total_ms", "total ms"),
    ("peak_memory_mb", "peak MB"),
    ("memory_increase_mb", "+MB in pass"),
]
COMPARED: Columns = [
    *CASE,
    ("prefill_gflops", "prefill GFLOPs"),
    ("selection_gflops", "select GFLOPs"),
    ("ideal_speedup", "ideal x"),
    ("measured_speedup", "measured x"),
    ("measured_cpu_time_speedup", "CPU-time x"),
    ("ideal_lm_speedup", "LM ideal x"),
    ("measured_lm_speedup", "LM measured x"),
    ("end_to_end_speedup", "total x"),
    ("selection_share", "select / unpruned TTFT"),
]


NO_ESTIMATE = "n/a"  # a method that gives no FLOP estimate: its selection is not in the prefill total


def cells(row: dict[str, Any], columns: Columns) -> list[str]:
    ttft = row["samples_ms"]["ttft"]
    selection_flops = row["flops"]["selection"]
    values = {
        **row,
        "prefill_gflops": row["flops"]["total_prefill"] / 1e9,
        "selection_gflops": None if selection_flops is None else selection_flops / 1e9,
        "selection_share": row["selection_share_of_unpruned_prefill"],
        "ttft_range": f"{min(ttft):.4g}-{max(ttft):.4g}",
    }
    out = []
    for key, _ in columns:
        value = values[key]
        if value is None and key == "selection_gflops":
            out.append(NO_ESTIMATE)  # a method without a FLOP model (selection_flops returned None)
        elif value is None:
            out.append("all" if key == "budget" else "–")
        elif key == "selection_share":
            out.append(f"{100 * value:.2f}%")
        elif key.endswith("speedup"):
            out.append(f"{value:.2f}")
        elif isinstance(value, float):
            out.append(f"{value:.4g}" if value < 10 else f"{value:.1f}")
        else:
            out.append(str(value))
    return out


def markdown_table(rows: list[dict[str, Any]], columns: Columns) -> list[str]:
    lines = ["| " + " | ".join(header for _, header in columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(cells(row, columns)) + " |" for row in rows]


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
    load = report["load_average"]
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
        (
            f"- Processor call (outside the timed passes, same for every case): {report['preprocessing_ms']:.1f} ms; "
            f"load average (1/5/15 min) at start {load['start']}, at end {load['end']}"
        ),
        "",
        *markdown_table(report["rows"], MEASURED),
        "",
        *markdown_table(report["rows"], COMPARED),
    ]
    return "\n".join(lines) + "\n"


def print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=250)
    for heading, columns in (("measured", MEASURED), ("against the unpruned model", COMPARED)):
        table = Table(title=f"{report['model']['source']} on {report['model']['device']}: {heading}")
        for key, header in columns:
            table.add_column(header, justify="left" if key == "method" else "right")
        for row in report["rows"]:
            table.add_row(*cells(row, columns))
        console.print(table)


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
