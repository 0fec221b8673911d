"""Interpolants: how a clean sequence x1 is corrupted into the state x_t.

FlexMDM (paper eq. 6): every non-frozen token of x1 independently gets an insertion time
T1 ~ α'(t) dt and an unmasking time T2 >= T1 with density β'(t) / (1 - β(T1)) on [T1, 1]. At time
t it is absent if t < T1, MASK if T1 <= t < T2 and clean otherwise; x_t is the left-packed
concatenation of the present tokens. Frozen tokens are always present and clean.

MDM (eq. 4): a fixed canvas; every non-frozen position is MASK with probability 1 - β(t).
PAD (the filler after a sequence's end) is an ordinary target there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from flexmdm.constraints import allowed_gaps, gap_regions
from flexmdm.schedules import Schedule
from flexmdm.vocab import Vocab

__all__ = ["FlexBatch", "FlexInterpolant", "MDMBatch", "MDMInterpolant", "typical_time"]

_TIME_GRID = 1024


@dataclass
class FlexBatch:
    """A batch of FlexMDM states x_t with everything the loss needs.

    Attributes:
        tokens: ``[B, n]`` x_t, left-packed, PAD after ``lengths``; n = longest x_t.
        lengths: ``[B]`` len(x_t).
        t: ``[B]`` times.
        source_index: ``[B, n]`` index in x1 of every present token (-1 at padding).
        masked: ``[B, n]`` bool, True where x_t holds MASK.
        targets: ``[B, n]`` the clean token x1[s] at every slot (PAD at padding).
        frozen: ``[B, n]`` bool, frozen tokens.
        gaps: ``[B, n + 1]`` tokens still to insert before slot i (slot ``lengths`` is the
            tail); 0 where the slot does not exist.
        gap_allowed: ``[B, n + 1]`` bool, slot exists and its region allows insertion.
        data_lengths: ``[B]`` len(x1).
    """

    tokens: Tensor
    lengths: Tensor
    t: Tensor
    source_index: Tensor
    masked: Tensor
    targets: Tensor
    frozen: Tensor
    gaps: Tensor
    gap_allowed: Tensor
    data_lengths: Tensor

    def split_by_length(self, parts: int) -> list[FlexBatch]:
        """The batch sorted by ``len(x_t)`` and cut into ``parts`` sub-batches (fewer when the
        batch is smaller), each cropped to its own longest state: the same states with less
        padding. Sequences keep their per-sequence values; which sub-batch holds which sequence
        is the only change.
        """
        if parts < 1:
            raise ValueError(f"parts must be >= 1, got {parts}")
        order = torch.argsort(self.lengths, stable=True)
        pieces = []
        for index in torch.tensor_split(order, min(parts, max(len(order), 1))):
            width = int(self.lengths[index].max()) if len(index) else 0
            pieces.append(FlexBatch(
                tokens=self.tokens[index, :width],
                lengths=self.lengths[index],
                t=self.t[index],
                source_index=self.source_index[index, :width],
                masked=self.masked[index, :width],
                targets=self.targets[index, :width],
                frozen=self.frozen[index, :width],
                gaps=self.gaps[index, :width + 1],
                gap_allowed=self.gap_allowed[index, :width + 1],
                data_lengths=self.data_lengths[index],
            ))
        return pieces


def _check_batch(x1: Tensor, lengths: Tensor, t: Tensor, frozen: Tensor | None) -> Tensor:
    if x1.dim() != 2:
        raise ValueError(f"x1 must be [B, L], got shape {list(x1.shape)}")
    batch, width = x1.shape
    if lengths.shape != (batch,) or t.shape != (batch,):
        raise ValueError(
            f"lengths and t must have shape [{batch}], got {list(lengths.shape)} and {list(t.shape)}"
        )
    if bool(((lengths < 0) | (lengths > width)).any()):
        raise ValueError(f"lengths must lie in [0, {width}]")
    if frozen is not None and frozen.shape != x1.shape:
        raise ValueError(f"frozen must have the shape of x1 {list(x1.shape)}, got {list(frozen.shape)}")
    return torch.arange(width, device=x1.device)[None, :] < lengths[:, None]


class FlexInterpolant:
    """The joint insertion/unmasking interpolant of FlexMDM.

    Args:
        insertion_schedule: α.
        unmasking_schedule: β.
        vocab: special-token ids.
    """

    def __init__(self, insertion_schedule: Schedule, unmasking_schedule: Schedule, vocab: Vocab):
        self.insertion_schedule = insertion_schedule
        self.unmasking_schedule = unmasking_schedule
        self.vocab = vocab

    def sample(
        self,
        x1: Tensor,
        lengths: Tensor,
        t: Tensor,
        *,
        frozen: Tensor | None = None,
        allowed_regions: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> FlexBatch:
        """Draw x_t for every sequence of a padded batch.

        Args:
            x1: ``[B, L]`` clean sequences, PAD after ``lengths``.
            lengths: ``[B]`` len(x1).
            t: ``[B]`` times in [0, 1].
            frozen: ``[B, L]`` bool, tokens that are always present and clean.
            allowed_regions: ``[B, R]`` bool, regions that may receive insertions (see
                :mod:`flexmdm.constraints`); None allows every region.
            generator: random stream.

        Raises:
            ValueError: malformed shapes, or a non-frozen token in a region where insertion is
                not allowed (the model could never generate it).
        """
        valid = _check_batch(x1, lengths, t, frozen)
        frozen = torch.zeros_like(valid) if frozen is None else frozen.bool() & valid
        if allowed_regions is not None:
            token_region = gap_regions(frozen)[:, :-1].clamp(max=allowed_regions.shape[1] - 1)
            token_allowed = torch.gather(allowed_regions.bool(), 1, token_region)
            if bool((valid & ~frozen & ~token_allowed).any()):
                raise ValueError("a non-frozen token lies in a region where insertion is not allowed")

        u_insert = torch.rand(x1.shape, generator=generator, device=x1.device)
        u_unmask = torch.rand(x1.shape, generator=generator, device=x1.device)
        insert_time = self.insertion_schedule.sample(u_insert)
        unmask_time = self.unmasking_schedule.sample_after(insert_time, u_unmask)
        now = t[:, None]
        present = valid & (frozen | (now >= insert_time))
        masked_full = present & ~frozen & (now < unmask_time)

        state_lengths = present.sum(dim=1)
        width = int(state_lengths.max()) if x1.shape[0] else 0
        # Left-pack: present token j goes to slot (#present before j); absent ones to a dump column.
        slot = torch.where(present, torch.cumsum(present.long(), dim=1) - 1, width)
        source = torch.arange(x1.shape[1], device=x1.device).expand_as(x1)

        def pack(values: Tensor, fill: int | bool) -> Tensor:
            out = torch.full((x1.shape[0], width + 1), fill, dtype=values.dtype, device=x1.device)
            return out.scatter_(1, slot, values)[:, :width]

        source_index = pack(source, -1)
        targets = pack(x1, self.vocab.pad_id)
        masked = pack(masked_full, False)
        state_frozen = pack(frozen, False)
        tokens = torch.where(masked, self.vocab.mask_id, targets)

        # gap i = s[i] - s[i-1] - 1 with s[-1] = -1 and s[len] = len(x1).
        slots = torch.arange(width + 1, device=x1.device)
        right = torch.cat([source_index, source_index.new_zeros(x1.shape[0], 1)], dim=1)
        right = torch.where(slots[None, :] >= state_lengths[:, None], lengths[:, None], right)
        left = torch.cat([source_index.new_full((x1.shape[0], 1), -1), right[:, :-1]], dim=1)
        exists = slots[None, :] <= state_lengths[:, None]
        gaps = torch.where(exists, right - left - 1, 0)

        return FlexBatch(
            tokens=tokens,
            lengths=state_lengths,
            t=t,
            source_index=source_index,
            masked=masked,
            targets=targets,
            frozen=state_frozen,
            gaps=gaps,
            gap_allowed=allowed_gaps(state_frozen, state_lengths, allowed_regions),
            data_lengths=lengths,
        )


def typical_time(masks: Tensor, clean: Tensor, insertion_schedule: Schedule, unmasking_schedule: Schedule) -> Tensor:
    """``[B]`` the time at which a state holding all of x1 — ``masks`` MASK and ``clean`` clean
    non-frozen tokens, nothing left to insert — is most likely under the interpolant.

    Each token of x1 is MASK at t with probability m(t) = P(T1 <= t < T2) = ∫_0^t α'(u)
    (1 − β(t)) / (1 − β(u)) du and clean with c(t) = α(t) − m(t); the answer maximises
    ``masks`` · log m(t) + ``clean`` · log c(t) over a grid of times in (0, 1). For linear α = β,
    m(t) = −(1 − t) log(1 − t): an all-MASK state is most likely at t = 1 − 1/e.

    Args:
        masks: ``[B]`` MASK count.
        clean: ``[B]`` clean (non-frozen) count.
    """
    u = (torch.arange(_TIME_GRID, dtype=torch.float64, device=masks.device) + 0.5) / _TIME_GRID
    unmasking_survival = unmasking_schedule.survival(u)
    density = insertion_schedule.derivative(u) / unmasking_survival
    # cumulative midpoint rule: ∫_0^t α'(u) / (1 − β(u)) du at every grid time
    integral = torch.cumsum(density, 0) / _TIME_GRID - 0.5 * density / _TIME_GRID
    masked = (unmasking_survival * integral).clamp(min=1e-300)
    revealed = (insertion_schedule.value(u) - masked).clamp(min=1e-300)
    score = masks.double()[:, None] * masked.log() + clean.double()[:, None] * revealed.log()
    return u[score.argmax(dim=1)]


@dataclass
class MDMBatch:
    """A batch of MDM states on a fixed canvas.

    Attributes:
        tokens: ``[B, L]`` x_t (MASK where masked).
        t: ``[B]`` times.
        masked: ``[B, L]`` bool.
        targets: ``[B, L]`` clean canvas, PAD included.
        frozen: ``[B, L]`` bool.
    """

    tokens: Tensor
    t: Tensor
    masked: Tensor
    targets: Tensor
    frozen: Tensor

    @property
    def lengths(self) -> Tensor:
        """``[B]`` canvas length (every position is live for MDM)."""
        return torch.full_like(self.t, self.tokens.shape[1], dtype=torch.long)


class MDMInterpolant:
    """The masking interpolant of a fixed-length masked diffusion model.

    Args:
        unmasking_schedule: β; a position is clean at time t with probability β(t).
        vocab: special-token ids.
    """

    def __init__(self, unmasking_schedule: Schedule, vocab: Vocab):
        self.unmasking_schedule = unmasking_schedule
        self.vocab = vocab

    def sample(
        self,
        canvas: Tensor,
        t: Tensor,
        *,
        frozen: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> MDMBatch:
        """Mask a batch of canvases.

        Args:
            canvas: ``[B, L]`` clean sequences padded with PAD to the canvas length.
            t: ``[B]`` times.
            frozen: ``[B, L]`` bool, never masked (e.g. the prompt).
            generator: random stream.
        """
        full = torch.full((canvas.shape[0],), canvas.shape[1], dtype=torch.long, device=canvas.device)
        _check_batch(canvas, full, t, frozen)
        frozen = torch.zeros_like(canvas, dtype=torch.bool) if frozen is None else frozen.bool()
        u = torch.rand(canvas.shape, generator=generator, device=canvas.device)
        masked = (u >= self.unmasking_schedule.value(t)[:, None]) & ~frozen
        tokens = torch.where(masked, self.vocab.mask_id, canvas)
        return MDMBatch(tokens=tokens, t=t, masked=masked, targets=canvas, frozen=frozen)
