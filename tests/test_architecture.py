"""The layering ARCHITECTURE.md states, checked on the source: which package may import which, and that
the library (prune()/scope(), the methods, the adapters) runs with none of the harness's packages."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "scope_eval"

# What each part of scope_eval may import from scope_eval (itself included). Library first, then harness.
ALLOWED: dict[str, set[str]] = {
    "checkpoints": set(),
    "provenance": set(),
    "pruning": {"pruning"},
    "cost": {"cost", "pruning"},
    "adapters": {"adapters", "pruning", "checkpoints", "cost"},  # checkpoints: importable from any part (ARCHITECTURE.md); cost: handle.measure() times and prices one call
    "lmms": {"lmms", "adapters", "pruning", "cost", "checkpoints"},
    # harness
    "toy": {"toy", "lmms", "adapters", "pruning"},
    "sweeps": {"sweeps", "lmms", "adapters", "pruning", "checkpoints", "provenance"},
    "bench": {"bench", "cost", "adapters", "pruning", "provenance", "toy"},
    "reports": {"reports", "sweeps", "adapters", "pruning", "provenance"},
    "cli": {"bench", "reports", "sweeps", "toy"},
    "__init__": {"adapters", "pruning"},
    "__main__": {"cli"},
}
LIBRARY = ("checkpoints", "provenance", "pruning", "cost", "adapters", "lmms")
HARNESS_ONLY = {"pandas", "matplotlib", "typer", "rich", "tabulate", "toy_training"}
EVALUATION = {"lmms_eval", "accelerate", "datasets", "decord", "loguru", "PIL"}  # the lmms extra (yaml comes with transformers)


def _part(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0].removesuffix(".py")


def _imports(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports, at any depth (function-level imports too)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package_parts = ["scope_eval", *path.relative_to(PACKAGE).with_suffix("").parts[:-1]]
    if path.name == "__init__.py":
        package_parts = ["scope_eval", *path.relative_to(PACKAGE).parent.parts]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)  # `from . import methods`
    return names


SOURCES = sorted(p for p in PACKAGE.rglob("*.py"))


def test_every_part_of_the_package_is_placed_in_a_layer():
    assert {_part(p) for p in SOURCES} <= set(ALLOWED)


@pytest.mark.parametrize("path", SOURCES, ids=[str(p.relative_to(ROOT)) for p in SOURCES])
def test_imports_follow_the_layering(path):
    part = _part(path)
    imported = {name.split(".")[1] for name in _imports(path) if name.startswith("scope_eval.") and name.count(".") >= 1}
    imported = {name.removesuffix(".py") for name in imported}
    against = sorted(imported - ALLOWED[part] - {part})
    assert not against, f"{path.relative_to(ROOT)} ({part}) imports scope_eval.{', scope_eval.'.join(against)} against ARCHITECTURE.md"


@pytest.mark.parametrize("path", [p for p in SOURCES if _part(p) in LIBRARY], ids=lambda p: str(p.relative_to(ROOT)))
def test_the_library_imports_no_harness_package(path):
    top = {name.split(".")[0] for name in _imports(path)}
    assert not top & HARNESS_ONLY, f"{path.relative_to(ROOT)} imports {sorted(top & HARNESS_ONLY)}"
    # the lmms part is the plugin: lmms-eval and its packages (datasets, PIL, loguru) are its extra
    if _part(path) != "lmms":
        assert not top & EVALUATION, f"{path.relative_to(ROOT)} imports {sorted(top & EVALUATION)} (the lmms extra)"


def test_pyproject_library_needs_torch_and_transformers_only():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = lambda specs: {spec.split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip() for spec in specs}  # noqa: E731
    assert names(project["dependencies"]) == {"torch", "transformers"}
    extras = project["optional-dependencies"]
    assert {"lmms-eval", "accelerate", "datasets"} <= names(extras["lmms"])
    assert {"pandas", "matplotlib", "typer", "rich"} <= names(extras["harness"])
    assert not {"pandas", "matplotlib", "typer", "rich"} & names(extras["lmms"])
    assert names(extras["lmms"]) <= names(extras["harness"])  # the harness runs the plugin


def _site_packages_without(blocked: set[str], target: Path) -> Path:
    """A copy (symlinks) of this environment's site-packages lacking the distributions that provide ``blocked``
    modules, their metadata included: to the interpreter and to transformers' availability checks they are
    not installed."""
    import importlib.metadata as metadata
    import sysconfig

    purelib = Path(sysconfig.get_paths()["purelib"])
    providers = metadata.packages_distributions()
    skipped = set()
    for module in blocked:
        for distribution in providers.get(module, []):
            skipped.update(Path(file).parts[0] for file in metadata.distribution(distribution).files or [])
    target.mkdir()
    for entry in purelib.iterdir():
        if entry.name not in skipped and not entry.name.endswith(".pth"):
            (target / entry.name).symlink_to(entry)
    return target


def test_prune_runs_without_any_harness_or_evaluation_package(tmp_path):
    """What `pip install scope-eval` (no extras) gives: every method through prune() on a tiny LLaVA, in an
    interpreter whose site-packages lacks the harness's and the lmms extra's distributions."""
    blocked = HARNESS_ONLY - {"toy_training"} | EVALUATION
    site = _site_packages_without(blocked, tmp_path / "site-packages")
    script = textwrap.dedent(f"""
        import importlib.util, sys
        BLOCKED = {sorted(blocked)!r}
        assert not [m for m in BLOCKED if importlib.util.find_spec(m) is not None], "the test's environment leaks"
        import torch
        from tiny_models import _configs, tiny_tokenizer
        from transformers import LlavaConfig, LlavaForConditionalGeneration
        from scope_eval import prune
        from scope_eval.pruning import METHODS, method_options

        torch.manual_seed(0)
        model = LlavaForConditionalGeneration(LlavaConfig(**_configs(tiny_tokenizer()))).eval()  # 2 LM layers, 576 tokens
        image_token = model.config.image_token_id
        inputs = dict(input_ids=torch.tensor([[1] + [image_token] * 576 + [5, 6, 7]]), pixel_values=torch.randn(1, 3, 336, 336))
        done = []
        for name, cls in sorted(METHODS.items()):
            if cls.needs_instruction:
                continue  # its CLIP text tower would be loaded from the hub
            budget = None if cls.keeps_all else 64
            options = {{}}
            if cls.stage == "llm":  # drop before layer 1 of the 2, keeping 64 from there
                options = {{"budget_unit": "after_layer"}}
                options.update({{key: value for key, value in (("layer", 1), ("layers", (1,))) if key in method_options(name)}})
            with prune(model, name, budget, **options) as handle, torch.no_grad():
                model(**inputs)
                counts = handle.take_counts()
                if cls.stage == "llm":  # every layer's visual tokens: all 576 in layer 0, 64 from layer 1 on
                    assert list(handle.take_layer_counts()[0].per_layer) == [576, 64], name
                else:
                    assert counts == [576 if budget is None else 64], name
            done.append(name)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        assert not loaded, loaded
        print("ran", ",".join(done))
    """)
    environment = {"PYTHONPATH": os.pathsep.join([str(site), str(ROOT), str(ROOT / "tests")]), "PATH": os.environ.get("PATH", "")}
    result = subprocess.run(
        [sys.executable, "-S", "-c", script], capture_output=True, text=True, cwd=tmp_path, env=environment, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "scope" in result.stdout and "fastv" in result.stdout


def test_the_command_line_names_the_extra_it_needs():
    script = textwrap.dedent("""
        import importlib.abc, sys

        class Refuse(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "typer":
                    raise ImportError("typer is not installed", name="typer")
                return None

        sys.meta_path.insert(0, Refuse())
        sys.argv = ["scope-eval", "--help"]
        from scope_eval.cli import main
        main()
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "pip install 'scope-eval[harness]'" in result.stderr
