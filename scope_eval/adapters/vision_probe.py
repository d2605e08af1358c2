"""Features, CLS saliency and attention keys of one CLIP layer, without asking for attention maps.

Forward hooks capture what the layer computes anyway: its output (the hidden state LLaVA selects),
and its ``q_proj`` / ``k_proj`` projections. The CLS row of the attention (softmax over the N+1 keys,
summed over heads) then costs one [1 x N+1] product per head instead of eager attention's full maps,
so it works under sdpa/flash/eager alike.

The keys are handed over averaged over heads ([B, N, head_dim], 64-d for CLIP ViT-L): VisionZip's
official code measures token similarity on exactly that (its patched attention returns the per-head
key states' mean over heads), and no other method reads them.
"""

from __future__ import annotations

import torch
from torch import nn


def encoder_layers(vision_model: nn.Module) -> nn.ModuleList:
    """The transformer blocks of a CLIP vision model (transformers 5.x flat layout, or the older one)."""
    for path in ("encoder.layers", "vision_model.encoder.layers"):
        module: nn.Module | None = vision_model
        for part in path.split("."):
            module = getattr(module, part, None)
            if module is None:
                break
        if isinstance(module, nn.ModuleList):
            return module
    raise TypeError(
        f"cannot find the encoder layers of {type(vision_model).__name__}; "
        "expected a CLIP-style vision model with .encoder.layers"
    )


def layer_for_hidden_state(num_layers: int, feature_layer: int) -> int:
    """Index of the block whose output is ``hidden_states[feature_layer]`` (hidden_states[0] = embeddings)."""
    index = feature_layer if feature_layer < 0 else feature_layer - 1
    if not -num_layers <= index < num_layers:
        raise ValueError(f"vision feature layer {feature_layer} does not exist in a {num_layers}-layer tower")
    return index % num_layers


class VisionLayerProbe:
    """Captures, for the block producing ``hidden_states[feature_layer]``: its output, CLS saliency, keys."""

    def __init__(self, vision_model: nn.Module, feature_layer: int):
        layers = encoder_layers(vision_model)
        layer = layers[layer_for_hidden_state(len(layers), feature_layer)]
        attention = layer.self_attn
        self.num_heads: int = attention.num_heads
        self.scale: float = attention.scale
        self._query: torch.Tensor | None = None
        self._keys: torch.Tensor | None = None
        self._output: torch.Tensor | None = None
        self._handles = [
            layer.register_forward_hook(self._store_output),
            attention.q_proj.register_forward_hook(self._store_query),
            attention.k_proj.register_forward_hook(self._store_keys),
        ]

    def _store_query(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        self._query = output[:, :1]  # only the CLS query is needed

    def _store_keys(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        self._keys = output

    def _store_output(self, module: nn.Module, args: tuple, output: torch.Tensor | tuple) -> None:
        self._output = output[0] if isinstance(output, tuple) else output

    def take(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(features [B, N, D], saliency [B, N] float32, keys [B, N, head_dim]) of the last tower call, CLS dropped."""
        return self.take_with_cls()[:3]

    def take_with_cls(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``take()`` plus the CLS token's hidden state [B, D] of the same layer (pre-projector)."""
        if self._query is None or self._keys is None or self._output is None:
            raise RuntimeError("the vision tower has not run since the probe was installed")
        query, keys, output = self._query, self._keys, self._output
        self._query = self._keys = self._output = None
        batch, length, width = keys.shape
        head_dim = width // self.num_heads
        q = query.float().view(batch, 1, self.num_heads, head_dim).transpose(1, 2)
        k = keys.float().view(batch, length, self.num_heads, head_dim).transpose(1, 2)
        attention = torch.softmax((q @ k.transpose(-1, -2)) * self.scale, dim=-1)  # [B, H, 1, N+1]
        saliency = attention[:, :, 0, 1:].sum(dim=1)
        head_mean_keys = keys.view(batch, length, self.num_heads, head_dim).mean(dim=2)  # model dtype, as official
        return output[:, 1:], saliency, head_mean_keys[:, 1:], output[:, 0]

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._query = self._keys = self._output = None
