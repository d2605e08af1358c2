#!/usr/bin/env bash
# SCOPE on LLaVA-1.5-7B at BUDGET visual tokens (the paper's Table 1 tasks), plus the unpruned model
# if not done yet, on all visible GPUs; then the row beside the paper's.
#   bash run_scope_llava_7b.sh 64                     # all GPUs, ./runs
#   bash run_scope_llava_7b.sh 64 --dry-run           # print the lmms-eval commands
#   bash run_scope_llava_7b.sh 64 --pretrained /ckpt/llava-v1.5-7b --data-dir /data/lmms --num-processes 2
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec bash "$here/scripts/run_scope_budget.sh" "$(basename "$0")" "$here/configs/llava15_7b_table1.yaml" --budget none,scope "$@"
