#!/usr/bin/env bash
# Shared body of the paper scripts (run_scope_llava_7b.sh, run_scope_llava_next_7b.sh, run_scope_qwen2_vl_7b.sh):
#   scripts/run_scope_budget.sh SCRIPT_NAME CONFIG BUDGET_OPTION METHODS VALUE [scope-eval sweep options...]
# BUDGET_OPTION is --budget (visual tokens per image) or --keep-ratio (share of each image's tokens), VALUE
# its value; METHODS a comma list (the unpruned `none` first, run only if not finished yet). Runs them on
# the tasks of CONFIG across all visible GPUs, then prints the rows beside the paper's. Options after VALUE
# go to `scope-eval sweep` (e.g. --pretrained CKPT, --data-dir DIR, --num-processes N, --limit N,
# --output DIR, --dry-run); a later --num-processes overrides the GPU count.
set -euo pipefail

script=$1
config=$2
budget_option=$3
methods=$4
shift 4
if [[ $# -lt 1 || "$1" == -* ]]; then
    echo "usage: bash $script BUDGET [--pretrained CKPT] [--data-dir DIR] [--num-processes N] [--limit N] [--output DIR] [--dry-run]" >&2
    exit 2
fi
value=$1
shift
# VALUE is checked where every budget and keep ratio is checked, when `scope-eval sweep` builds each cell's plan.

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
selected=()
for method in ${methods//,/ }; do
    selected+=(--method "$method")
done
# The report narrows to the budget; a keep ratio's rows are the only ones the Table 8 config has.
report_budget=()
[[ $budget_option == --budget ]] && report_budget=(--budget "$value")

# All visible GPUs by default (at least one process); the caller's --num-processes comes later and wins.
gpus=$(python -c "import torch; print(max(1, torch.cuda.device_count()))")

status=0
python -m scope_eval sweep "$config" "${selected[@]}" "$budget_option" "$value" --num-processes "$gpus" "$@" || status=$?
if [[ $dry_run -eq 0 && -d "$output" ]]; then
    python -m scope_eval report "$output" "${selected[@]}" "${report_budget[@]}" || true
fi
exit $status
