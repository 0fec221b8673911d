"""The masked-diffusion (MDM) baseline sampler on a fixed canvas.

The canvas holds frozen tokens (a prompt, an infilling prefix and suffix) and MASKs to fill.
Rules that follow rates (:class:`~flexmdm.sampling.unmasking.TauLeaping`,
:class:`~flexmdm.sampling.unmasking.Adaptive`) walk the grid t_k = k/N with one call per step,
then fill what is left at t = 1. Rate-free rules (MED, EB, thresholds) call the network until no
mask is left, at the time t = β⁻¹(fraction of revealed positions). Only rows that still hold
masks are sent to the network, and only they are charged a network call. PAD is a real output
of MDM; the returned sequences have every PAD removed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from flexmdm.constraints import pad_sequences
from flexmdm.interpolant import MDMInterpolant
from flexmdm.sampling.flexmdm import ExitCriterion, SampleOutput, _posterior, reveal
from flexmdm.sampling.ragged import compact
from flexmdm.sampling.unmasking import TauLeaping, UnmaskingRule
from flexmdm.vocab import Vocab

__all__ = ["MDMDenoiser", "mdm_canvas", "sample_mdm"]

MDMDenoiser = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]
"""``(x [B, L], t [B], lengths [B], frozen [B, L]) -> token_logits [B, L, V]``."""


def mdm_canvas(
    prefixes: Sequence[Sequence[int]],
    length: int,
    vocab: Vocab,
    suffixes: Sequence[Sequence[int]] | None = None,
    middle_lengths: Sequence[int] | None = None,
) -> tuple[Tensor, Tensor]:
    """Build canvases ``prefix + MASK… (+ suffix)`` of width ``length``.

    Without suffixes the masks run to the end of the canvas. With suffixes, ``middle_lengths``
    masks sit between prefix and suffix (default: whatever the canvas leaves), and the rest of
    the canvas is PAD (frozen).

    Returns:
        ``(canvas [B, length], frozen [B, length])``.
    """
    rows, frozen_rows = [], []
    for b, prefix in enumerate(prefixes):
        suffix = [] if suffixes is None else list(suffixes[b])
        room = length - len(prefix) - len(suffix)
        middle = room if middle_lengths is None else middle_lengths[b]
        if middle < 0 or middle > room:
            raise ValueError(f"row {b}: prefix and suffix leave {room} positions, {middle} requested")
        tail = room - middle
        rows.append([*prefix, *[vocab.mask_id] * middle, *suffix, *[vocab.pad_id] * tail])
        frozen_rows.append([1] * len(prefix) + [0] * middle + [1] * (len(suffix) + tail))
    canvas, _ = pad_sequences(rows, vocab.pad_id)
    frozen, _ = pad_sequences(frozen_rows, 0)
    return canvas, frozen.bool()


@torch.no_grad()
def sample_mdm(
    denoiser: MDMDenoiser,
    process: MDMInterpolant,
    *,
    steps: int,
    canvas: Tensor,
    frozen: Tensor | None = None,
    rule: UnmaskingRule | None = None,
    temperature: float = 1.0,
    final_fill: str = "sequential",
    generator: torch.Generator | None = None,
    early_exit: ExitCriterion | None = None,
) -> SampleOutput:
    """Fill the MASKs of fixed-length canvases.

    Args:
        denoiser: see :data:`MDMDenoiser`.
        process: the interpolant the denoiser was trained on: its unmasking schedule β and
            special-token ids (e.g. :meth:`flexmdm.families.Family.process`: it must match training).
        steps: grid intervals for rate-following rules; the maximum number of calls otherwise.
        canvas: ``[B, L]`` tokens with MASK where to generate (see :func:`mdm_canvas`).
        frozen: ``[B, L]`` bool, positions the model treats as given (default: non-MASK ones).
        rule: default :class:`TauLeaping`.
        temperature: 0 for argmax.
        final_fill: "sequential" or "parallel", for masks left after the loop.
        generator: random stream.
        early_exit: evaluated on every step's posterior; a row for which it holds has all its
            masks revealed from that posterior at once and is done (no extra call).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if final_fill not in ("sequential", "parallel"):
        raise ValueError(f"final_fill must be 'sequential' or 'parallel', got {final_fill!r}")
    rule = TauLeaping() if rule is None else rule
    vocab, beta = process.vocab, process.unmasking_schedule
    tokens = canvas.clone()
    batch, width = tokens.shape
    frozen = tokens != vocab.mask_id if frozen is None else frozen.bool()
    device = tokens.device
    lengths = torch.full((batch,), width, dtype=torch.long, device=device)
    nfe = torch.zeros(batch, dtype=torch.long, device=device)
    generable = (~frozen).sum(dim=1).clamp(min=1)

    def call(rows: Tensor, t: Tensor) -> Tensor:
        """Posterior for the rows that still hold masks; ``[r, L, V]``."""
        nfe[rows] += 1
        logits = denoiser(tokens[rows], t[rows], lengths[rows], frozen[rows])
        if logits.shape != (len(rows), width, vocab.size):
            raise ValueError(f"denoiser returned {list(logits.shape)}, expected [{len(rows)}, {width}, {vocab.size}]")
        return logits

    for k in range(steps):
        masked = tokens == vocab.mask_id
        rows = masked.any(dim=1).nonzero().squeeze(1)
        if len(rows) == 0:
            break
        if rule.uses_rates:
            t = torch.full((batch,), k / steps, device=device)
            intensity = (1.0 / steps) * beta.rate(t)
        else:
            revealed = 1.0 - masked.sum(dim=1) / generable
            t = beta.inverse(revealed.float())
            intensity = torch.zeros(batch, device=device)
        probs, sampling_probs = _posterior(call(rows, t), vocab, False, temperature)
        selected = rule.select(probs, masked[rows], intensity[rows], generator)
        if early_exit is not None:
            selected = selected | (early_exit(probs, tokens[rows], None)[:, None] & masked[rows])
        tokens[rows], _ = reveal(tokens[rows], selected, sampling_probs, temperature, generator)

    while True:
        masked = tokens == vocab.mask_id
        rows = masked.any(dim=1).nonzero().squeeze(1)
        if len(rows) == 0:
            break
        probs, sampling_probs = _posterior(call(rows, torch.ones(batch, device=device)), vocab, False, temperature)
        selected = masked[rows]
        if final_fill == "sequential":
            best = torch.where(selected, rule.order(probs), float("-inf")).argmax(dim=1)
            selected = torch.zeros_like(selected).scatter_(1, best[:, None], True) & selected
        tokens[rows], _ = reveal(tokens[rows], selected, sampling_probs, temperature, generator)

    keep = tokens != vocab.pad_id
    out_tokens, out_lengths = compact(tokens, keep, vocab.pad_id)
    out_frozen, _ = compact(frozen & keep, keep, False)
    return SampleOutput(out_tokens, out_lengths, out_frozen.bool(), nfe, torch.zeros_like(nfe))
