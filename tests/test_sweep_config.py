"""Sweep configs: every shipped YAML loads, the matrix expands to the expected cells, mistakes are errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from scope_eval.sweeps.cells import OFFLINE_ENV, cell_dir, child_env, expand, lmms_eval_command, plan_launches
from scope_eval.sweeps.config import SweepConfigError, load_sweep, sweep_from_dict, with_overrides

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

BASE = {
    "model": {
        "name": "llava-v1.5-7b",
        "backend": "llava_scope",
        "pretrained": "liuhaotian/llava-v1.5-7b",
        "family": "llava-1.5",
        "model_args": {"conv_template": "vicuna_v1"},
    },
    "methods": ["none", "scope", "random"],
    "budgets": [192, 64],
    "tasks": ["gqa", "mme"],
}


def config_with(**changes):
    data = {**BASE, **changes}
    return sweep_from_dict(data)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads_and_expands(path, tmp_path):
    data = yaml.safe_load(path.read_text())
    checkpoint = data["model"]["pretrained"]
    if checkpoint.startswith(("./", "../")) and not (path.parent / checkpoint).is_dir():
        # the toy weights are trained by toy_training.train; everything else in the config is checked
        data["model"]["pretrained"] = str(tmp_path)
        config = sweep_from_dict(data)
    else:
        config = load_sweep(path)
    cells = expand(config)
    pruning = [m for m in config.methods if not m.keeps_all]
    unpruned = [m for m in config.methods if m.keeps_all]
    assert len(cells) == len(config.tasks) * (len(unpruned) + len(pruning) * (len(config.budgets) + len(config.keep_ratios)))


def test_toy_configs_run_every_method_at_the_paper_budgets():
    toy15 = yaml.safe_load((CONFIGS / "toy_llava15.yaml").read_text())
    toy_next = yaml.safe_load((CONFIGS / "toy_llava_next.yaml").read_text())
    from scope_eval.pruning import METHODS

    names = lambda config: {m if isinstance(m, str) else m["name"] for m in config["methods"]}  # noqa: E731
    # one sweep computes every registered method on the toy LLaVA-1.5 (cdpruner with the toy's CLIP text
    # tower, the in-LLM ones after layer 1 of its 3); the NeXT toy runs every pre-LLM method
    assert names(toy15) == set(METHODS)
    assert names(toy_next) == {name for name, cls in METHODS.items() if cls.stage == "vision"}
    assert toy15["budgets"] == [192, 128, 64] and toy_next["budgets"] == [640, 320, 160]
    assert toy15["offline"] and toy_next["offline"]
    assert all(load_sweep(CONFIGS / name) for name in ("toy_llava15.yaml", "toy_llava_next.yaml"))  # valid as written


def test_toy_qwen_config_runs_every_method_that_applies_to_qwen_at_table8_ratios():
    from scope_eval.pruning import METHODS

    config = load_sweep(CONFIGS / "toy_qwen2_vl.yaml")  # valid as written: the trained toy Qwen2-VL ships
    # every registered method but cdpruner, which needs a CLIP text tower Qwen lacks (refused on Qwen)
    assert {m.name for m in config.methods} == set(METHODS) - {"cdpruner"}
    assert config.keep_ratios == (0.25, 0.1) and not config.budgets and config.offline
    assert config.model.model_args["max_pixels"] == 602112 and config.model.model_args["min_pixels"] == 3136


def test_table1_matrix_is_the_papers():
    config = load_sweep(CONFIGS / "llava15_7b_table1.yaml")
    cells = expand(config)
    assert len(cells) == 8 * (1 + 12 * 3)  # 8 tasks x (unpruned + 11 methods and DART's official count at 3 budgets)
    official_count = {c.method.label for c in cells if c.method.options.get("count") == "official"}
    assert official_count == {"dart_official_count"}  # the row says which DART convention it ran
    assert {c.budget for c in cells} == {None, 192, 128, 64}
    assert {c.table_budget for c in cells if c.method.name == "none"} == {576}
    assert config.model.paper == "llava-1.5-7b"


def test_one_sweep_computes_every_method_of_table1():
    """FastV, SparseVLM, PDrop, DART, VisPruner, CDPruner, VisionZip, DivPrune and SCOPE on one model, one budget unit."""
    config = load_sweep(CONFIGS / "llava15_7b_table1_hf.yaml")
    methods = {m.name for m in config.methods}
    assert {"fastv", "sparsevlm", "pdrop", "dart", "vispruner", "cdpruner", "visionzip", "divprune", "scope", "none"} <= methods
    assert all("budget_unit" not in m.options for m in config.methods)  # the default: layer-averaged tokens
    assert config.model.backend == "llava_hf_scope" and config.model.paper == "llava-1.5-7b"
    assert {c.budget for c in expand(config)} == {None, 192, 128, 64}


def test_expansion_counts_and_folders(tmp_path):
    config = config_with(output=str(tmp_path))
    cells = expand(config)
    assert len(cells) == 2 * (1 + 2 * 2)
    folders = {cell_dir(config, c).relative_to(tmp_path).as_posix() for c in cells}
    assert "llava-v1.5-7b/none/full/gqa" in folders
    assert "llava-v1.5-7b/scope/b64/mme" in folders
    assert len(folders) == len(cells)


def test_method_options_make_their_own_label_and_folder(tmp_path):
    config = config_with(methods=["scope", {"name": "random", "options": {"seed": 3}}], output=str(tmp_path))
    labels = [m.label for m in config.methods]
    assert labels == ["scope", "random_seed3"]
    assert any("random_seed3/b64" in str(cell_dir(config, c)) for c in expand(config))


def test_limit_goes_into_the_folder_name(tmp_path):
    config = config_with(limit=8, output=str(tmp_path))
    assert all(cell_dir(config, c).relative_to(tmp_path).parts[0] == "llava-v1.5-7b_limit8" for c in expand(config))


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"bogus": 1}, "unknown key(s) bogus"),
        ({"methods": ["scopee"]}, "unknown pruning method 'scopee'"),
        ({"methods": ["scope", "scope"]}, "methods listed twice"),
        ({"methods": [{"name": "scope", "wrong": 1}]}, "unknown key(s) wrong"),
        ({"methods": [{"name": "scope", "options": {"alpah": 0.5}}]}, "has no option(s) alpah; its options are: alpha=1.0"),
        ({"methods": [{"name": "scope", "options": {"combine": "max"}}]}, "combine must be one of multi, add"),
        ({"tasks": ["gqa", "not_a_task"]}, "unknown task(s) not_a_task"),
        ({"tasks": ["gqa", "gqa"]}, "contain duplicates"),
        ({"methods": [{"name": "scope", "options": {"alpha": [1, 2]}}]}, "alpha must be a finite number"),
        ({"budgets": [0]}, "at budget 0: budget must be at least 1 visual token"),
        ({"budgets": [-64]}, "at budget -64: budget must be at least 1 visual token"),
        ({"budgets": [1.5]}, "at budget 1.5: budget must be a whole number"),
        ({"budgets": ["64"]}, "at budget '64': budget must be a whole number"),
        ({"budgets": [True]}, "True/False are not budgets"),
        ({"budgets": [600]}, "larger than the 576 visual tokens available"),
        ({"budgets": [64, 64]}, "contain duplicates"),
        ({"budgets": []}, "budgets is empty"),
        ({"batch_size": 2}, "batch_size must be 1"),
        ({"budget_policy": "global"}, "applies to llava-next models only"),
        ({"limit": 0}, "limit must be"),
        ({"limit": 1.5}, "limit must be"),
        ({"num_processes": 0}, "num_processes must be"),
        ({"seed": -1}, "seed must be"),
        ({"gen_kwargs": {"until": "a,b"}}, "contains ',', where lmms-eval splits"),
    ],
)
def test_bad_configs_are_errors_naming_the_problem(changes, message):
    with pytest.raises(SweepConfigError) as error:
        config_with(**changes)
    assert message in str(error.value)


@pytest.mark.parametrize(
    "model_changes, message",
    [
        ({"backend": "llava_hf"}, "backend 'llava_hf' is not one of"),
        ({"family": "llava-2"}, "family 'llava-2' is not one of"),
        ({"name": "a/b"}, "must use only letters"),
        ({"paper": "gpt-4"}, "paper 'gpt-4' is not one of"),
        ({"model_args": {"budget": 64}}, "model_args.budget is set by the runner"),
        ({"model_args": {"pretrained": "x"}}, "use 'model.pretrained' instead"),
        ({"colour": "red"}, "unknown key(s) colour"),
    ],
)
def test_bad_model_sections_are_errors(model_changes, message):
    with pytest.raises(SweepConfigError) as error:
        config_with(model={**BASE["model"], **model_changes})
    assert message in str(error.value)


def test_a_group_is_refused_with_its_tasks_listed(tmp_path, monkeypatch):
    (tmp_path / "group.yaml").write_text("group: my_group\ntask: [gqa, mme]\n")
    (tmp_path / "mine.yaml").write_text("task: my_task\nmetric_list:\n  - {metric: acc, aggregation: mean}\n")
    monkeypatch.setattr("scope_eval.sweeps.config.INCLUDE_DIR", tmp_path)
    with pytest.raises(SweepConfigError, match="'my_group' is a group; .* list its tasks instead: gqa, mme"):
        config_with(tasks=["my_group"])
    assert config_with(tasks=["my_task"]).tasks == ("my_task",)  # headlined by its YAML's first metric


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(SweepConfigError, match="does not exist"):
        load_sweep(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(SweepConfigError, match="is a mapping"):
        load_sweep(bad)


def test_relative_checkpoint_path_is_relative_to_the_config_file(tmp_path):
    folder = tmp_path / "configs"
    folder.mkdir()
    data = {**BASE, "model": {**BASE["model"], "pretrained": "../weights/tiny"}}
    (folder / "local.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(SweepConfigError, match="weights/tiny is not a folder"):
        load_sweep(folder / "local.yaml")
    (tmp_path / "weights" / "tiny").mkdir(parents=True)
    assert load_sweep(folder / "local.yaml").model.pretrained == str((tmp_path / "weights" / "tiny").resolve())


def test_command_line_overrides_select_and_replace():
    config = config_with(methods=["none", "scope", {"name": "random", "options": {"seed": 3}}])
    chosen = with_overrides(config, methods=["random", "none"], budgets=[32], tasks=["mme"], pretrained="local/ckpt")
    assert [m.label for m in chosen.methods] == ["none", "random_seed3"]  # config order and options kept
    assert chosen.budgets == (32,)
    assert chosen.model.pretrained == "local/ckpt"
    cells = expand(chosen)
    assert [(c.method.label, c.budget, c.task) for c in cells] == [("none", None, "mme"), ("random_seed3", 32, "mme")]
    with pytest.raises(SweepConfigError, match="larger than the 576 visual tokens available"):
        with_overrides(config, budgets=[1000])


def test_command_is_an_argument_list_with_the_plugin_model_args(tmp_path):
    config = config_with(num_processes=4, limit=20, gen_kwargs={"max_new_tokens": 16}, output=str(tmp_path))
    scope_cell = next(c for c in expand(config) if c.method.name == "scope" and c.budget == 64)
    command = lmms_eval_command(config, scope_cell.method, 64, ["gqa", "mme"], tmp_path / "work")
    # --multi_gpu: accelerate's multi-process launcher, without which a CPU-only machine runs one process
    assert command[1:7] == ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "4", "-m"]
    assert command[7] == "lmms_eval"
    args = dict(zip(command[8::1], command[9::1]))
    assert args["--model"] == "llava_scope"
    assert args["--model_args"] == "pretrained=liuhaotian/llava-v1.5-7b,method=scope,budget=64,conv_template=vicuna_v1"
    assert args["--tasks"] == "gqa,mme"
    assert args["--limit"] == "20"
    assert args["--gen_kwargs"] == "max_new_tokens=16"
    assert args["--batch_size"] == "1"
    assert "--log_samples" in command
    unpruned = next(c for c in expand(config) if c.method.name == "none")
    none_args = lmms_eval_command(config, unpruned.method, None, ["gqa"], tmp_path)
    assert "method=none,conv_template" in none_args[none_args.index("--model_args") + 1]  # no budget


def test_next_passes_budget_policy_and_offline_sets_only_the_child_env(tmp_path):
    model = {**BASE["model"], "family": "llava-next"}
    config = config_with(model=model, budgets=[640, 160], budget_policy="global", offline=True, output=str(tmp_path))
    launch = plan_launches(config, [c for c in expand(config) if c.budget == 160])[0]
    model_args = launch.command[launch.command.index("--model_args") + 1]
    assert "budget=160,budget_policy=global" in model_args
    assert launch.env == OFFLINE_ENV
    assert child_env(config_with()) == {}


def test_grouped_launches_hold_all_tasks_of_a_method_and_budget(tmp_path):
    config = config_with(group_tasks=True, output=str(tmp_path))
    launches = plan_launches(config, expand(config))
    assert len(launches) == 1 + 2 * 2
    assert all(launch.tasks == ("gqa", "mme") for launch in launches)
    single = plan_launches(config_with(output=str(tmp_path)), expand(config))
    assert len(single) == len(expand(config))


def test_cpu_threads_reach_the_child_environment_only(tmp_path):
    from scope_eval.sweeps.cells import child_env

    config = config_with(output=str(tmp_path))
    assert "OMP_NUM_THREADS" not in child_env(config)
    threaded = dataclasses.replace(config, cpu_threads=1)
    assert child_env(threaded)["OMP_NUM_THREADS"] == "1" and child_env(threaded)["MKL_NUM_THREADS"] == "1"
    assert load_sweep(CONFIGS / "toy_llava15.yaml").cpu_threads == 1


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "two"])
def test_cpu_threads_must_be_a_positive_whole_number(tmp_path, value):
    path = tmp_path / "sweep.yaml"
    text = (CONFIGS / "smoke_toy.yaml").read_text().replace("cpu_threads: 1", f"cpu_threads: {value!r}")
    path.write_text(text.replace("../scope_eval", str(CONFIGS.parent / "scope_eval")))
    with pytest.raises(SweepConfigError, match="cpu_threads must be a whole number >= 1"):
        load_sweep(path)


def test_method_option_paths_are_relative_to_the_config_file(tmp_path):
    """cdpruner's text_encoder (a local CLIP folder) written as ./ or ../ is read like model.pretrained."""
    encoder = tmp_path / "weights" / "clip"
    encoder.mkdir(parents=True)
    configs = tmp_path / "configs"
    configs.mkdir()
    hf_model = {**BASE["model"], "backend": "llava_hf_scope", "pretrained": "llava-hf/llava-1.5-7b-hf", "model_args": {}}  # cdpruner's backend
    data = {**BASE, "model": hf_model, "methods": ["none", {"name": "cdpruner", "options": {"text_encoder": "../weights/clip"}, "label": "cdpruner"}]}
    (configs / "sweep.yaml").write_text(yaml.safe_dump(data))
    config = load_sweep(configs / "sweep.yaml")
    assert config.methods[1].options == {"text_encoder": str(encoder.resolve())}


