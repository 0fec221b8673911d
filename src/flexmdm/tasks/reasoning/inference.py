"""Reasoning as infilling: early exit, posterior reasoning given an answer, scoring a trace.

All three read the template's explicit answer region (:mod:`~flexmdm.tasks.reasoning.template`):

* :class:`AnswerEntropyExit` — an :data:`~flexmdm.sampling.flexmdm.ExitCriterion` that stops a
  sample once the entropy of its masked answer positions (max or mean) is below γ; the sampler
  then fills every remaining mask from that same posterior (no extra call). For FlexMDM the
  answer region must also hold at least one slot and expect fewer than ``max_missing`` further
  insertions.
* :func:`generate` — FlexMDM or MDM generation from questions, optionally with the answers
  frozen (posterior sampling of reasoning: the answer can never change).
* :func:`answer_log_probability` — log p(answer | question, partial reasoning) under the model,
  by the chain rule over the answer positions (one call per answer position).
* :func:`infilling_scores` — both, measured on problems with known answers and reasoning.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from flexmdm.constraints import Prompt
from flexmdm.families import Conditioning, SamplingOptions, family
from flexmdm.sampling import Insertion, SampleOutput
from flexmdm.sampling.flexmdm import ExitCriterion
from flexmdm.sampling.unmasking import EntropyBounded, UnmaskingRule, entropy
from flexmdm.schedules import Schedule
from flexmdm.tasks.reasoning.task import EncodedProblems
from flexmdm.tasks.reasoning.template import ReasoningTemplate

__all__ = ["AnswerEntropyExit", "ReasoningConditioning", "answer_log_probability", "answer_region", "generate",
           "infilling_scores"]


def answer_region(tokens: Tensor, open_id: int, close_id: int) -> Tensor:
    """``[B, n]`` bool: the slots strictly between the first ``open_id`` and the first ``close_id``."""
    opened = torch.cumsum((tokens == open_id).long(), dim=1) > 0
    closed = torch.cumsum((tokens == close_id).long(), dim=1) > 0
    return opened & ~closed & (tokens != open_id)


def _gap_region(tokens: Tensor, open_id: int, close_id: int) -> Tensor:
    """``[B, n + 1]`` bool: the gap slots inside the answer region (after open, up to close)."""
    zero = tokens.new_zeros(tokens.shape[0], 1)
    opens = torch.cat([zero, torch.cumsum((tokens == open_id).long(), dim=1)], dim=1)
    closes = torch.cat([zero, torch.cumsum((tokens == close_id).long(), dim=1)], dim=1)
    return (opens > 0) & (closes == 0)


@dataclass(frozen=True)
class AnswerEntropyExit:
    """Stop once the answer is settled.

    Holds for a row when (a) its answer region has at least one slot, (b) the ``reduce``
    ("max" or "mean") of the entropies (nats) of the answer's masked slots is below
    ``threshold`` (a region without masks counts as 0), and (c) with FlexMDM (gaps given) the
    expected insertions still due in the answer region sum to less than ``max_missing``.

    Args:
        open_id: the ``<a>`` token.
        close_id: the ``</a>`` token.
        mask_id: MASK.
        threshold: γ.
        reduce: "max" or "mean" over the answer's masked slots.
        max_missing: FlexMDM only, see (c).
    """

    open_id: int
    close_id: int
    mask_id: int
    threshold: float = 0.1
    reduce: Literal["max", "mean"] = "max"
    max_missing: float = 0.5

    def __post_init__(self) -> None:
        if self.reduce not in ("max", "mean"):
            raise ValueError(f"reduce must be 'max' or 'mean', got {self.reduce!r}")
        if self.threshold < 0 or self.max_missing <= 0:
            raise ValueError("threshold must be >= 0 and max_missing > 0")

    @classmethod
    def for_template(cls, template: ReasoningTemplate, **options: Any) -> AnswerEntropyExit:
        _, _, open_id, close_id = template.delimiter_ids
        return cls(open_id, close_id, template.vocab.mask_id, **options)

    def answer_entropy(self, probs: Tensor, tokens: Tensor) -> Tensor:
        """``[B]`` max or mean entropy over the masked answer slots (0 where none)."""
        masked = answer_region(tokens, self.open_id, self.close_id) & (tokens == self.mask_id)
        h = torch.where(masked, entropy(probs), 0.0)
        if self.reduce == "max":
            return h.max(dim=1).values if h.shape[1] else h.sum(dim=1)
        return h.sum(dim=1) / masked.sum(dim=1).clamp(min=1)

    def __call__(self, probs: Tensor, tokens: Tensor, expected_gaps: Tensor | None) -> Tensor:
        """``[B]`` bool, see the class docstring (``probs [B, n, V]``, ``tokens [B, n]``)."""
        has_slot = answer_region(tokens, self.open_id, self.close_id).any(dim=1)
        settled = has_slot & (self.answer_entropy(probs, tokens) < self.threshold)
        if expected_gaps is not None:
            inside = _gap_region(tokens, self.open_id, self.close_id)
            missing = torch.where(inside, expected_gaps.float().clamp(min=0.0), 0.0).sum(dim=1)
            settled = settled & (missing < self.max_missing)
        return settled


@dataclass(frozen=True)
class ReasoningConditioning(Conditioning):
    """Questions to answer (optionally with their answers frozen) in the template's two layouts."""

    template: ReasoningTemplate
    questions: Sequence[Sequence[int]]
    answers: Sequence[Sequence[int]] | None = None

    def flexmdm_prompt(self) -> Prompt:
        return self.template.flexmdm_prompt(self.questions, self.answers)

    def mdm_canvas(self) -> tuple[Tensor, Tensor]:
        return self.template.mdm_canvas(self.questions, self.answers)


