"""`scope-eval bench-selection`: what SCOPE's token selection costs, fast exact greedy vs the naive loop.

Times, in one run and on the same synthetic inputs, the paper-style per-step implementation
(``naive_scope_select``: fresh masked N x N copies at every step) against the exact implementations of
``scope_select`` (``inplace``, ``lazy`` and ``auto``, the one the methods use), for the paper's settings:
LLaVA-1.5 (1 x 576 tokens, K = 64/128/192), LLaVA-NeXT ``per_crop`` (5 crops x 576, K/5 per crop for
K = 160/320/640) and LLaVA-NeXT ``global`` (1 x 2880, K = 160/320/640). Every time includes the cosine
similarity matrix; its cost alone is reported as ``similarity``. Warm-up calls, medians over repeats,
``torch.cuda.synchronize`` around each call on CUDA. Selections are checked against the ``inplace`` result
(and that one against the float64 reference with ``--reference``).
"""

from __future__ import annotations

import json
import os
import shlex
import statistics
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Callable, Optional

import torch
import typer

from scope_eval.provenance import provenance

from .loading import BenchError, parse_device
from .summary import hardware
from scope_eval.pruning.plan import PruningPlan
from scope_eval.pruning.greedy import scope_select
from scope_eval.pruning.greedy_kernels import quantise_similarity
from scope_eval.pruning.greedy_reference import naive_scope_select, reference_scope_select
from scope_eval.pruning.similarity import cosine_similarity

SelectFn = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]

IMPLEMENTATIONS: dict[str, SelectFn] = {
    "naive": naive_scope_select,
    "inplace": partial(scope_select, variant="inplace", warn_degenerate=False),
    "lazy": partial(scope_select, variant="lazy", warn_degenerate=False),
    "auto": partial(scope_select, warn_degenerate=False),  # as the methods call it
}
BASELINE = "naive"
EXACT = "inplace"  # the selection every other implementation is compared with
TOKENS_PER_CROP = 576  # CLIP ViT-L/14 at 336 px, LLaVA-1.5's and LLaVA-NeXT's vision tower


@dataclass(frozen=True)
class SelectionCase:
    """One selection call: ``rows`` images or crops of ``tokens`` tokens, ``keep`` kept per row."""

    setting: str
    budget: int  # the paper's K per image
    rows: int
    tokens: int
    keep: int


def paper_cases() -> list[SelectionCase]:
    """The paper's settings, each split over crops as the adapters split it (PruningPlan.crop_selection)."""
    settings = [("LLaVA-1.5", 1, "per_crop", (64, 128, 192)), ("LLaVA-NeXT per_crop", 5, "per_crop", (160, 320, 640)),
                ("LLaVA-NeXT global", 5, "global", (160, 320, 640))]
    cases = []
    for setting, crops, policy, budgets in settings:
        for budget in budgets:
            split = PruningPlan.build("scope", budget, policy).crop_selection(crops, TOKENS_PER_CROP)
            cases.append(SelectionCase(setting, budget, split.groups, split.tokens, split.budget))
    return cases


@dataclass
class Timing:
    case: SelectionCase
    implementation: str
    times_ms: list[float]  # wall clock
    cpu_times_ms: list[float]
    identical: Optional[bool] = None  # same selection as EXACT
    matches_reference: Optional[bool] = None  # EXACT only, with --reference

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)

    @property
    def median_cpu_ms(self) -> float:
        return statistics.median(self.cpu_times_ms)


@dataclass
class BenchResult:
    environment: dict
    timings: list[Timing] = field(default_factory=list)

    def speedup(self, timing: Timing, cpu: bool = False) -> Optional[float]:
        """Naive median / this median, in wall-clock (or CPU) time."""
        baseline = next((t for t in self.timings if t.case == timing.case and t.implementation == BASELINE), None)
        if baseline is None or timing.implementation in (BASELINE, "similarity"):
            return None
        numerator, denominator = (
            (baseline.median_cpu_ms, timing.median_cpu_ms) if cpu else (baseline.median_ms, timing.median_ms)
        )
        return numerator / denominator if denominator > 0 else None


