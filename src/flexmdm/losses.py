"""Training objectives and time sampling.

FlexMDM (paper eq. 7), for one sample at time t:

    κ_β(t) · Σ_{masked i} −log f[i, x1[s_i]]  +  κ_α(t) · Σ_{allowed gaps i} φ(gap_i, g_i),

with the Poisson Bregman divergence φ(k, y) = y − k·log y (adding k·log k − k gives the
non-negative Poisson deviance; same minimiser, so the reported ``gap_loss`` is the deviance and
reaches 0 at the truth). With a count head, the insertion part adds
κ_α(t) · Σ_{allowed gaps i} −log q_i(min(gap_i, C)), the cross-entropy of the predicted count
distribution; its minimiser is the true posterior of each gap's count, so Prop. 1 still holds.
MDM (eq. 4): κ_β(t) · Σ_{masked i} −log f[i, x1_i], PAD included.

**Normalisation.** Each loss is the batch sum divided by the number of tokens the model must
generate in the batch (non-frozen data tokens for FlexMDM, non-frozen canvas positions for MDM),
so it is a per-token negative ELBO whatever the batch composition.

**Large vocabularies.** The token cross-entropy is computed by :func:`chunked_cross_entropy` when
the vocabulary has at least ``CHUNKED_VOCAB`` ids (LLaDA's 126,464): float32 log-probabilities
exist for ``chunk`` positions at a time, in the forward and the backward pass, instead of three
float32 copies of the whole ``[B · n, V]`` logits.

**κ near t = 1.** κ(t) diverges at t = 1 for schedules with a(1) = 1. Training times are drawn
in [0, ``max_time``] (default 1 − 10⁻³, where linear κ = 1000): the weighted terms stay finite
and the truncated interval carries a fraction ≈ 10⁻³ of the masks, which the samplers fill with
the t = 1 posterior anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from flexmdm.interpolant import FlexBatch, MDMBatch
from flexmdm.schedules import Schedule

__all__ = ["LossOutput", "chunked_cross_entropy", "flexmdm_loss", "mdm_loss", "poisson_deviance", "sample_times",
           "CHUNKED_VOCAB", "MAX_TIME"]

MAX_TIME = 1.0 - 1e-3
CHUNKED_VOCAB = 32768
"""Vocabularies at least this large use :func:`chunked_cross_entropy`."""


@dataclass
class LossOutput:
    """Scalar losses (all normalised per generated token).

    Attributes:
        loss: the objective to minimise.
        token_loss: the unmasking (cross-entropy) part.
        gap_loss: the insertion part as Poisson deviance, plus the count cross-entropy with a count
            head (0 for MDM).
        num_tokens: the normaliser.
        per_sequence: ``[B]`` each sequence's weighted sum, before normalisation.
    """

    loss: Tensor
    token_loss: Tensor
    gap_loss: Tensor
    num_tokens: Tensor
    per_sequence: Tensor


def poisson_deviance(k: Tensor, y: Tensor, eps: float = 1e-12) -> Tensor:
    """φ(k, y) + k log k − k = y − k − k log(y / k), elementwise; ≥ 0 with equality at y = k."""
    k = k.to(y.dtype)
    return y - k - k * torch.log(y.clamp(min=eps)) + torch.special.xlogy(k, k)


class _ChunkedCrossEntropy(torch.autograd.Function):
    """−log softmax(logits)[target] row by row, ``chunk`` rows in float32 at a time; the backward
    pass recomputes each chunk's softmax from the saved logits and log-normalisers."""

    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor, chunk: int) -> Tensor:
        normalisers = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)
        picked = torch.empty_like(normalisers)
        for start in range(0, logits.shape[0], chunk):
            rows = logits[start:start + chunk].float()
            normalisers[start:start + chunk] = torch.logsumexp(rows, dim=-1)
            picked[start:start + chunk] = rows.gather(1, targets[start:start + chunk, None]).squeeze(1)
        ctx.save_for_backward(logits, targets, normalisers)
        ctx.chunk = chunk
        return normalisers - picked

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        logits, targets, normalisers = ctx.saved_tensors
        out = torch.empty_like(logits)
        for start in range(0, logits.shape[0], ctx.chunk):
            end = start + ctx.chunk
            probs = torch.exp(logits[start:end].float() - normalisers[start:end, None])
            probs.scatter_add_(1, targets[start:end, None], probs.new_full((probs.shape[0], 1), -1.0))
            out[start:end] = (probs * grad[start:end, None]).to(out.dtype)
        return out, None, None


def chunked_cross_entropy(logits: Tensor, targets: Tensor, chunk: int = 1024) -> Tensor:
    """``F.cross_entropy(logits.float(), targets, reduction="none")`` for ``logits [N, V]`` (any float
    dtype) and ``targets [N]``, computed ``chunk`` rows at a time: no float32 copy of the whole logits
    is made, and the gradient has the logits' dtype. Returns ``[N]`` float32."""
    return _ChunkedCrossEntropy.apply(logits, targets, chunk)