def generate(
    kind: str,
    model: nn.Module,
    template: ReasoningTemplate,
    schedules: dict[str, Schedule],
    questions: Sequence[Sequence[int]],
    *,
    rule: UnmaskingRule,
    steps: int,
    answers: Sequence[Sequence[int]] | None = None,
    early_exit: ExitCriterion | None = None,
    insertion: Insertion | None = None,
    max_length: int | None = None,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> SampleOutput:
    """Fill the template for each question with a FlexMDM or an MDM model.

    Args:
        kind: the model's family ("flexmdm" or "mdm").
        model: the denoiser.
        template: token ids and layouts.
        schedules: ``{"unmasking": β}`` (and ``"insertion": α`` for FlexMDM), as trained.
        questions: B question id lists.
        rule: the unmasking rule; masks left at t = 1 are filled by it when it is rate-free.
        steps: FlexMDM: grid intervals (insertions follow their rates), then rate-free rules
            go on at t = 1 until no mask is left; MDM: the most calls of the main loop.
        answers: B answer id lists to freeze (posterior sampling of reasoning); None: generate.
        early_exit: e.g. :class:`AnswerEntropyExit` (meaningless with answers given).
        insertion: FlexMDM arrivals (:class:`~flexmdm.sampling.Insertion`); default Algorithm 1.
        max_length: FlexMDM length cap (default: the MDM canvas width).
        temperature: 0 for argmax.
        generator: random stream (on ``device``).
        device: where the model is (the conditioning's tensors go there).
    """
    options = SamplingOptions(steps=steps, rule=rule, temperature=temperature, insertion=insertion,
                              early_exit=early_exit)
    return family(kind).generate(model, schedules=schedules, vocab=template.vocab,
                                 max_length=max_length or template.canvas_width,
                                 conditioning=ReasoningConditioning(template, questions, answers), options=options,
                                 generator=generator, device=device)


@torch.no_grad()
def answer_log_probability(
    kind: str,
    model: nn.Module,
    template: ReasoningTemplate,
    unmasking_schedule: Schedule,
    questions: Sequence[Sequence[int]],
    reasonings: Sequence[Sequence[int]],
    answers: Sequence[Sequence[int]],
    *,
    t: float | None = None,
) -> Tensor:
    """``[B]`` log p(answer | question, partial reasoning) under the model.

    The state holds the question, the (partial) reasoning as clean tokens and the answer
    region masked: for MDM the rest of the reasoning region is MASK and the answer region is
    scored with its PAD filler; for FlexMDM the answer region holds exactly ``len(answer)``
    masks. The answer's slots are revealed left to right, one network call each, and the
    log-probabilities (MASK and, for FlexMDM, PAD excluded) are summed: the chain rule, so
    the result is a proper log-probability of the whole answer given the partial trace.

    Args:
        t: the time given to the network; default β⁻¹(fraction of the generated slots that
            are clean).
    """
    if not len(questions) == len(reasonings) == len(answers):
        raise ValueError(f"{len(questions)} questions, {len(reasonings)} reasonings, {len(answers)} answers")
    model_family = family(kind)
    if not model_family.generates:
        raise ValueError(f"kind must be 'flexmdm' or 'mdm', got {kind!r}")
    state = _flexmdm_answer_state if model_family.inserts else _mdm_answer_state
    canvas, targets, frozen, lengths, region, forbid = state(template, questions, reasonings, answers)
    vocab = template.vocab
    generated = (~frozen) & (torch.arange(canvas.shape[1])[None, :] < lengths[:, None])
    if t is None:
        clean = (generated & (canvas != vocab.mask_id)).sum(dim=1) / generated.sum(dim=1).clamp(min=1)
        times = unmasking_schedule.inverse(clean.float())
    else:
        times = torch.full((len(questions),), float(t))
    total = torch.zeros(len(questions), dtype=torch.float64)
    remaining = region.clone()
    while bool(remaining.any()):
        out = model(canvas, times, lengths, frozen)
        logits = (out[0] if isinstance(out, tuple) else out).float().clone()
        logits[..., forbid] = float("-inf")
        log_probs = torch.log_softmax(logits, dim=-1)
        first = torch.where(remaining, torch.arange(canvas.shape[1])[None, :], canvas.shape[1]).min(dim=1).values
        live = first < canvas.shape[1]
        slot = first.clamp(max=canvas.shape[1] - 1)
        rows = torch.arange(len(questions))
        target = targets[rows, slot]
        total += torch.where(live, log_probs[rows, slot, target].double(), 0.0)
        canvas[rows[live], slot[live]] = target[live]
        remaining[rows[live], slot[live]] = False
    return total


AnswerState = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, list[int]]
"""``(canvas [B, n], targets [B, n], frozen [B, n], lengths [B], answer region [B, n], forbidden ids)``."""