def synthetic_inputs(case: SelectionCase, dim: int, device: torch.device, dtype: torch.dtype, seed: int):
    """Clustered features (real redundancy, as in CLIP patch features) and a peaked CLS saliency."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(case.rows, 48, dim, generator=generator)
    members = torch.randint(0, 48, (case.rows, case.tokens), generator=generator)
    features = torch.gather(centres, 1, members[:, :, None].expand(-1, -1, dim))
    features = features + 0.6 * torch.randn(case.rows, case.tokens, dim, generator=generator)
    saliency = 16 * torch.softmax(2.5 * torch.randn(case.rows, case.tokens, generator=generator), dim=-1)
    return features.to(device, dtype), saliency.to(device, dtype)


@dataclass
class Measured:
    wall_ms: list[float]
    cpu_ms: list[float]  # process CPU time, all threads: robust to other processes sharing the cores
    output: object = None


def time_call(call: Callable[[], object], repeats: int, warmup: int, device: torch.device) -> Measured:
    """``repeats`` calls after ``warmup`` untimed ones, each synchronised on CUDA; keeps the last output."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        call()
    sync()
    measured = Measured([], [])
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        measured.output = call()
        sync()
        measured.wall_ms.append((time.perf_counter() - wall) * 1e3)
        measured.cpu_ms.append((time.process_time() - cpu) * 1e3)
    return measured


def run_selection_bench(
    cases: list[SelectionCase],
    *,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    dim: int = 1024,
    repeats: int = 5,
    naive_repeats: int = 3,
    warmup: int = 1,
    check_reference: bool = True,
    seed: int = 0,
    progress: Callable[[str], None] = lambda line: None,
) -> BenchResult:
    result = BenchResult(environment=describe_environment(device, dtype, dim))
    for number, case in enumerate(cases):
        features, saliency = synthetic_inputs(case, dim, device, dtype, seed + number)
        measured = time_call(partial(_similarity_only, features), repeats, warmup, device)
        result.timings.append(Timing(case, "similarity", measured.wall_ms, measured.cpu_ms))
        selections = {}
        for name, select in IMPLEMENTATIONS.items():
            count = naive_repeats if name == BASELINE else repeats
            measured = time_call(partial(select, features, saliency, case.keep), count, warmup, device)
            selections[name] = measured.output.cpu()
            timing = Timing(case, name, measured.wall_ms, measured.cpu_ms)
            result.timings.append(timing)
            progress(f"{case.setting} K={case.budget} {name}: {timing.median_ms:.1f} ms")
        for timing in result.timings[-len(IMPLEMENTATIONS) :]:
            timing.identical = torch.equal(selections[timing.implementation], selections[EXACT])
            if check_reference and timing.implementation == EXACT:
                reference = reference_scope_select(features, saliency, case.keep).cpu()
                timing.matches_reference = torch.equal(reference, selections[EXACT])
    result.environment.update(load_average("at_end"))
    return result


def _similarity_only(features: torch.Tensor) -> torch.Tensor:
    """The part every implementation shares: the (quantised) cosine similarity matrix."""
    return quantise_similarity(cosine_similarity(features))


def describe_environment(device: torch.device, dtype: torch.dtype, dim: int) -> dict:
    machine = hardware(device)  # the one description of the machine, shared with `scope-eval bench`
    environment = {
        "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "device": device.type,
        "device_name": machine.get("gpu") or machine["cpu"],
        "cpu_count": machine["cpu_count"],
        "torch_threads": machine["torch_threads"],
        "torch": machine["torch"],
        "python": machine["python"],
        "dtype": str(dtype).removeprefix("torch."),
        "feature_dim": dim,
    }
    environment.update(load_average("at_start"))
    environment["provenance"] = provenance()
    return environment


def load_average(when: str) -> dict:
    """The 1-minute load average (runnable processes): above the core count, others were competing."""
    return {f"load_average_1m_{when}": round(os.getloadavg()[0], 2)} if hasattr(os, "getloadavg") else {}


