#!/usr/bin/env bash
# `make test-latest`: what the newest releases allowed by pyproject.toml's ranges do to the fast tests.
# Builds a throwaway environment (deleted on exit), never touches .venv or the lock; not run by CI.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
env_dir=$(mktemp -d)
trap 'rm -rf "$env_dir"' EXIT

"$python" -m venv "$env_dir/venv"
bin=$env_dir/venv/bin
"$bin/pip" install --quiet --upgrade pip
"$bin/pip" install --quiet --upgrade --upgrade-strategy eager -e ".[harness,dev]"
"$bin/pip" install --quiet --no-deps -r requirements/llava.in
echo "newest resolution:"
"$bin/pip" list --format=freeze | grep -iE '^(torch|transformers|lmms-eval|accelerate|filelock|datasets|llava-torch)=='
"$bin/python" -m pytest -q -m "not slow and not lock" -p no:cacheprovider "$@"
