"""Cost of SCOPE's saliency on Qwen: the attention-received recomputation of one ViT block, and the selection.

Random weights in the real vision shape (``--shape qwen2-vl-7b`` / ``qwen2.5-vl-7b``), one image at the
largest size a ``max_pixels`` allows (a square-ish grid of 14 px patches). Only the saliency block runs
(the other 31 blocks do not change what is measured), on random hidden states; the probe then
recomputes that block's attention in query chunks (scope_eval.adapters.qwen_saliency). Reported: the
median time of the recomputation and of the SCOPE selection on the post-merger tokens, and the peak
working memory of the recomputation (bench/memory.py: CUDA allocator peak, or the CPU resident-set
peak over what was resident before).
"""

from __future__ import annotations

import json
import math
import statistics
from typing import Optional

import torch
import typer

from scope_eval.adapters.qwen_saliency import QUERY_CHUNK_ELEMENTS, QwenSaliencyProbe, default_saliency_block
from scope_eval.cost.timing import Clock
from scope_eval.pruning import VisualTokens
from scope_eval.pruning.plan import PruningPlan

from .memory import PeakMemory
from .shapes import QWEN_SHAPES

MB = 1024 * 1024
QWEN_MAX_PIXELS = 1280 * 28 * 28  # Qwen2-VL's recommended max_pixels (1280 LM tokens); lmms-eval's qwen2_5_vl: 1605632


def largest_grid(max_pixels: int, patch: int = 14, merge: int = 2) -> tuple[int, int]:
    """(h, w) in patches of the largest near-square image within ``max_pixels`` (both multiples of ``merge``)."""
    unit = patch * merge
    side = math.isqrt(max_pixels // (unit * unit))
    rows, cols = side, max_pixels // (unit * unit) // side
    return rows * merge, cols * merge


def measure_saliency(shape_name: str, max_pixels: int, keep_ratio: float, repeats: int, device: torch.device) -> dict:
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VisionTransformerPretrainedModel

    shape = QWEN_SHAPES[shape_name]
    config = shape.config()
    vision_config = config.vision_config
    vision_config._attn_implementation = "sdpa"
    tower_class = Qwen2VisionTransformerPretrainedModel if shape.family == "qwen2-vl" else Qwen2_5_VisionTransformerPretrainedModel
    torch.manual_seed(0)
    saliency_block = default_saliency_block(vision_config)  # which block it is does not change its cost
    vision_config.depth = 1  # build that one block only, in the real width
    if hasattr(vision_config, "fullatt_block_indexes"):
        vision_config.fullatt_block_indexes = [0]
    tower = tower_class(vision_config).to(device).eval()
    rows, cols = largest_grid(max_pixels)
    grid = torch.tensor([[1, rows, cols]], device=device)
    patches = rows * cols
    from transformers.vision_utils import get_vision_position_ids

    position_ids = get_vision_position_ids(grid, tower.spatial_merge_size)
    cu_seqlens = torch.tensor([0, patches], dtype=torch.int32, device=device)
    clock, memory = Clock(device), PeakMemory(device)
    probe = QwenSaliencyProbe(tower, 0)
    probe.windowed = False  # one image, full attention: window order is irrelevant to the cost
    tokens = patches // tower.spatial_merge_size**2
    text_width = config.get_text_config().hidden_size
    plan = PruningPlan.build("scope", keep_ratio=keep_ratio)
    recompute, selection, peaks = [], [], []
    with torch.inference_mode():
        hidden = torch.randn(patches, tower.config.hidden_size if shape.family == "qwen2.5-vl" else tower.config.embed_dim, device=device)
        embeddings = tower.rotary_pos_emb(hidden, position_ids)
        features = torch.randn(1, tokens, text_width, device=device)
        for round_index in range(repeats + 1):
            tower.blocks[0](hidden, cu_seqlens=cu_seqlens, position_embeddings=embeddings)
            memory.start()
            started = clock.now()
            saliency = probe.compute(grid)
            took = clock.now() - started
            reading = memory.stop()
            selection_plan = plan.crop_selection(1, tokens)
            started = clock.now()
            selection_plan.method.run(VisualTokens(features=features, saliency=saliency[None]), selection_plan.budget)
            selected = clock.now() - started
            if round_index > 0:  # the first round warms up
                recompute.append(took)
                selection.append(selected)
                peaks.append(reading.increase_bytes)
    probe.remove()
    heads = tower.blocks[0].attn.num_heads
    return {
        "shape": shape_name,
        "default_saliency_block": saliency_block,
        "max_pixels": max_pixels,
        "grid_patches": [rows, cols],
        "patches": patches,
        "lm_tokens": tokens,
        "keep_ratio": keep_ratio,
        "kept": plan.ratio_budget(tokens),
        "heads": heads,
        "query_chunk": max(1, QUERY_CHUNK_ELEMENTS // (heads * patches)),
        "unchunked_attention_mb": heads * patches * patches * 4 / MB,
        "recompute_ms_median": 1000 * statistics.median(recompute),
        "scope_selection_ms_median": 1000 * statistics.median(selection),
        "recompute_peak_increase_mb_median": None if None in peaks else statistics.median(peaks) / MB,
        "memory_measure": memory.description,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "repeats": repeats,
    }


def bench_qwen_saliency(
    shape: str = typer.Option("qwen2-vl-7b", "--shape", help="qwen2-vl-7b or qwen2.5-vl-7b (or a tiny-qwen shape)."),
    max_pixels: int = typer.Option(QWEN_MAX_PIXELS, "--max-pixels", help="The processor's max_pixels (sets the image size)."),
    keep_ratio: float = typer.Option(0.25, "--keep-ratio", help="SCOPE's keep_ratio for the selection timing."),
    repeats: int = typer.Option(3, "--repeats", min=1, help="Timed rounds (median reported), after one warm-up."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda (cuda:N)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="torch CPU threads (default: torch's)."),
) -> None:
    """Time and peak memory of Qwen SCOPE's saliency recomputation (one ViT block) and selection, one image."""
    if shape not in QWEN_SHAPES:
        raise typer.BadParameter(f"choose one of {', '.join(QWEN_SHAPES)}", param_hint="--shape")
    if threads is not None:
        torch.set_num_threads(threads)
    typer.echo(json.dumps(measure_saliency(shape, max_pixels, keep_ratio, repeats, torch.device(device)), indent=2))
