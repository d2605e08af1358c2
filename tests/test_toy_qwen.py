"""The toy Qwen2-VL: Qwen geometry at toy widths, a vocabulary covering the toy benchmarks in the prompt
lmms-eval's qwen2_vl builds, and the training script end to end (a handful of steps)."""

from __future__ import annotations

import json

import torch

from scope_eval.lmms.tasks.toy.scenes import Scene, render
from scope_eval.toy.benchmark import TOY_TASKS
from scope_eval.toy.qwen2_vl import DEFAULT_SYSTEM_PROMPT, build_qwen_processor, build_toy_qwen2_vl
from scope_eval.toy.vocab import SHORT_ANSWER_PROMPT
from toy_training.measure import load_items


def prompt(processor, question: str) -> str:
    """The messages lmms-eval 0.7.3's qwen2_vl builds: its system prompt, then the image and the text."""
    messages = [
        {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
        {"role": "user", "content": [{"type": "image", "image": "scene"}, {"type": "text", "text": question + SHORT_ANSWER_PROMPT}]},
    ]
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def test_toy_qwen_has_qwen_geometry_a_336_scene_is_144_visual_tokens():
    model, processor = build_toy_qwen2_vl(seed=0)
    item = load_items("scope_toy_pope")[0]
    inputs = processor(text=[prompt(processor, item["question"])], images=[render(Scene.from_dict(item["scene"]))], return_tensors="pt")
    assert inputs.image_grid_thw.tolist() == [[1, 24, 24]]
    assert int((inputs.input_ids == model.config.image_token_id).sum()) == 144 == inputs.pixel_values.shape[0] // 4
    assert model.config.vision_config.spatial_merge_size == 2 and model.config.text_config.rope_parameters["mrope_section"] == [4, 6, 6]
    output = model.generate(**inputs, max_new_tokens=2, do_sample=False)
    assert inputs.input_ids.shape[1] < output.shape[1] <= inputs.input_ids.shape[1] + 2


def test_every_toy_benchmark_prompt_and_answer_is_in_the_qwen_vocabulary():
    processor = build_qwen_processor()
    tokenizer = processor.tokenizer
    for task in TOY_TASKS:
        for item in load_items(task.name):
            ids = tokenizer(prompt(processor, item["question"]), add_special_tokens=False).input_ids
            assert tokenizer.unk_token_id not in ids, item["question"]
            assert tokenizer.convert_tokens_to_ids(item["answer"]) != tokenizer.unk_token_id, item["answer"]


def test_qwen_training_script_runs_and_exports_loadable_float16_weights(tmp_path):
    """A miniature of the recipe (same code path, a handful of steps); it also checks its prompt ids
    against the processor's at start-up."""
    from safetensors.torch import load_file
    from transformers import AutoModelForImageTextToText, Qwen2VLForConditionalGeneration

    from toy_training import train_qwen2_vl

    export_dir = tmp_path / "weights"
    assert train_qwen2_vl.main([
        "--work-dir", str(tmp_path / "work"), "--pool-size", "16", "--distill-steps", "2", "--distill-batch", "2",
        "--phases", "2x16:attribute,1x144:all", "--batch", "4", "--eval-every", "3", "--export-dir", str(export_dir),
    ]) == 0  # fmt: skip
    tensors = load_file(export_dir / "model.safetensors")
    assert all(t.dtype == torch.float16 for t in tensors.values() if t.is_floating_point())
    assert "is_local" not in json.loads((export_dir / "tokenizer_config.json").read_text())
    model = AutoModelForImageTextToText.from_pretrained(export_dir)
    assert isinstance(model, Qwen2VLForConditionalGeneration) and model.dtype == torch.float32
    log = (tmp_path / "work" / "train.log").read_text()
    assert "[distil] step 2/2" in log and "[language] step 3/3" in log and "[export]" in log


def test_shipped_toy_qwen_loads_offline_and_answers_pope_items():
    """The shipped weights (float16 tensors under a float32 config) load with the Auto classes and answer
    the first 30 Toy-POPE items about as the model card says (92 % on all 180; at least 24 of 30 here)."""
    from scope_eval.toy.qwen2_vl import load_toy_qwen2_vl

    model, processor = load_toy_qwen2_vl()
    assert model.dtype == torch.float32 and model.config.model_type == "qwen2_vl"
    items = load_items("scope_toy_pope")[:30]
    right = 0
    for item in items:
        inputs = processor(text=[prompt(processor, item["question"])], images=[render(Scene.from_dict(item["scene"]))], return_tensors="pt")
        assert int((inputs.input_ids == model.config.image_token_id).sum()) == 144
        with torch.no_grad():
            answer = processor.tokenizer.convert_ids_to_tokens(int(model(**inputs).logits[0, -1].argmax()))
        right += answer == item["answer"]
    assert right >= 24, f"{right} of 30"
