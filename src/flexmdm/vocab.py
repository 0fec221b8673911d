"""Special-token conventions shared by interpolants, models and samplers."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Vocab"]


@dataclass(frozen=True)
class Vocab:
    """Token ids: ``size`` counts every id, special ones included.

    Attributes:
        size: number of token ids (the width of the token logits).
        mask_id: the MASK token (inserted by FlexMDM, never a prediction target).
        pad_id: padding after a sequence's end; a prediction target only for MDM.
    """

    size: int
    mask_id: int
    pad_id: int

    def __post_init__(self) -> None:
        if self.size < 3:
            raise ValueError(f"a vocabulary needs at least 3 ids (one real, MASK, PAD), got {self.size}")
        for name in ("mask_id", "pad_id"):
            value = getattr(self, name)
            if not 0 <= value < self.size:
                raise ValueError(f"{name}={value} outside [0, {self.size})")
        if self.mask_id == self.pad_id:
            raise ValueError("mask_id and pad_id must differ")

    def to_config(self) -> dict[str, Any]:
        return asdict(self)
