#!/usr/bin/env bash
# Shared body of run_scope_llava_7b.sh and run_scope_llava_next_7b.sh:
#   scripts/run_scope_budget.sh SCRIPT_NAME CONFIG BUDGET [scope-eval sweep options...]
# Runs SCOPE at BUDGET visual tokens, plus the unpruned model if it is not finished yet, on the tasks of
# CONFIG across all visible GPUs, then prints that row beside the paper's. Options after BUDGET go to
# `scope-eval sweep` (e.g. --pretrained CKPT, --data-dir DIR, --num-processes N, --limit N, --output DIR,
# --dry-run); a later --num-processes overrides the GPU count.
set -euo pipefail

script=$1
shift
if [[ $# -lt 2 || "$2" == -* ]]; then
    echo "usage: bash $script BUDGET [--pretrained CKPT] [--data-dir DIR] [--num-processes N] [--limit N] [--output DIR] [--dry-run]" >&2
    exit 2
fi
config=$1
budget=$2
shift 2
# BUDGET is checked where every budget is checked, when `scope-eval sweep` builds each cell's pruning plan.

output=./runs
dry_run=0
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[i]}" in
        --output) output=${args[i + 1]:-$output} ;;
        --output=*) output=${args[i]#--output=} ;;
        --dry-run) dry_run=1 ;;
    esac
done

# All visible GPUs by default (at least one process); the caller's --num-processes comes later and wins.
gpus=$(python -c "import torch; print(max(1, torch.cuda.device_count()))")

status=0
python -m scope_eval sweep "$config" --method none --method scope --budget "$budget" --num-processes "$gpus" "$@" || status=$?
if [[ $dry_run -eq 0 && -d "$output" ]]; then
    python -m scope_eval report "$output" --method none --method scope --budget "$budget" || true
fi
exit $status
