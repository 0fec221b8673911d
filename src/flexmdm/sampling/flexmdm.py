"""The FlexMDM sampler (paper Algorithm 1, restated in GUIDE §2).

On a grid 0 = t_0 < … < t_N = 1, one network call per step at t_k, then
1. reveal masks chosen by an :class:`~flexmdm.sampling.unmasking.UnmaskingRule`, each token
   drawn from the posterior (temperature 0 = argmax);
2. insert ℓ_i ~ Poisson(τ·κ_α(t_k)·g_i) masks into every allowed gap i.
Rates are evaluated at the left end of each interval, never at t = 1; the last interval still
inserts (for linear α its Poisson mean is the whole remaining expected gap). Masks left at t = 1
are filled from the t = 1 posterior, one position per network call ("sequential", exact by
Theorem E.1) or all at once ("parallel", one call).

**Maximum length.** When a step's insertions would take a sequence past ``max_length``, a
uniformly random subset of them is dropped so that it lands exactly at ``max_length``; the
number dropped per sequence is reported in ``SampleOutput.dropped_insertions``.

Every step processes only up to the longest sequence of the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from flexmdm.constraints import Prompt, allowed_gaps
from flexmdm.sampling.ragged import insert_masks, thin_counts
from flexmdm.sampling.trace import Trace
from flexmdm.sampling.unmasking import TauLeaping, UnmaskingRule
from flexmdm.schedules import Schedule
from flexmdm.vocab import Vocab

__all__ = ["SampleOutput", "sample_flexmdm", "FlexDenoiser", "ExitCriterion", "reveal"]

FlexDenoiser = Callable[[Tensor, Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]
"""``(x [B, n], t [B], lengths [B], frozen [B, n]) -> (token_logits [B, n, V], gaps [B, n+1])``."""

ExitCriterion = Callable[[Tensor, Tensor, Tensor | None], Tensor]
"""``(probs [B, n, V], tokens [B, n], expected_gaps [B, n+1] or None for MDM) -> [B] bool``:
rows that stop now (early exit). Their masks are all revealed from that step's posterior and
they take no further network call nor insertion."""


@dataclass
class SampleOutput:
    """Generated sequences.

    Attributes:
        tokens: ``[B, L]`` samples, PAD after ``lengths``.
        lengths: ``[B]``.
        frozen: ``[B, L]`` bool, which tokens came from the prompt.
        nfe: ``[B]`` network calls spent on each sample.
        dropped_insertions: ``[B]`` insertions dropped to respect the maximum length.
        trace: the recorded events, when asked for.
    """

    tokens: Tensor
    lengths: Tensor
    frozen: Tensor
    nfe: Tensor
    dropped_insertions: Tensor
    trace: Trace | None = None

    def sequences(self) -> list[list[int]]:
        """The samples as Python lists."""
        return [row[:n].tolist() for row, n in zip(self.tokens, self.lengths.tolist())]


def _posterior(token_logits: Tensor, vocab: Vocab, forbid_pad: bool, temperature: float) -> tuple[Tensor, Tensor]:
    """``(probs at temperature 1, probs to sample from)``, both ``[B, n, V]``; MASK (and PAD) get 0."""
    logits = token_logits.float().clone()
    logits[..., vocab.mask_id] = float("-inf")
    if forbid_pad:
        logits[..., vocab.pad_id] = float("-inf")
    probs = torch.softmax(logits, dim=-1)
    if temperature == 1.0 or temperature == 0.0:
        return probs, probs
    return probs, torch.softmax(logits / temperature, dim=-1)


def reveal(
    tokens: Tensor,
    selected: Tensor,
    sampling_probs: Tensor,
    temperature: float,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor]:
    """Draw a token for every selected slot.

    Args:
        tokens: ``[B, n]``.
        selected: ``[B, n]`` bool.
        sampling_probs: ``[B, n, V]``.
        temperature: 0 for argmax.

    Returns:
        ``(new tokens [B, n], drawn values [B, n])`` (values meaningful where selected).
    """
    values = torch.zeros_like(tokens)
    rows = sampling_probs[selected]
    if rows.shape[0]:
        if temperature == 0.0:
            drawn = rows.argmax(dim=-1)
        else:
            drawn = torch.multinomial(rows, 1, generator=generator).squeeze(1)
        values[selected] = drawn
    return torch.where(selected, values, tokens), values


def _check_outputs(token_logits: Tensor, gaps: Tensor, x: Tensor, vocab: Vocab) -> None:
    batch, n = x.shape
    if token_logits.shape != (batch, n, vocab.size) or gaps.shape != (batch, n + 1):
        raise ValueError(
            f"denoiser returned logits {list(token_logits.shape)} and gaps {list(gaps.shape)} for a "
            f"[{batch}, {n}] state; expected [{batch}, {n}, {vocab.size}] and [{batch}, {n + 1}]"
        )


@torch.no_grad()
def sample_flexmdm(
    denoiser: FlexDenoiser,
    *,
    vocab: Vocab,
    insertion_schedule: Schedule,
    unmasking_schedule: Schedule,
    steps: int,
    max_length: int | Tensor,
    prompt: Prompt | None = None,
    batch_size: int | None = None,
    rule: UnmaskingRule | None = None,
    temperature: float = 1.0,
    final_fill: str = "sequential",
    generator: torch.Generator | None = None,
    record_trace: bool = False,
    early_exit: ExitCriterion | None = None,
) -> SampleOutput:
    """Generate sequences with a FlexMDM denoiser.

    Args:
        denoiser: the network or an exact oracle (see :data:`FlexDenoiser`).
        vocab: special-token ids.
        insertion_schedule: α (read it from the checkpoint: it must match training).
        unmasking_schedule: β.
        steps: N, the number of grid intervals (network calls before the final fill).
        max_length: an int or ``[B]`` per-sequence maximum (prompt included).
        prompt: frozen start tokens and insertion permissions; default: empty strings.
        batch_size: number of samples when no prompt is given.
        rule: unmasking rule; default :class:`TauLeaping`.
        temperature: > 0 scales the logits; 0 takes the argmax.
        final_fill: "sequential" (exact, one call per remaining mask), "parallel" (one call) or
            "rule" (rate-free rules only: keep applying ``rule`` at t = 1 until no mask is left).
        generator: random stream (same seed, same samples).
        record_trace: keep every event in ``SampleOutput.trace``.
        early_exit: see :data:`ExitCriterion`; evaluated on every call's posterior, the final
            fill included. Network calls are charged only to rows not yet stopped.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if final_fill not in ("sequential", "parallel", "rule"):
        raise ValueError(f"final_fill must be 'sequential', 'parallel' or 'rule', got {final_fill!r}")
    if final_fill == "rule" and (rule is None or rule.uses_rates):
        raise ValueError("final_fill='rule' needs a rate-free rule (MED, EB, a threshold)")
    if prompt is None:
        if batch_size is None:
            raise ValueError("give a prompt or a batch_size")
        prompt = Prompt.unconditional(batch_size, vocab.pad_id)
    elif batch_size is not None and batch_size != prompt.batch_size:
        raise ValueError(f"batch_size={batch_size} but the prompt has {prompt.batch_size} rows")
    rule = TauLeaping() if rule is None else rule
    batch = prompt.batch_size
    limit = torch.as_tensor(max_length, dtype=torch.long).expand(batch).clone()
    if bool((limit < prompt.lengths).any()):
        raise ValueError("max_length is shorter than a prompt")

    tokens, lengths, frozen = prompt.tokens.clone(), prompt.lengths.clone(), prompt.frozen
    width = int(lengths.max()) if batch else 0
    tokens, frozen = tokens[:, :width], frozen[:, :width]
    nfe = torch.zeros(batch, dtype=torch.long)
    dropped = torch.zeros(batch, dtype=torch.long)
    stopped = torch.zeros(batch, dtype=torch.bool)
    trace = Trace(tokens.clone(), lengths.clone(), vocab.mask_id, vocab.pad_id) if record_trace else None
    grid = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)

    for k in range(steps):
        t, tau = float(grid[k]), float(grid[k + 1] - grid[k])
        t_vec = torch.full((batch,), t)
        token_logits, gaps = denoiser(tokens, t_vec, lengths, frozen)
        _check_outputs(token_logits, gaps, tokens, vocab)
        nfe += (~stopped).long()

        probs, sampling_probs = _posterior(token_logits, vocab, True, temperature)
        masked = tokens == vocab.mask_id
        intensity = tau * unmasking_schedule.rate(t_vec)
        selected = rule.select(probs, masked, intensity, generator)
        if early_exit is not None:
            exiting = early_exit(probs, tokens, gaps) & ~stopped
            selected = selected | (exiting[:, None] & masked)
            stopped = stopped | exiting
        tokens, values = reveal(tokens, selected, sampling_probs, temperature, generator)
        if trace is not None:
            trace.record_unmask(k, t, selected, values)

        allowed = allowed_gaps(frozen, lengths, prompt.allowed_regions) & ~stopped[:, None]
        rates = tau * insertion_schedule.rate(t_vec)[:, None] * gaps.float().clamp(min=0.0)
        counts = torch.poisson(torch.where(allowed, rates, 0.0), generator=generator).long()
        capped = thin_counts(counts, limit - lengths, generator)
        dropped += (counts - capped).sum(dim=1)
        if trace is not None:
            trace.record_insert(k, t, capped)
        tokens, lengths, frozen = insert_masks(tokens, lengths, frozen, capped, vocab.mask_id, vocab.pad_id)

    tokens, nfe = _fill_remaining(denoiser, tokens, lengths, frozen, vocab, rule, temperature,
                                  final_fill, generator, nfe, trace, steps, early_exit)
    return SampleOutput(tokens, lengths, frozen, nfe, dropped, trace)


