#!/usr/bin/env bash
# Re-resolve the locked environment (`make lock`): requirements/requirements.lock.txt, every package at an exact version
# with hashes (pip-tools), and requirements/llava.txt, the original LLaVA codebase pinned with its hash
# for its separate --no-deps install. Run `make test-latest` first to see what the newest releases break.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT

"$python" -m venv "$tools/venv"
"$tools/venv/bin/pip" install --quiet "pip==25.3" "pip-tools==7.6.2"

"$tools/venv/bin/pip-compile" --quiet --upgrade --generate-hashes --allow-unsafe --strip-extras --all-extras \
    --no-emit-index-url --no-emit-find-links \
    --output-file requirements/requirements.lock.txt pyproject.toml requirements/lock.in

# llava-torch's own pins (torch 2.0, transformers 4.36) cannot be resolved with the lock, so it is
# pinned alone: the version named in llava.in and the hash of the file pip downloads for it.
"$tools/venv/bin/pip" download --quiet --no-deps --only-binary=:all: --dest "$tools/llava" -r requirements/llava.in
{
    echo "# Written by scripts/lock.sh from requirements/llava.in; installed with --no-deps by make setup."
    for wheel in "$tools"/llava/*.whl; do
        name=$(basename "$wheel")
        version=$(echo "$name" | cut -d- -f2)
        hash=$("$tools/venv/bin/pip" hash --algorithm sha256 "$wheel" | sed -n 's/^--hash=//p')
        echo "llava-torch==$version --hash=$hash"
    done
} > requirements/llava.txt
echo "locked: $(grep -c '^[A-Za-z0-9]' requirements/requirements.lock.txt) packages in requirements/requirements.lock.txt, $(grep -c '^llava' requirements/llava.txt) in requirements/llava.txt"
