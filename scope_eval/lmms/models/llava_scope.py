"""``llava_scope``: lmms-eval's ``llava`` (the original LLaVA codebase, liuhaotian checkpoints, vicuna_v1
template: the paper's setup) with pruning.

Prompting and generation are upstream's (``generate_until`` is inherited). ``__init__`` is rewritten
because upstream's places the model on ``cuda:<rank>`` whenever it is not ``device_map=auto``, so it
cannot run on CPU or data-parallel on CPU; the loading call itself is the same.
"""

from __future__ import annotations

from datetime import timedelta

import torch
from accelerate import Accelerator, DistributedType, InitProcessGroupKwargs
from lmms_eval.api.model import lmms
from lmms_eval.models.simple.llava import Llava
from loguru import logger

from scope_eval.lmms.errors import RunAborted, abort_on_error
from scope_eval.lmms.options import wrapper_parameters

from .common import PrunedWrapper

_DATA_PARALLEL = (DistributedType.MULTI_GPU, DistributedType.MULTI_CPU, DistributedType.NO)


class LlavaScope(PrunedWrapper, Llava):
    model_id = "llava_scope"

    def __init__(self, dtype: str | None = None, **kwargs) -> None:
        # The original builder always loads float16, which a CPU runs very slowly; `dtype=float32` casts
        # the loaded model (upstream still hands the tower float16 pixels; CLIP casts them to its weights).
        self.load_dtype = _torch_dtype(dtype)
        plan, upstream = self.cell_plan(kwargs)
        settings = {**_upstream_defaults(), **upstream}
        lmms.__init__(self)
        accelerator = Accelerator(kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(weeks=52))])
        if accelerator.distributed_type not in _DATA_PARALLEL:
            raise RunAborted(
                f"{self.model_id}: {accelerator.distributed_type} is not supported; pruned models run data parallel "
                "(one full model per process: multi-GPU or multi-CPU), configure accelerate without FSDP/DeepSpeed"
            )
        self.accelerator = accelerator
        device_map = settings["device_map"]
        if accelerator.num_processes > 1:
            self._device = accelerator.device  # cuda:<local rank>, or cpu when launched on CPU
            device_map = str(self._device)
        elif device_map == "auto":
            self._device = torch.device(settings["device"])
        else:
            self._device = torch.device(device_map)
        self.device_map = device_map
        with abort_on_error(f"{self.model_id}: loading {settings['pretrained']}"):
            self._load(settings)
        self._start_pruning(self.model, plan)
        if accelerator.num_processes > 1:
            self._model = accelerator.prepare_model(self._model, evaluation_mode=True)
            self._rank = accelerator.process_index
            self._world_size = accelerator.num_processes
            logger.info(f"{self.model_id}: {accelerator.num_processes} processes, data parallel")
        else:
            if device_map != "auto":
                self._model.to(self._device)
            self._rank, self._world_size = 0, 1

    @classmethod
    def cell_plan(cls, kwargs):
        # dtype is this wrapper's own argument (see __init__), not upstream's
        return cls._split_args({key: value for key, value in kwargs.items() if key != "dtype"}, wrapper_parameters(Llava))

    def _start_pruning(self, model, plan, processor=None) -> None:
        super()._start_pruning(model, plan, processor)
        if self.load_dtype is not None:  # part of the wrapper's own patches, so unprune() removes it too
            self._own_patches.set(model, "generate", _images_as(self.load_dtype, model.generate))

    def _load(self, settings: dict) -> None:
        from llava.mm_utils import get_model_name_from_path
        from llava.model.builder import load_pretrained_model

        load_args = {"multimodal": True}
        if settings["customized_config"] is not None:
            load_args["customized_config"] = settings["customized_config"]
        if settings["attn_implementation"] is not None:
            load_args["attn_implementation"] = settings["attn_implementation"]
        pretrained = settings["pretrained"]
        model_name = settings["model_name"] or get_model_name_from_path(pretrained)
        try:
            loaded = load_pretrained_model(pretrained, None, model_name, device_map=self.device_map, **load_args)
        except TypeError:  # builders of the haotian-liu codebase take no `multimodal` argument
            load_args.pop("multimodal")
            loaded = load_pretrained_model(pretrained, None, model_name, device_map=self.device_map, **load_args)
        self._tokenizer, self._model, self._image_processor, self._max_length = loaded
        if self.load_dtype is not None:
            self._model.to(self.load_dtype)
        self._config = self._model.config
        self._model.eval()
        if settings["tie_weights"]:
            self._model.tie_weights()
        self.truncation = settings["truncation"]
        self.batch_size_per_gpu = int(settings["batch_size"])
        self.conv_template = settings["conv_template"]
        self.use_cache = settings["use_cache"]
        self.truncate_context = settings["truncate_context"]

    def generate_until(self, requests):
        return self._generate_tracked(requests, super().generate_until)


def _upstream_defaults() -> dict:
    import inspect

    parameters = inspect.signature(Llava.__init__).parameters.values()
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


def _torch_dtype(name: str | None) -> torch.dtype | None:
    if name is None:
        return None
    choices = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if name not in choices:
        raise RunAborted(f"llava_scope: dtype must be one of {', '.join(choices)}, got {name!r}")
    return choices[name]


def _images_as(dtype: torch.dtype, generate):
    """Upstream hands float16 pixels to generate(); the stock vision path returns features in the pixels'
    dtype, so a model cast with `dtype=` needs its pixels in that dtype too."""

    def generate_with_cast_images(*args, images=None, **kwargs):
        if isinstance(images, list):
            images = [image.to(dtype) for image in images]
        elif images is not None:
            images = images.to(dtype)
        return generate(*args, images=images, **kwargs)

    return generate_with_cast_images