def _token_nll(token_logits: Tensor, targets: Tensor, masked: Tensor) -> Tensor:
    """``[B]`` Σ over masked slots of −log softmax(logits)[target]."""
    safe_targets = torch.where(masked, targets, 0)
    if token_logits.shape[-1] >= CHUNKED_VOCAB:
        nll = chunked_cross_entropy(token_logits.flatten(0, 1), safe_targets.flatten()).view(safe_targets.shape)
    else:
        nll = F.cross_entropy(token_logits.transpose(1, 2).float(), safe_targets, reduction="none")
    return torch.where(masked, nll, 0.0).sum(dim=1)


def flexmdm_loss(
    token_logits: Tensor,
    expected_gaps: Tensor,
    batch: FlexBatch,
    insertion_schedule: Schedule,
    unmasking_schedule: Schedule,
    count_log_probs: Tensor | None = None,
    gap_weight: float = 1.0,
) -> LossOutput:
    """FlexMDM objective (eq. 7), its insertion part weighted by ``gap_weight``.

    Args:
        token_logits: ``[B, n, V]`` unmasking logits.
        expected_gaps: ``[B, n + 1]`` non-negative insertion expectations g.
        batch: the states the predictions were made on.
        insertion_schedule: α.
        unmasking_schedule: β.
        count_log_probs: ``[B, n + 1, C + 1]`` a count head's log-probabilities, or None; its
            cross-entropy is added to the insertion part (``gap_loss``).
        gap_weight: the insertion part's weight in ``loss`` (eq. 7: 1). Each part has the true
            posterior as its own minimiser, so any positive weight keeps Prop. 1; it moves the
            shared layers' effort between counting and unmasking. ``gap_loss`` is unweighted.
    """
    t = batch.t
    token_nll = _token_nll(token_logits, batch.targets, batch.masked)
    deviance = poisson_deviance(batch.gaps, expected_gaps.float())
    if count_log_probs is not None:
        cap = count_log_probs.shape[-1] - 1
        counts = batch.gaps.clamp(max=cap).long()[..., None]
        deviance = deviance - count_log_probs.float().gather(-1, counts).squeeze(-1)
    gap_term = torch.where(batch.gap_allowed, deviance, 0.0).sum(dim=1)
    num_tokens = (batch.data_lengths - batch.frozen.sum(dim=1)).sum().clamp(min=1)
    token_part = unmasking_schedule.rate(t) * token_nll
    gap_part = insertion_schedule.rate(t) * gap_term
    token_loss, gap_loss = token_part.sum() / num_tokens, gap_part.sum() / num_tokens
    return LossOutput(token_loss + gap_weight * gap_loss, token_loss, gap_loss, num_tokens,
                      token_part + gap_weight * gap_part)


def mdm_loss(token_logits: Tensor, batch: MDMBatch, unmasking_schedule: Schedule) -> LossOutput:
    """MDM objective (eq. 4) on a fixed canvas, PAD a target like any token.

    Args:
        token_logits: ``[B, L, V]``.
        batch: the masked canvases.
        unmasking_schedule: β.
    """
    token_nll = _token_nll(token_logits, batch.targets, batch.masked)
    num_tokens = (~batch.frozen).sum().clamp(min=1)
    token_part = unmasking_schedule.rate(batch.t) * token_nll
    token_loss = token_part.sum() / num_tokens
    return LossOutput(token_loss, token_loss, torch.zeros_like(token_loss), num_tokens, token_part)


def sample_times(
    batch_size: int,
    *,
    generator: torch.Generator | None = None,
    stratified: bool = True,
    offset: int = 0,
    total: int | None = None,
    max_time: float = MAX_TIME,
    power: float = 1.0,
) -> Tensor:
    """Training times ``max_time · u^power`` in [0, max_time], u uniform on [0, 1].

    Stratified (low-discrepancy) sampling draws one u in each of ``total`` equal strata of
    the global batch; this process owns strata ``offset .. offset + batch_size - 1`` (for data
    parallelism: ``offset = rank * batch_size``, ``total = world_size * batch_size``, and a
    different ``generator`` per rank).

    ``power`` 1 gives uniform times; ``power`` > 1 draws more early times (density ∝
    t^(1/power − 1)), where the sequence is short and its final length is decided. Any time
    density that is positive on (0, max_time) leaves the minimiser of the loss unchanged — the
    true posterior and expected gaps at every (x_t, t), Prop. 1 — it only moves the effort.

    Returns:
        ``[batch_size]`` float32 times.
    """
    if not 0.0 < max_time <= 1.0:
        raise ValueError(f"max_time must lie in (0, 1], got {max_time}")
    if power <= 0:
        raise ValueError(f"power must be > 0, got {power}")
    total = batch_size if total is None else total
    if not 0 <= offset <= total - batch_size:
        raise ValueError(f"strata {offset}..{offset + batch_size - 1} do not fit in {total}")
    u = torch.rand(batch_size, generator=generator)
    if stratified:
        u = (torch.arange(offset, offset + batch_size) + u) / total
    return u**power * max_time
