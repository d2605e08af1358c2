#!/usr/bin/env bash
# SCOPE and DivPrune on Qwen2-VL-7B-Instruct keeping PERCENT % of each image's visual tokens (the paper's
# appendix Table 8: 25 or 10; GQA, MMBench, MME, POPE), plus the unpruned model if not done yet, on all
# visible GPUs; then the rows beside the paper's.
#   bash run_scope_qwen2_vl_7b.sh 25                  # all GPUs, ./runs
#   bash run_scope_qwen2_vl_7b.sh 25 --dry-run        # print the lmms-eval commands
#   bash run_scope_qwen2_vl_7b.sh 10 --pretrained /ckpt/Qwen2-VL-7B-Instruct --data-dir /data/lmms --num-processes 2
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [[ $# -lt 1 || "$1" == -* ]]; then
    echo "usage: bash $(basename "$0") PERCENT [--pretrained CKPT] [--data-dir DIR] [--num-processes N] [--limit N] [--output DIR] [--dry-run]" >&2
    exit 2
fi
percent=$1
shift
# PERCENT -> keep_ratio (25 -> 0.25); the ratio itself is checked where every keep_ratio is, when the sweep builds each plan.
ratio=$(python -c "
import math, sys
try:
    p = float(sys.argv[1])
except ValueError:
    p = math.nan
if not 0 < p <= 100:
    sys.exit(f'PERCENT must be in (0, 100], e.g. 25 (the share of visual tokens kept), got {sys.argv[1]!r}')
print(f'{p / 100:g}')" "$percent")

exec bash "$here/scripts/run_scope_budget.sh" "$(basename "$0")" "$here/configs/qwen2_vl_7b_table8.yaml" --keep-ratio none,scope,divprune "$ratio" "$@"
