"""The attention kernels of ``flexmdm bench speed``, timed alone: padded SDPA, packed rows, and
FlexAttention with a document mask."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from flexmdm.bench.record import Stopwatch, spread
from flexmdm.losses import sample_times
from flexmdm.models.layers import Padded
from flexmdm.models.packing import Packing

if TYPE_CHECKING:
    from flexmdm.bench.speed import SpeedSettings

__all__ = ["measure_attention"]


def measure_attention(settings: SpeedSettings, flex: bool) -> dict[str, dict[str, float]]:
    """Milliseconds of the attention alone on one batch of FlexMDM states (n + 1 slots each):
    padded SDPA and packed rows with SDPA (what ``packed`` uses), forward and forward + backward;
    with ``flex``, FlexAttention with a document mask over the whole packed sequence, compiled
    once outside the timing, forward only where it has no backward (CPU, torch 2.13)."""
    generator = torch.Generator().manual_seed(settings.seed)
    length, heads = settings.sequence_length, settings.n_heads
    dim = settings.d_model // heads
    slots = (sample_times(settings.train_batch, generator=generator) * length).long() + 1
    width = int(slots.max())
    padded, packing = Padded(slots, width), Packing(slots, width)
    padded_qkv = [torch.randn(settings.train_batch, heads, width, dim, generator=generator) for _ in range(3)]
    packed_qkv = [packing.pack(x.transpose(1, 2)).transpose(1, 2) for x in padded_qkv]  # [1, H, T, D]
    kernels: dict[str, tuple[Callable[..., Tensor], list[Tensor], bool]] = {
        "padded_sdpa": (padded.attend, padded_qkv, True),
        "packed_rows_sdpa": (packing.attend, packed_qkv, True),
    }
    if flex:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        segment = packing.segment
        block_mask = create_block_mask(lambda b, h, q, k: segment[q] == segment[k], None, None,
                                       packing.tokens, packing.tokens, device=segment.device.type)
        compiled = torch.compile(flex_attention)

        def document(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
            return compiled(q, k, v, block_mask=block_mask)

        backward = segment.device.type != "cpu"
        kernels["packed_flex_document"] = (document, packed_qkv, backward)
        _attend(document, packed_qkv, backward)  # compile
    samples: dict[str, list[float]] = {}
    for _ in range(settings.repeats):
        for name, (attend, qkv, trainable) in kernels.items():
            for mode in ("forward", "forward_backward") if trainable else ("forward",):
                watch = Stopwatch()
                _attend(attend, qkv, mode == "forward_backward")
                samples.setdefault(f"{name}_{mode}", []).append(watch.seconds * 1000)
    return {name: spread(values) for name, values in samples.items()}


def _attend(attend: Callable[..., Tensor], qkv: list[Tensor], backward: bool) -> None:
    with torch.set_grad_enabled(backward):
        q, k, v = (x.detach().requires_grad_(backward) for x in qkv)
        out = attend(q, k, v)
        if backward:
            out.sum().backward()
