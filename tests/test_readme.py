"""The README's Python example runs as written (on the shipped toy checkpoint)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README has no Python example"
    exec(compile(blocks[0], "README.md", "exec"), {})
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-2:] == ["yes", "[64]"]  # the toy, pruned to 64 tokens, sees the red circle of its toy scene


def test_readme_opens_with_the_first_run_and_the_two_set_up_commands():
    """The first commands a reader meets: `make smoke` (about a minute), `make demo` and `make test`, all
    Makefile targets that build the environment themselves."""
    first_block = re.search(r"```bash\n(.*?)```", README.read_text(), flags=re.S).group(1)
    assert [line.split()[1] for line in first_block.splitlines() if line.startswith("make ")] == ["smoke", "demo", "test"]
    makefile = (README.parent / "Makefile").read_text()
    for target in ("smoke", "demo", "test"):
        assert re.search(rf"^{target}: \$\(STAMP\)", makefile, flags=re.M), target
    assert "configs/smoke_toy.yaml" in makefile and "scope-eval report runs/smoke" in makefile


def test_readme_lmms_eval_one_liner_runs_offline_on_the_toy(tmp_path):
    """The README's lmms-eval line, as written (paths relative to the repository), with the output moved to tmp."""
    import os
    import shlex
    import subprocess
    import sys

    line = next(l for l in README.read_text().splitlines() if l.startswith("HF_HUB_OFFLINE=1 python -m lmms_eval"))
    words = shlex.split(line)
    env = {**os.environ, words[0].split("=")[0]: words[0].split("=")[1], "HF_DATASETS_CACHE": str(tmp_path / "hf")}
    command = [sys.executable if w == "python" else w for w in words[1:]]
    command[command.index("--output_path") + 1] = str(tmp_path / "out")
    result = subprocess.run(command, cwd=README.parent, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    (results,) = (tmp_path / "out").rglob("*_results.json")
    import json

    data = json.loads(results.read_text())
    assert data["n-samples"]["scope_toy_pope"]["effective"] == 8 and "pope_f1_score,none" in data["results"]["scope_toy_pope"]
    (samples,) = (tmp_path / "out").rglob("*_samples_scope_toy_pope.jsonl")
    assert all(json.loads(l)["token_counts"][0]["visual_tokens"] == [64] for l in samples.read_text().splitlines())