def _fill_remaining(
    denoiser: FlexDenoiser,
    tokens: Tensor,
    lengths: Tensor,
    frozen: Tensor,
    vocab: Vocab,
    rule: UnmaskingRule,
    temperature: float,
    final_fill: str,
    generator: torch.Generator | None,
    nfe: Tensor,
    trace: Trace | None,
    step: int,
    early_exit: ExitCriterion | None = None,
) -> tuple[Tensor, Tensor]:
    """Fill every mask left at t = 1 from the t = 1 posterior."""
    t_one = torch.ones(tokens.shape[0])
    while True:
        masked = tokens == vocab.mask_id
        pending = masked.any(dim=1)
        if not bool(pending.any()):
            return tokens, nfe
        token_logits, gaps = denoiser(tokens, t_one, lengths, frozen)
        nfe += pending.long()
        probs, sampling_probs = _posterior(token_logits, vocab, True, temperature)
        if final_fill == "parallel":
            selected = masked
        elif final_fill == "rule":
            selected = rule.select(probs, masked, torch.zeros_like(t_one), generator)
        else:
            best = torch.where(masked, rule.order(probs), float("-inf")).argmax(dim=1)
            selected = torch.zeros_like(masked).scatter_(1, best[:, None], True) & masked
        if early_exit is not None:
            selected = selected | (early_exit(probs, tokens, gaps)[:, None] & masked)
        tokens, values = reveal(tokens, selected, sampling_probs, temperature, generator)
        if trace is not None:
            trace.record_unmask(step, 1.0, selected, values)
        step += 1
