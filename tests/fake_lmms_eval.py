"""A stand-in for `python -m lmms_eval` in runner tests: same arguments, same output files, no model.

Options before the lmms-eval arguments control it: --sleep SECONDS (per launch, after writing a partial
file, so an interrupted launch leaves debris), --broken TASK (that task gets no metrics, like a crash the
lmms-eval CLI swallows), --no-results (exit 0 without writing anything). Samples carry token_counts as
the plugin logs them.
Scores are a deterministic function of method and budget so that reports have something to order.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from scope_eval.sweeps.tasks import expected_keys

FULL_TOKENS = 576


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--broken", action="append", default=[])
    parser.add_argument("--no-results", action="store_true")
    parser.add_argument("--model")
    parser.add_argument("--model_args", default="")
    parser.add_argument("--tasks")
    parser.add_argument("--batch_size")
    parser.add_argument("--log_samples", action="store_true")
    parser.add_argument("--output_path")
    parser.add_argument("--include_path")
    parser.add_argument("--limit")
    parser.add_argument("--gen_kwargs")
    args = parser.parse_args(argv)
    model_args = dict(item.split("=", 1) for item in args.model_args.split(",") if item)
    out = Path(args.output_path) / model_args["pretrained"].replace("/", "__")
    out.mkdir(parents=True, exist_ok=True)
    (out / "partial.txt").write_text("evaluation in progress\n")
    time.sleep(args.sleep)
    if args.no_results:
        print("Traceback (most recent call last): fake evaluation error", file=sys.stderr)
        return 0
    budget = int(model_args.get("budget", FULL_TOKENS))
    quality = {"none": 1.0, "scope": 0.97, "random": 0.85}.get(model_args["method"], 0.9)
    fraction = 0.8 * quality * (0.9 + 0.1 * budget / FULL_TOKENS)
    results, n_samples = {}, {}
    n = int(args.limit) if args.limit else 10
    for task in args.tasks.split(","):
        n_samples[task] = {"original": 100, "effective": n}
        if task in args.broken:
            results[task] = {"alias": task}
            continue
        results[task] = {"alias": task}
        for key in expected_keys(task, (Path(args.include_path),) if args.include_path else ()):
            results[task][key] = 100 * fraction if key.startswith(("gpt_eval", "mme_")) else fraction
        with (out / f"20250101_000000_samples_{task}.jsonl").open("w") as samples:
            for doc_id in range(n):
                counts = [{"visual_tokens": [budget - doc_id % 2], "output_tokens": 1}]  # as the plugin logs them
                samples.write(json.dumps({"doc_id": doc_id, "token_counts": counts}) + "\n")
    payload = {"results": results, "n-samples": n_samples, "config": {"model": args.model, "model_args": args.model_args}}
    (out / "20250101_000000_results.json").write_text(json.dumps(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
