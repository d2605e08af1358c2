#!/usr/bin/env bash
# SCOPE on LLaVA-NeXT-7B (LLaVA-1.6 vicuna 7B) at BUDGET visual tokens, split over the crops as in the
# paper (the paper's Table 2 tasks plus POPE), plus the unpruned model if not done yet, on all visible
# GPUs; then the row beside the paper's.
#   bash run_scope_llava_next_7b.sh 160               # all GPUs, ./runs
#   bash run_scope_llava_next_7b.sh 160 --dry-run     # print the lmms-eval commands
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec bash "$here/scripts/run_scope_budget.sh" "$(basename "$0")" "$here/configs/llava_next_7b_table2.yaml" --budget none,scope "$@"
