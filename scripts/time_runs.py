"""Wall and CPU time of the project's own runs (the smoke sweep, `make regress`, `make demo`) per sweep route.

    .venv/bin/python scripts/time_runs.py --job smoke --job regress --repeats 3 --output runs/timing
    .venv/bin/python scripts/time_runs.py --job demo --route worker:2 --repeats 1
    .venv/bin/python scripts/time_runs.py --job demo --route worker:2 --report-processes 2 --report-processes 1

A route is ISOLATION:PROCESSES[:PARALLEL]: process:1 is the route before issue 19 (one lmms-eval launch per
cell), worker:1 loads each model once, worker:2:documents also splits each cell's documents over 2
data-parallel processes, worker:2:cells spreads whole cells over 2 one-process workers; worker:2 (no
PARALLEL) takes the sweep configs' own choice, as `make demo` and `make regress` do (the toy configs: cells).

Each run starts in a fresh output folder (nothing resumed) and runs the same scope-eval commands as the
Makefile target. Runs are interleaved (repeat 1 of every job and route, then repeat 2, ...) so that a change
in the machine's load hits both routes alike. Per run: wall seconds, CPU seconds of the children (user +
sys), the 1-minute load average at the end, and the share of the wall time spent outside generation
(1 - the sum of every answered document's generate_s / processes / wall: process and model start-up,
lmms-eval's own per-evaluation work, reports; with 2 processes the documents are answered side by side,
so their sum is halved). Writes timing.json and timing.md (medians) under --output.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROUTES = ("process:1", "worker:1", "worker:2:documents", "worker:2:cells")
BIN = Path(sys.executable).parent


def job_commands(job: str, out: Path, sweep_options: list[str], report_options: list[str] = ()) -> list[list[str]]:
    """The scope-eval commands of a Makefile target, writing under `out`."""
    scope_eval = str(BIN / "scope-eval")
    if job == "smoke":
        return [[scope_eval, "sweep", "configs/smoke_toy.yaml", "--output", str(out), *sweep_options]]
    if job == "regress":
        return [[scope_eval, "regress", "configs/regression/toy.yaml", "--output", str(out), *sweep_options]]
    if job == "demo":
        sweeps = ["configs/toy_llava15.yaml", "configs/toy_llava_next.yaml", "configs/toy_qwen2_vl.yaml"]
        return [[scope_eval, "sweep", *sweeps, "--output", str(out), *sweep_options]] + [
            [scope_eval, "report", str(out), "--output", str(out / "report"), *report_options]
        ]
    raise SystemExit(f"unknown job {job!r}; choose smoke, regress or demo")


def step_name(command: list[str]) -> str:
    """`sweep configs/x.yaml configs/y.yaml`, `regress configs/...`, `report`: the command without machine paths."""
    subcommand, *arguments = command[1:]
    configs = arguments[: arguments.index("--output")] if "--output" in arguments else arguments
    return " ".join([subcommand, *configs]) if subcommand in ("sweep", "regress") else subcommand


def generation_seconds(out: Path) -> float:
    """Sum of generate_s over every answered document of the runs under `out` (samples files)."""
    from scope_eval.sweeps.cost import sample_costs

    return sum(float(cost.get("generate_s") or 0.0) for samples in out.rglob("samples_*.jsonl") for cost in sample_costs(samples))


def route_options(route: str) -> list[str]:
    """The sweep options of a route ISOLATION:PROCESSES[:PARALLEL] (no PARALLEL: the config's own)."""
    isolation, processes, *parallel = route.split(":")
    return ["--isolation", isolation, "--num-processes", processes, *(["--parallel", *parallel] if parallel else [])]


def timed_run(job: str, route: str, log: Path, report_processes: list[int] = ()) -> dict:
    """`report_processes`: the demo's report on that many processes (the first; the Makefile's default when
    none), then again on each further count into another folder, timed apart (`other_reports`), not counted
    in `wall_s`: the same sweeps measured once, the report both ways."""
    processes = route.split(":")[1]
    sweep_options = route_options(route)
    report_options = ["--num-processes", str(report_processes[0])] if report_processes else []
    others = []
    with tempfile.TemporaryDirectory(prefix=f"time-{job}-") as scratch:
        out = Path(scratch) / "runs"
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        steps = []  # wall seconds of each command (each sweep, the report)
        with log.open("a") as handle:
            for command in job_commands(job, out, sweep_options, report_options):
                handle.write(f"$ {' '.join(command)}\n")
                handle.flush()
                step_started = time.perf_counter()
                result = subprocess.run(command, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT)
                if result.returncode != 0:
                    raise SystemExit(f"{job} ({route}) failed with exit code {result.returncode}; see {log}")
                steps.append({"step": step_name(command), "wall_s": round(time.perf_counter() - step_started, 1)})
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        generate = generation_seconds(out)
        for count in report_processes[1:] if job == "demo" else ():
            command = [str(BIN / "scope-eval"), "report", str(out), "--output", str(out / f"report_{count}"), "--num-processes", str(count)]
            report_started = time.perf_counter()
            with log.open("a") as handle:
                subprocess.run(command, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT, check=True)
            others.append({"report_processes": count, "wall_s": round(time.perf_counter() - report_started, 1)})
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"job": job, "route": route, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
            "load_1min": round(os.getloadavg()[0], 2), "generate_s": round(generate, 1),
            "outside_generation": round(1.0 - generate / int(processes) / wall, 3), "steps": steps,
            **({"report_processes": report_processes[0], "other_reports": others} if report_processes and job == "demo" else {})}  # fmt: skip


def summary_table(runs: list[dict]) -> str:
    lines = ["| job | route | runs | wall s (each) | wall median | CPU s median | outside generation (median) | load (each) |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    groups: dict[tuple[str, str], list[dict]] = {}
    for run in runs:
        groups.setdefault((run["job"], run["route"]), []).append(run)
    for (job, route), group in groups.items():
        walls = [r["wall_s"] for r in group]
        lines.append(
            f"| {job} | {route} | {len(group)} | {', '.join(f'{w:.1f}' for w in walls)} | {statistics.median(walls):.1f} | "
            f"{statistics.median(r['cpu_s'] for r in group):.1f} | {100 * statistics.median(r['outside_generation'] for r in group):.0f} % | "
            f"{', '.join(str(r['load_1min']) for r in group)} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--job", action="append", choices=("smoke", "regress", "demo"), required=True)
    parser.add_argument("--route", action="append", choices=(*ROUTES, "worker:2"), help=f"routes to time (default: all of {', '.join(ROUTES)})")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--report-processes", type=int, action="append", default=[],
                        help="demo: its report on this many processes (repeat: each further count timed after it, apart)")
    parser.add_argument("--output", type=Path, default=REPO / "runs" / "timing")
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    # make regress's own set-up step (not timed): the original-codebase copy of the toy its config reads
    subprocess.run([str(BIN / "scope-eval"), "toy-export", "--output", "runs/toy_original"], cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    runs = []
    for repeat in range(args.repeats):
        for job in args.job:
            for route in args.route or ROUTES:
                run = timed_run(job, route, args.output / "timing.log", args.report_processes)
                run.update(repeat=repeat + 1)
                runs.append(run)
                print(json.dumps(run), flush=True)
                (args.output / "timing.json").write_text(json.dumps(runs, indent=1) + "\n")
    (args.output / "timing.md").write_text(summary_table(runs))
    print(summary_table(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