# -- keep_ratios: budgets as the share of each image's visual tokens (Qwen's dynamic resolution) -------
QWEN = {
    "model": {"name": "qwen2-vl-7b", "backend": "qwen2_vl_scope", "pretrained": "Qwen/Qwen2-VL-7B-Instruct", "family": "qwen2-vl",
              "model_args": {"max_pixels": 602112, "min_pixels": 3136}},
    "methods": ["none", "scope", "divprune"],
    "keep_ratios": [0.25, 0.1],
    "tasks": ["gqa", "pope"],
}  # fmt: skip


def test_keep_ratios_expand_to_ratio_cells_with_keep_ratio_model_args(tmp_path):
    config = dataclasses.replace(sweep_from_dict(QWEN), output=str(tmp_path))
    cells = expand(config)
    assert len(cells) == 2 * (1 + 2 * 2)
    scope = [c for c in cells if c.method.name == "scope" and c.task == "pope"]
    assert [c.budget_folder for c in scope] == ["r0.25", "r0.1"] and [c.table_budget for c in scope] == [0.25, 0.1]
    unpruned = next(c for c in cells if c.method.name == "none")
    assert unpruned.budget_folder == "full" and unpruned.table_budget == 1.0  # the share kept, as Table 8 prints it
    assert cell_dir(config, scope[0]) == tmp_path / "qwen2-vl-7b" / "scope" / "r0.25" / "pope"
    command = lmms_eval_command(config, scope[1].method, scope[1].budget, ["pope"], tmp_path)
    assert command[command.index("--model") + 1] == "qwen2_vl_scope"
    assert command[command.index("--model_args") + 1] == (
        "pretrained=Qwen/Qwen2-VL-7B-Instruct,method=scope,keep_ratio=0.1,max_pixels=602112,min_pixels=3136"
    )


