"""The FlexMDM sampler (paper Algorithm 1, with count-aware insertion options).

Each step makes one network call at the row's time t, then
1. reveals masks chosen by an :class:`~flexmdm.sampling.unmasking.UnmaskingRule`, each token
   drawn from the posterior (temperature 0 = argmax);
2. inserts masks into every allowed gap, drawn as :class:`~flexmdm.sampling.insertion.Insertion`
   says (default: ℓ_i ~ Poisson(τ·κ_α(t)·g_i), Algorithm 1).
Steps follow the grid t_k = k/N. Rates are evaluated at the left end of each interval, never
at t = 1; the last interval still inserts (for linear α its Poisson mean is the whole remaining
expected gap). With ``Insertion(arrivals="exact")`` there is no grid: arrivals happen one at a time
at their own times and reveals between them (see :func:`_next_event`); N is then the most calls
a row may make. Masks left at t = 1 are filled from the t = 1 posterior, one position per
network call ("sequential", exact by Theorem E.1) or all at once ("parallel").

**Maximum length.** When a step's insertions would take a sequence past ``max_length``, a
uniformly random subset of them is dropped so that it lands exactly at ``max_length``; the
number dropped per sequence is reported in ``SampleOutput.dropped_insertions``.

Only rows still before t = 1 are sent to the network (and charged a call), cropped to the
longest of them. A network called packed — ``functools.partial(model, packed=True)`` for the DiT
(:mod:`flexmdm.models.packing`) — does no work on the padding of that crop either, so a call
costs what its live tokens cost; the random draws and their order do not change, only the
network's float rounding does, so the samples are the same given the seed unless a draw falls
within rounding of a boundary.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from flexmdm.constraints import Prompt, allowed_gaps
from flexmdm.interpolant import FlexInterpolant, typical_time
from flexmdm.sampling.insertion import Insertion
from flexmdm.sampling.ragged import insert_masks, thin_counts
from flexmdm.sampling.trace import Trace
from flexmdm.sampling.unmasking import TauLeaping, UnmaskingRule
from flexmdm.schedules import Schedule
from flexmdm.vocab import Vocab

__all__ = ["SampleOutput", "sample_flexmdm", "FlexDenoiser", "ExitCriterion", "reveal"]

FlexDenoiser = Callable[[Tensor, Tensor, Tensor, Tensor], tuple[Tensor, ...]]
"""``(x [B, n], t [B], lengths [B], frozen [B, n]) -> (token_logits [B, n, V], gaps [B, n+1])``,
optionally followed by ``count_log_probs [B, n+1, C+1]`` (log P(k tokens still to insert in each
gap), from a count head or an exact oracle)."""

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


def _unpack(outputs: tuple[Tensor, ...], x: Tensor, vocab: Vocab) -> tuple[Tensor, Tensor, Tensor | None]:
    """``(token_logits, gaps, count_log_probs or None)`` of one call, shapes checked."""
    if len(outputs) not in (2, 3):
        raise ValueError(f"a FlexMDM denoiser returns 2 or 3 tensors, got {len(outputs)}")
    token_logits, gaps = outputs[0], outputs[1]
    counts = outputs[2] if len(outputs) == 3 else None
    batch, n = x.shape
    if token_logits.shape != (batch, n, vocab.size) or gaps.shape != (batch, n + 1):
        raise ValueError(
            f"denoiser returned logits {list(token_logits.shape)} and gaps {list(gaps.shape)} for a "
            f"[{batch}, {n}] state; expected [{batch}, {n}, {vocab.size}] and [{batch}, {n + 1}]"
        )
    if counts is not None and (counts.dim() != 3 or counts.shape[:2] != (batch, n + 1)):
        raise ValueError(f"denoiser returned count log-probabilities {list(counts.shape)}; expected "
                         f"[{batch}, {n + 1}, C + 1]")
    return token_logits, gaps, counts


def _write_rows(full: Tensor, rows: Tensor, part: Tensor, fill: int | bool) -> Tensor:
    """``full`` with ``part`` written into ``rows`` (widened with ``fill`` when ``part`` is wider)."""
    width = max(full.shape[1], part.shape[1])
    if width > full.shape[1]:
        full = torch.cat([full, full.new_full((full.shape[0], width - full.shape[1]), fill)], dim=1)
    full = full.clone()
    full[rows] = torch.cat([part, part.new_full((part.shape[0], width - part.shape[1]), fill)], dim=1)
    return full


@torch.no_grad()
def sample_flexmdm(
    denoiser: FlexDenoiser,
    process: FlexInterpolant,
    *,
    steps: int,
    max_length: int | Tensor,
    prompt: Prompt | None = None,
    batch_size: int | None = None,
    rule: UnmaskingRule | None = None,
    insertion: Insertion | None = None,
    temperature: float = 1.0,
    final_fill: str = "sequential",
    generator: torch.Generator | None = None,
    record_trace: bool = False,
    early_exit: ExitCriterion | None = None,
) -> SampleOutput:
    """Generate sequences with a FlexMDM denoiser.

    Args:
        denoiser: the network or an exact oracle (see :data:`FlexDenoiser`).
        process: the interpolant the denoiser was trained on: its insertion schedule α, unmasking
            schedule β and special-token ids (build it from the checkpoint, e.g.
            :meth:`flexmdm.families.Family.process`: it must match training).
        steps: N, the grid's intervals (network calls before the final fill); with exact arrivals
            the most calls a row may make before it inserts what is left at once.
        max_length: an int or ``[B]`` per-sequence maximum (prompt included).
        prompt: frozen start tokens and insertion permissions; default: empty strings.
        batch_size: number of samples when no prompt is given.
        rule: unmasking rule; default :class:`TauLeaping`.
        insertion: how insertions are drawn; default :class:`Insertion` (Algorithm 1's Poisson).
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
    if insertion is not None and insertion.arrivals == "exact" and (rule is None or rule.uses_rates):
        raise ValueError("exact insertion reveals between arrivals: give a rate-free rule (MED, EB, a threshold)")
    if final_fill not in ("sequential", "parallel", "rule"):
        raise ValueError(f"final_fill must be 'sequential', 'parallel' or 'rule', got {final_fill!r}")
    if final_fill == "rule" and (rule is None or rule.uses_rates):
        raise ValueError("final_fill='rule' needs a rate-free rule (MED, EB, a threshold)")
    vocab, alpha, beta = process.vocab, process.insertion_schedule, process.unmasking_schedule
    if prompt is None:
        if batch_size is None:
            raise ValueError("give a prompt or a batch_size")
        prompt = Prompt.unconditional(batch_size, vocab.pad_id)
    elif batch_size is not None and batch_size != prompt.batch_size:
        raise ValueError(f"batch_size={batch_size} but the prompt has {prompt.batch_size} rows")
    rule = TauLeaping() if rule is None else rule
    insertion = Insertion() if insertion is None else insertion
    batch = prompt.batch_size
    device = prompt.tokens.device
    limit = torch.as_tensor(max_length, dtype=torch.long, device=device).expand(batch).clone()
    if bool((limit < prompt.lengths).any()):
        raise ValueError("max_length is shorter than a prompt")

    tokens, lengths, frozen = prompt.tokens.clone(), prompt.lengths.clone(), prompt.frozen
    width = int(lengths.max()) if batch else 0
    tokens, frozen = tokens[:, :width], frozen[:, :width]
    nfe = torch.zeros(batch, dtype=torch.long, device=device)
    dropped = torch.zeros(batch, dtype=torch.long, device=device)
    stopped = torch.zeros(batch, dtype=torch.bool, device=device)
    t = torch.zeros(batch, dtype=torch.float64, device=device)
    calls = torch.zeros(batch, dtype=torch.long, device=device)
    grid = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64, device=device)
    exact = insertion.arrivals == "exact"
    pending = torch.zeros(batch, dtype=torch.bool, device=device)  # exact: a proposed arrival waits at t
    bound = torch.zeros(batch, dtype=torch.float64, device=device)  # exact: the rate bound it was drawn with
    complete = torch.zeros(batch, dtype=torch.bool, device=device)  # certain to receive no more insertions
    trace = Trace(tokens.clone(), lengths.clone(), vocab.mask_id, vocab.pad_id) if record_trace else None

    def call(x: Tensor, times: Tensor, n: Tensor, fz: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        out = _unpack(denoiser(x, times.float(), n, fz), x, vocab)
        if insertion.needs_counts and out[2] is None:
            raise ValueError("Insertion(certainty=...) needs a denoiser that returns gap-count "
                             "distributions (a count head or an exact oracle)")
        return out

    step = 0
    while True:
        live = (t < 1.0) & ~stopped
        if not bool(live.any()):
            break
        rows = live.nonzero().squeeze(1)
        n = lengths[rows]
        w = int(n.max())
        x, fz, tr = tokens[rows, :w], frozen[rows, :w], t[rows]
        asked = _network_times(x, fz, n, tr, complete[rows], process)
        token_logits, gaps, count_log_probs = call(x, asked, n, fz)
        nfe[rows] += 1

        probs, sampling_probs = _posterior(token_logits, vocab, True, temperature)
        masked = x == vocab.mask_id
        allowed = allowed_gaps(fz, n, prompt.allowed_regions[rows])
        if exact:
            last = calls[rows] + 1 >= steps
            event = _next_event(insertion, alpha, gaps, count_log_probs, allowed, tr,
                                pending[rows], bound[rows], last, generator)
            masked = masked & ~event.accepted[:, None]
            t_next = tr
        else:
            t_next = grid[calls[rows] + 1]
        intensity = ((t_next - tr) * beta.rate(tr)).float()
        selected = rule.select(probs, masked, intensity, generator)
        if early_exit is not None:
            exiting = early_exit(probs, x, gaps)
            selected = selected | (exiting[:, None] & masked)
            stopped[rows] |= exiting
        x, values = reveal(x, selected, sampling_probs, temperature, generator)
        if trace is not None:
            trace.record_unmask(step, t, _write_rows(selected.new_zeros(batch, w), rows, selected, False),
                                _write_rows(values.new_zeros(batch, w), rows, values, 0))

        revealed = selected.any(dim=1)
        go_on = ~stopped[rows]
        if exact:
            counts = torch.where(go_on[:, None], event.counts, 0)
            t_next, pending[rows], bound[rows] = event.advance(revealed | (counts > 0).any(dim=1), tr)
        else:
            if insertion.refresh and bool(revealed.any()):
                _, gaps, count_log_probs = call(x, asked, n, fz)
                nfe[rows] += revealed.long()
            counts = insertion.draw(gaps, count_log_probs, alpha, tr, t_next,
                                    allowed & go_on[:, None], generator)
        certain = insertion.certain_counts(count_log_probs)
        if certain is not None:  # every count is known and inserted now: the length is complete
            complete[rows] |= (certain[0] | ~allowed).all(dim=1)
        capped = thin_counts(counts, limit[rows] - n, generator)
        dropped[rows] += (counts - capped).sum(dim=1)
        if trace is not None:
            trace.record_insert(step, t, _write_rows(capped.new_zeros(batch, w + 1), rows, capped, 0))
        x, n, fz = insert_masks(x, n, fz, capped, vocab.mask_id, vocab.pad_id)
        tokens = _write_rows(tokens, rows, x, vocab.pad_id)
        frozen = _write_rows(frozen, rows, fz, False)
        lengths[rows] = n
        t[rows] = t_next
        calls[rows] += 1
        step += 1

    width = int(lengths.max()) if batch else 0
    tokens, frozen = tokens[:, :width], frozen[:, :width]
    tokens, nfe = _fill_remaining(denoiser, tokens, lengths, frozen, vocab, rule, temperature,
                                  final_fill, generator, nfe, trace, step, early_exit)
    return SampleOutput(tokens, lengths, frozen, nfe, dropped, trace)


@dataclass
class _Event:
    """What an exact-insertion call does besides reveals (rows of one call).

    Attributes:
        accepted: ``[R]`` bool, a proposed arrival is accepted now (no reveal in this call).
        counts: ``[R, G]`` masks to insert: certain counts, plus the accepted arrival.
        proposal: ``[R]`` float64 time of the next proposed arrival (1: none is left).
        rate_bound: ``[R]`` the total uncertain expected count it was proposed with.
        last: ``[R]`` bool, rows on the last call of their budget (they end at t = 1).
    """

    accepted: Tensor
    counts: Tensor
    proposal: Tensor
    rate_bound: Tensor
    last: Tensor

    def advance(self, changed: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(t_next, pending, bound)``: rows whose state changed call again at t; the others
        move to their next proposed arrival (or to t = 1)."""
        t_next = torch.where(changed & ~self.last, t, self.proposal)
        pending = ~changed & (t_next < 1.0)
        return t_next, pending, torch.where(pending, self.rate_bound, 0.0)


def _next_event(
    insertion: Insertion,
    schedule: Schedule,
    gaps: Tensor,
    count_log_probs: Tensor | None,
    allowed: Tensor,
    t: Tensor,
    pending: Tensor,
    bound: Tensor,
    last: Tensor,
    generator: torch.Generator | None,
) -> _Event:
    """One call of exact insertion: arrivals one at a time, simulated by thinning.

    While the state does not change, the expected remaining count G(x, s) of the uncertain gaps
    can only fall as s grows (the posterior shifts to shorter x1), so κ_α(s)·G(x, t) bounds the
    arrival rate after t. A proposed arrival is drawn from that bound — P(none by s) =
    ((1 − α(s)) / (1 − α(t)))^G — and accepted at its time with probability G(x, s) / G(x, t);
    an accepted arrival inserts one mask into gap i with probability g_i / G. This simulates the
    paper's insertion process exactly for an exact denoiser. Gaps with a certain count receive it
    at once. A row on its ``last`` call of the budget instead inserts every remaining count now
    (binomial arrivals with p = 1) and ends at t = 1.
    """
    g = torch.where(allowed, gaps.double().clamp(min=0.0), 0.0)
    certain = insertion.certain_counts(count_log_probs)
    counts = torch.zeros_like(allowed, dtype=torch.long)
    if certain is not None:
        sure = certain[0] & allowed
        counts = torch.where(sure, certain[1], 0)
        g = torch.where(sure, 0.0, g)
    total = g.sum(dim=1)
    u = torch.rand(t.shape, generator=generator, dtype=torch.float64, device=t.device)
    accepted = pending & ~last & (u * bound < total)
    if bool(accepted.any()):
        gap = torch.multinomial(torch.where(accepted[:, None], g, 1.0).float(), 1, generator=generator)
        counts = counts + torch.zeros_like(counts).scatter_(1, gap, 1) * accepted[:, None]
    if bool(last.any()):
        ones = torch.ones_like(t)
        final = Insertion("binomial").draw(gaps, count_log_probs, schedule, t, ones, allowed, generator)
        counts = torch.where(last[:, None], final, counts)
    v = torch.rand(t.shape, generator=generator, dtype=torch.float64, device=t.device)
    survival = schedule.survival(t) * v.pow(1.0 / total.clamp(min=1e-12))
    proposal = torch.where(total > 0, schedule.inverse_survival(survival.clamp(0.0, 1.0)), 1.0)
    proposal = torch.where(last | (proposal <= t), torch.ones_like(t), proposal)
    return _Event(accepted, counts, proposal, total, last)


def _network_times(x: Tensor, frozen: Tensor, lengths: Tensor, t: Tensor, complete: Tensor,
                   process: FlexInterpolant) -> Tensor:
    """``[R]`` the time each row is shown to the denoiser: its clock, or for a length-complete
    row (nothing left to insert, with certainty) the time at which its state is most typical.

    Once no insertion can follow, the exact posterior no longer depends on t (only clean
    sequences of the current length explain the state), so any time is exact; a network,
    trained on the interpolant, is asked where it has seen such states
    (:func:`~flexmdm.interpolant.typical_time`) — not, say, at t = 0 with a whole trace of masks
    inserted at once.
    """
    if not bool(complete.any()):
        return t
    inside = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]
    masks = (x == process.vocab.mask_id).sum(dim=1)
    clean = (inside & ~frozen).sum(dim=1) - masks
    typical = typical_time(masks, clean, process.insertion_schedule, process.unmasking_schedule)
    return torch.where(complete, typical, t)


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
    t_one = torch.ones(tokens.shape[0], device=tokens.device)
    while True:
        masked = tokens == vocab.mask_id
        pending = masked.any(dim=1)
        if not bool(pending.any()):
            return tokens, nfe
        token_logits, gaps, _ = _unpack(denoiser(tokens, t_one, lengths, frozen), tokens, vocab)
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