def _mdm_answer_state(template: ReasoningTemplate, questions: Sequence[Sequence[int]],
                      reasonings: Sequence[Sequence[int]], answers: Sequence[Sequence[int]]) -> AnswerState:
    """The MDM canvas: the rest of the reasoning region MASK, the answer region scored with its PAD filler."""
    vocab = template.vocab
    _, _, a_open, a_close = template.delimiter_ids
    canvas, frozen = template.mdm_canvas(questions)
    start = torch.tensor([len(q) + 1 for q in questions])
    targets = canvas.clone()
    for b, (reasoning, answer) in enumerate(zip(reasonings, answers)):
        if len(reasoning) > template.reasoning_width or len(answer) > template.answer_width:
            raise ValueError(f"row {b}: the reasoning or the answer exceeds its region")
        s = int(start[b])
        canvas[b, s : s + len(reasoning)] = torch.tensor(list(reasoning), dtype=torch.long)  # clean, not frozen
    region = answer_region(canvas, a_open, a_close)
    padded = [list(a) + [vocab.pad_id] * (template.answer_width - len(a)) for a in answers]
    targets[region] = torch.tensor([tok for row in padded for tok in row], dtype=torch.long)
    lengths = torch.full((len(questions),), canvas.shape[1])
    forbid = [vocab.mask_id]
    return canvas, targets, frozen, lengths, region, forbid


def _flexmdm_answer_state(template: ReasoningTemplate, questions: Sequence[Sequence[int]],
                          reasonings: Sequence[Sequence[int]], answers: Sequence[Sequence[int]]) -> AnswerState:
    """The FlexMDM state: the answer region holds exactly ``len(answer)`` masks."""
    vocab = template.vocab
    r_open, r_close, a_open, a_close = template.delimiter_ids
    rows, flags = [], []
    for question, reasoning, answer in zip(questions, reasonings, answers):
        rows.append([*question, r_open, *reasoning, r_close, a_open, *answer, a_close])
        flags.append([True] * (len(question) + 1) + [False] * len(reasoning) + [True, True]
                     + [False] * len(answer) + [True])
    width = max(len(r) for r in rows)
    targets = torch.full((len(rows), width), vocab.pad_id, dtype=torch.long)
    frozen = torch.zeros(len(rows), width, dtype=torch.bool)
    for b, (row, flag) in enumerate(zip(rows, flags)):
        targets[b, : len(row)] = torch.tensor(row)
        frozen[b, : len(row)] = torch.tensor(flag)
    lengths = torch.tensor([len(r) for r in rows])
    region = answer_region(targets, a_open, a_close)
    canvas = torch.where(region, vocab.mask_id, targets)
    forbid = [vocab.mask_id, vocab.pad_id]
    return canvas, targets, frozen, lengths, region, forbid


def infilling_scores(
    kind: str,
    model: nn.Module,
    template: ReasoningTemplate,
    schedules: dict[str, Schedule],
    data: EncodedProblems,
    *,
    steps: int,
    insertion: Insertion | None,
    prefix_fractions: Sequence[float],
    seed: int,
) -> dict[str, Any]:
    """Reasoning as infilling on ``data``, decoded at temperature 0.

    Returns:
        ``answer_unchanged`` and ``gold_reasoning``: shares of the posterior samples (MED λ = 0.2,
        the answers frozen) that keep the gold answer (always, by construction) and whose
        reasoning is the gold one; their ``mean_nfe``; ``mean_log_p_gold_answer_by_prefix``:
        mean log p(gold answer | question, the first fraction of the gold reasoning), by fraction.
    """
    out = generate(kind, model, template, schedules, data.questions, answers=data.answers, rule=EntropyBounded(0.2),
                   steps=steps, insertion=insertion, generator=torch.Generator().manual_seed(seed))
    kept = gold = 0
    for row, seq in enumerate(out.sequences()):
        decoded = template.decode(seq, out.frozen[row, : len(seq)].tolist())
        kept += decoded.answer == "".join(template.symbols[i] for i in data.answers[row])
        gold += decoded.reasoning == template.text(data.reasonings[row])
    scores = {}
    for fraction in prefix_fractions:
        prefixes = [r[: round(fraction * len(r))] for r in data.reasonings]
        logp = answer_log_probability(kind, model, template, schedules["unmasking"], data.questions, prefixes,
                                      data.answers)
        scores[str(fraction)] = float(logp.mean())
    return {"n": len(data), "answer_unchanged": kept / len(data), "gold_reasoning": gold / len(data),
            "mean_nfe": float(out.nfe.float().mean()), "mean_log_p_gold_answer_by_prefix": scores}