def render_markdown(result: BenchResult, command: str, note: str = "") -> str:
    env = result.environment
    lines = [
        "# SCOPE selection cost: exact fast greedy vs the naive per-step loop",
        "",
        f"Command: `{command}`  ",
        f"Measured {env['date_utc']} UTC on {env['device']} ({env['device_name']}), {env['cpu_count']} cores visible, "
        f"torch {env['torch']} with {env['torch_threads']} threads, Python {env['python']}; inputs {env['dtype']}, "
        f"D = {env['feature_dim']}, synthetic clustered features; 1-minute load average "
        f"{env.get('load_average_1m_at_start', 'n/a')} at the start, {env.get('load_average_1m_at_end', 'n/a')} at the end "
        f"(above {env['cpu_count']} means other processes were competing for the cores).",
        "",
    ]
    if note:
        lines += [note, ""]
    lines += _summary(result)
    lines += [
        "All measurements. Times in ms, each including the similarity matrix: wall clock (median over repeats; min in brackets) "
        "and process CPU time (median; all threads), which other processes on the machine disturb less. "
        "`speed-up` = naive median / median. `same picks` = identical selection to `inplace`; "
        "`= float64 reference` checks `inplace` against the slow float64 greedy.",
        "",
        "| setting | K | rows x N | implementation | wall ms | (min) | CPU ms | speed-up vs naive (wall) | (CPU) "
        "| same picks | = float64 reference |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for timing in result.timings:
        case = timing.case
        lines.append(
            f"| {case.setting} | {case.budget} | {case.rows} x {case.tokens} (k={case.keep}) | {timing.implementation} "
            f"| {timing.median_ms:.1f} | ({min(timing.times_ms):.1f}) | {timing.median_cpu_ms:.1f} "
            f"| {_times(result.speedup(timing))} | {_times(result.speedup(timing, cpu=True))} "
            f"| {_flag(timing.identical)} | {_flag(timing.matches_reference)} |"
        )
    return "\n".join(lines) + "\n"


def _summary(result: BenchResult) -> list[str]:
    """One line per case: naive vs ``auto`` (what the methods run), and the share of the similarity matrix."""
    lines = [
        "Summary: `auto` (what the pruning methods use) against the naive loop: medians of wall-clock and of CPU "
        "time; the similarity matrix's share of `auto` in CPU time.",
        "",
        "| setting | K | naive ms | auto ms | speed-up (wall) | speed-up (CPU) | similarity matrix share |",
        "|---|---|---|---|---|---|---|",
    ]
    for auto in (t for t in result.timings if t.implementation == "auto"):
        naive, similarity = (
            next(t for t in result.timings if t.case == auto.case and t.implementation == name)
            for name in (BASELINE, "similarity")
        )
        share = similarity.median_cpu_ms / auto.median_cpu_ms if auto.median_cpu_ms > 0 else float("nan")
        lines.append(
            f"| {auto.case.setting} | {auto.case.budget} | {naive.median_ms:.1f} | {auto.median_ms:.1f} "
            f"| {_times(result.speedup(auto))} | {_times(result.speedup(auto, cpu=True))} | {share:.0%} |"
        )
    return lines + [""]


def _times(ratio: Optional[float]) -> str:
    return "" if ratio is None else f"{ratio:.1f}x"


def _flag(value: Optional[bool]) -> str:
    return "" if value is None else ("yes" if value else "NO")


def result_as_json(result: BenchResult, command: str) -> str:
    rows = [
        {**asdict(t.case), "implementation": t.implementation, "median_ms": t.median_ms, "times_ms": t.times_ms,
         "median_cpu_ms": t.median_cpu_ms, "cpu_times_ms": t.cpu_times_ms,
         "speedup_vs_naive": result.speedup(t), "cpu_speedup_vs_naive": result.speedup(t, cpu=True),
         "identical_to_inplace": t.identical, "inplace_matches_float64_reference": t.matches_reference}
        for t in result.timings
    ]
    return json.dumps({"command": command, "environment": result.environment, "timings": rows}, indent=2)


def bench_selection(
    device: str = typer.Option("cpu", "--device", help="cpu or cuda (cuda:N)."),
    dtype: str = typer.Option("float32", "--dtype", help="Input dtype of the features: float32, bfloat16 or float16."),
    repeats: int = typer.Option(5, "--repeats", min=1, help="Timed calls per fast implementation (median reported)."),
    naive_repeats: int = typer.Option(3, "--naive-repeats", min=1, help="Timed calls of the slow naive loop."),
    warmup: int = typer.Option(1, "--warmup", min=0, help="Untimed calls before timing."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="torch CPU threads (default: torch's)."),
    setting: Optional[list[str]] = typer.Option(None, "--setting", help="Only these settings: llava15, per_crop, global (repeatable)."),
    reference: bool = typer.Option(True, "--reference/--no-reference", help="Also check inplace against the float64 reference greedy."),
    output: Optional[Path] = typer.Option(None, "--output", help="Write OUTPUT.json (timings) and OUTPUT.md (the table)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the timings as JSON here (old spelling; --output writes both)."),
    markdown_path: Optional[Path] = typer.Option(None, "--markdown", help="Write the table as Markdown here (old spelling; --output writes both)."),
    note: str = typer.Option("", "--note", help="Free text placed above the table in the Markdown (e.g. machine load)."),
) -> None:
    """Time SCOPE's exact selection against the paper-style naive loop at the paper's token budgets."""
    if output is not None:
        json_path, markdown_path = json_path or output.with_suffix(".json"), markdown_path or output.with_suffix(".md")
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in dtypes:
        raise typer.BadParameter(f"choose one of {', '.join(dtypes)}", param_hint="--dtype")
    try:
        torch_device = parse_device(device)
    except BenchError as error:
        raise typer.BadParameter(str(error), param_hint="--device") from None
    if torch_device.type == "cuda" and not torch.cuda.is_available():
        raise typer.BadParameter("CUDA is not available here; use --device cpu", param_hint="--device")
    if threads is not None:
        torch.set_num_threads(threads)
    settings = {"llava15": "LLaVA-1.5", "per_crop": "LLaVA-NeXT per_crop", "global": "LLaVA-NeXT global"}
    unknown = sorted(set(setting or []) - set(settings))
    if unknown:
        raise typer.BadParameter(f"unknown {', '.join(unknown)}; choose from {', '.join(settings)}", param_hint="--setting")
    wanted = {settings[name] for name in setting} if setting else set(settings.values())
    cases = [case for case in paper_cases() if case.setting in wanted]
    result = run_selection_bench(
        cases, device=torch_device, dtype=dtypes[dtype], repeats=repeats, naive_repeats=naive_repeats,
        warmup=warmup, check_reference=reference, progress=lambda line: typer.echo(line, err=True),
    )
    command = shlex.join(
        ["scope-eval", "bench-selection", "--device", device, "--dtype", dtype, "--repeats", str(repeats),
         "--naive-repeats", str(naive_repeats), "--warmup", str(warmup)]
        + (["--threads", str(threads)] if threads is not None else [])
        + [argument for name in setting or [] for argument in ("--setting", name)]
        + ([] if reference else ["--no-reference"])
        + (["--json", str(json_path)] if json_path is not None else [])
        + (["--markdown", str(markdown_path)] if markdown_path is not None else [])
    )
    markdown = render_markdown(result, command, note)
    typer.echo(markdown)
    if markdown_path is not None:
        markdown_path.parent.mkdir(parents=True, exist_ok=True)
        markdown_path.write_text(markdown)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(result_as_json(result, command) + "\n")
    mismatched = [t for t in result.timings if t.identical is False and t.implementation != BASELINE]
    if mismatched:
        typer.echo("error: an exact implementation selected differently from inplace (a bug: please report)", err=True)
        raise typer.Exit(1)
