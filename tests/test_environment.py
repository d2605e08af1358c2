"""The locked environment (requirements/), the declared incompatibilities, provenance, and the
original-LLaVA adapter's compatibility with transformers' renamed KV-cache argument."""

from __future__ import annotations

import hashlib
import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement

from scope_eval.provenance import PACKAGES, describe, lock_digest, provenance

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")


def locked_pins(path: Path) -> dict[str, str]:
    """name -> version of every requirement in a pip-tools lock, checking each carries a hash."""
    pins: dict[str, str] = {}
    text = path.read_text()
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        match = PIN.match(block)
        if match is None:
            continue
        assert "--hash=sha256:" in block, f"{match.group(1)} is locked without a hash in {path.name}"
        pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    return pins


def test_lock_pins_the_whole_environment_with_hashes():
    pins = locked_pins(ROOT / "requirements" / "requirements.lock.txt")
    for name in ("torch", "torchvision", "transformers", "lmms-eval", "accelerate", "filelock", "datasets", "pandas", "setuptools"):
        assert name in pins, f"{name} is missing from requirements/requirements.lock.txt"
    assert pins["transformers"] == "5.23.0"
    assert not pins["filelock"].startswith("4.3")
    llava = locked_pins(ROOT / "requirements" / "llava.txt")
    assert llava == {"llava-torch": "1.2.2.post1"}


def test_pyproject_excludes_the_known_broken_filelock():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for extra in ("lmms", "harness"):  # the extras that install lmms-eval
        filelock = next(Requirement(r) for r in project["optional-dependencies"][extra] if Requirement(r).name == "filelock")
        assert "4.3.1" not in filelock.specifier  # removed filelock._api, imported by lmms-eval 0.7.3
        assert "4.2.12" in filelock.specifier


@pytest.mark.lock
def test_installed_environment_is_the_lock():
    """`make setup` installs exactly the lock (deselected by `make test-latest`, which does not)."""
    pins = locked_pins(ROOT / "requirements" / "requirements.lock.txt") | locked_pins(ROOT / "requirements" / "llava.txt")
    differing = {}
    for name, version in pins.items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed != version and installed is not None and installed.split("+")[0] != version:
            differing[name] = (version, installed)
        elif installed is None:
            differing[name] = (version, None)
    assert not differing, f"installed != locked (run `make setup`): {differing}"


def test_provenance_records_versions_and_the_lock_digest():
    record = provenance()
    assert set(record["versions"]) == set(PACKAGES)
    for name in ("torch", "transformers", "lmms-eval", "llava-torch", "accelerate", "filelock"):
        assert name in record["versions"]
    assert record["versions"]["torch"] == importlib.metadata.version("torch")
    expected = hashlib.sha256()
    for name in ("requirements.lock.txt", "llava.txt"):
        expected.update((ROOT / "requirements" / name).read_bytes())
    assert record["lock_sha256"] == expected.hexdigest() == lock_digest()
    line = describe(record)
    assert f"transformers {record['versions']['transformers']}" in line
    assert f"filelock {record['versions']['filelock']}" in line
    assert record["lock_sha256"][:12] in line


def test_provenance_outside_a_checkout_has_no_lock(tmp_path):
    assert lock_digest(tmp_path) is None
    assert describe({"versions": {"torch": "2.0"}}) == "torch 2.0; no lock recorded"


# -- transformers >= 5.24 passes the KV cache to forward() as `cache=` --------------------------------


def test_forward_shim_renames_cache_and_keeps_the_signature():
    from scope_eval.adapters.llava_original import _forward_accepting_cache

    seen = {}

    def stock_forward(input_ids=None, attention_mask=None, past_key_values=None, images=None):
        seen.update(past_key_values=past_key_values, attention_mask=attention_mask)
        return "out"

    shim = _forward_accepting_cache(stock_forward)
    assert shim(input_ids=1, attention_mask=2, cache="kv") == "out"
    assert seen == {"past_key_values": "kv", "attention_mask": 2}
    shim(input_ids=1, past_key_values="old")  # the old name still works
    assert seen["past_key_values"] == "old"
    # generate() validates its kwargs against this signature: stock parameters plus `cache`
    import inspect

    assert list(inspect.signature(shim).parameters) == ["input_ids", "attention_mask", "past_key_values", "images", "cache"]
    assert _forward_accepting_cache(lambda input_ids=None, cache=None: None) is None
    assert _forward_accepting_cache(lambda input_ids=None, **kwargs: None) is None


@pytest.fixture(scope="module")
def original_model(tmp_path_factory):
    pytest.importorskip("llava.model")
    from tiny_models import tiny_llava_original

    return tiny_llava_original(tmp_path_factory.mktemp("original"))


@pytest.mark.parametrize("method, budget", [("none", None), ("scope", 16)])
def test_original_forward_takes_the_cache_under_its_new_name(original_model, method, budget):
    """What generate() does on transformers 5.24, done by hand on the locked version: a prefill, then a
    decoding step that hands the cache over as `cache=`; identical to handing it as past_key_values."""
    from llava.mm_utils import process_images, tokenizer_image_token
    from transformers import DynamicCache

    from conftest import random_image
    from scope_eval import prune

    model, tokenizer, image_processor = original_model
    images = process_images([random_image(336, 336)], image_processor, model.config)
    ids = tokenizer_image_token("what is <image>\nhere ?", tokenizer, -200, return_tensors="pt").unsqueeze(0)
    with pytest.raises(TypeError, match="cache"):
        model(input_ids=ids, images=images, cache=DynamicCache())  # the stock model, outside the adapter

    def two_steps(cache_name: str) -> torch.Tensor:
        cache = DynamicCache()
        with torch.no_grad():
            prefill = model(input_ids=ids, images=images, use_cache=True, **{cache_name: cache})
            next_id = prefill.logits[:, -1:].argmax(-1)
            step = model(input_ids=next_id, use_cache=True, **{cache_name: cache})
        return step.logits

    with prune(model, method, budget):
        assert torch.equal(two_steps("cache"), two_steps("past_key_values"))
        with torch.no_grad():
            out = model.generate(ids, images=images, image_sizes=[(336, 336)], max_new_tokens=3, do_sample=False)
        assert out.shape == (1, 3)
    assert "forward" not in vars(model)  # restored