def test_keep_ratio_on_the_command_line_replaces_the_budgets():
    llava = with_overrides(config_with(), keep_ratios=[0.5])
    assert (llava.budgets, llava.keep_ratios) == ((), (0.5,))
    qwen = with_overrides(sweep_from_dict(QWEN), keep_ratios=[0.25])
    assert [c.budget_folder for c in expand(qwen) if c.method.name == "divprune"] == ["r0.25", "r0.25"]


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"budgets": [64]}, "give budgets (tokens per image) or keep_ratios (share of each image's tokens), not both"),
        ({"keep_ratios": [], "budgets": [64]}, "qwen2-vl images bring a number of visual tokens that depends on their size; give keep_ratios"),
        ({"keep_ratios": [1.5]}, "keep_ratios holds 1.5; each must be a share in (0, 1]"),
        ({"keep_ratios": [0.25, 0.25]}, "keep_ratios"),
        ({"model": {**QWEN["model"], "backend": "llava_hf_scope"}}, "family qwen2-vl runs on backend qwen2_vl_scope, not llava_hf_scope"),
        ({"model": {**QWEN["model"], "family": "llava-1.5"}}, "backend qwen2_vl_scope does not run llava-1.5 models"),
    ],
)
def test_bad_keep_ratio_configs_are_errors(changes, message):
    with pytest.raises(SweepConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        sweep_from_dict({**QWEN, **changes})


def test_every_relative_path_of_a_config_is_relative_to_the_config_file(tmp_path, monkeypatch):
    """output, include_path and data_dir as model.pretrained: one rule, whatever the shell's folder; the
    command line's paths stay relative to the shell."""
    folder = tmp_path / "configs"
    (tmp_path / "my_tasks").mkdir()
    (tmp_path / "my_tasks" / "mine.yaml").write_text("task: mine\nmetric_list: [{metric: exact_match}]\n")
    folder.mkdir()
    data = {**BASE, "tasks": ["mine"], "output": "../runs", "include_path": "../my_tasks"}
    (folder / "mine.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.chdir(tmp_path / "my_tasks")  # anywhere else
    config = load_sweep(folder / "mine.yaml")
    assert config.output == str((tmp_path / "runs").resolve())
    assert config.include_path == str((tmp_path / "my_tasks").resolve())
    assert with_overrides(config, output="here").output == "here"


def test_lmms_eval_args_pass_through_and_result_changing_ones_enter_the_fingerprint(tmp_path):
    from scope_eval.sweeps.cells import fingerprint

    plain = config_with(output=str(tmp_path))
    chatty = config_with(output=str(tmp_path), lmms_eval_args={"verbosity": "DEBUG"})
    reseeded = config_with(output=str(tmp_path), lmms_eval_args={"fewshot_as_multiturn": True, "verbosity": "DEBUG"})
    cell = expand(plain)[1]
    command = lmms_eval_command(chatty, cell.method, cell.budget, [cell.task], tmp_path)
    assert command[command.index("--verbosity") + 1] == "DEBUG"
    assert "--fewshot_as_multiturn" in lmms_eval_command(reseeded, cell.method, cell.budget, [cell.task], tmp_path)
    assert fingerprint(chatty, cell) == fingerprint(plain, cell)  # verbosity changes no number: old cells stay valid
    assert fingerprint(reseeded, cell)["lmms_eval_args"] == {"fewshot_as_multiturn": True}
    for bad, message in (({"tasks": "x"}, "set by the runner; use 'tasks'"), ({"--seed": 1}, "without dashes"),
                         ({"seed": [1, 2]}, "a single value")):  # fmt: skip
        with pytest.raises(SweepConfigError, match=message):
            config_with(lmms_eval_args=bad)
