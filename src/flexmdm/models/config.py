"""Architecture hyper-parameters of every network, as one plain dataclass."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from flexmdm.families import FAMILIES, family
from flexmdm.vocab import Vocab

__all__ = ["ModelConfig", "MODEL_KINDS", "ARCHITECTURES"]

MODEL_KINDS = tuple(FAMILIES)
ARCHITECTURES = ("dit", "llada")


@dataclass
class ModelConfig:
    """What a network is; saved with its weights.

    Attributes:
        kind: "flexmdm" (token and gap heads), "mdm" (token head) or "autoregressive".
        vocab_size: number of token ids, special ones included.
        mask_id: the MASK id (never predicted).
        pad_id: the PAD id (predicted by MDM only; the end-of-sequence target of the causal LM).
        d_model: width of the residual stream.
        n_layers: transformer blocks.
        n_heads: attention heads (``d_model`` must divide evenly).
        mlp_ratio: hidden width of the MLP over ``d_model``.
        max_length: longest sequence the model is meant for (the MDM canvas, the sampling cap).
        dropout: dropout on attention outputs and MLPs during training.
        rope_theta: base of the rotary position frequencies.
        time_scale: t is multiplied by this before its sinusoidal features.
        architecture: "dit" (:mod:`flexmdm.models.dit`) or "llada" (the LLaMA-style LLaDA
            backbone of :mod:`flexmdm.models.llada`; FlexMDM kind adds
            :class:`flexmdm.models.retrofit.LLaDAFlexMDM`'s time conditioning and gap head).
        n_kv_heads: key/value heads of the "llada" architecture (None: ``n_heads``, no GQA).
        time_groups: "llada" FlexMDM only: consecutive blocks sharing one adaLN parameter set.
        time_rank: "llada" FlexMDM only: 0 gives each group of blocks a ``d → 6d`` modulation
            layer (6d² + 6d parameters); r >= 1 a low-rank ``d → r → 6d`` one (7dr + 6d).
        gap_hidden: "llada" FlexMDM only: hidden width of the gap head's MLP (0: ``d_model``);
            its first layer has ``(3d + 3) · gap_hidden`` weights.
        length_conditioning: "dit" FlexMDM only: a learned embedding of the state length n is
            added to the time conditioning of every block. Rotary positions give the trunk only
            relative offsets, so without it the gap head must infer n through attention; how much
            is left to insert depends on n.
        count_cap: "dit" FlexMDM only: 0 for none, else C >= 1 adds a count head that predicts
            each gap's remaining count as a categorical over 0 … C (C meaning "C or more"),
            trained by cross-entropy on the interpolant's exact gap counts beside the Poisson
            head. Samplers use it to insert counts consistent with the posterior
            (:class:`~flexmdm.sampling.Insertion`).
    """

    kind: str
    vocab_size: int
    mask_id: int
    pad_id: int
    d_model: int = 256
    n_layers: int = 6
    n_heads: int = 4
    mlp_ratio: float = 4.0
    max_length: int = 1024
    dropout: float = 0.0
    rope_theta: float = 10000.0
    time_scale: float = 1000.0
    architecture: str = "dit"
    n_kv_heads: int | None = None
    time_groups: int = 2
    time_rank: int = 0
    gap_hidden: int = 0
    length_conditioning: bool = False
    count_cap: int = 0

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"kind must be one of {list(MODEL_KINDS)}, got {self.kind!r}")
        for name in ("d_model", "n_layers", "n_heads", "max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ValueError(f"d_model={self.d_model} must split into {self.n_heads} heads of even width")
        if self.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be > 0, got {self.mlp_ratio}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")
        if self.rope_theta <= 0 or self.time_scale <= 0:
            raise ValueError("rope_theta and time_scale must be > 0")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {list(ARCHITECTURES)}, got {self.architecture!r}")
        if self.n_kv_heads is not None and (self.n_kv_heads < 1 or self.n_heads % self.n_kv_heads):
            raise ValueError(f"n_kv_heads={self.n_kv_heads} must be >= 1 and divide n_heads={self.n_heads}")
        if self.time_groups < 1:
            raise ValueError(f"time_groups must be >= 1, got {self.time_groups}")
        inserts = family(self.kind).inserts
        for name in ("time_rank", "gap_hidden"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
            if getattr(self, name) and (not inserts or self.architecture != "llada"):
                raise ValueError(f"{name} is for the 'llada' FlexMDM only")
        if self.length_conditioning and (not inserts or self.architecture != "dit"):
            raise ValueError("length_conditioning is for the 'dit' FlexMDM only")
        if self.count_cap < 0:
            raise ValueError(f"count_cap must be >= 0, got {self.count_cap}")
        if self.count_cap and (not inserts or self.architecture != "dit"):
            raise ValueError("count_cap (a count head) is for the 'dit' FlexMDM only")
        Vocab(self.vocab_size, self.mask_id, self.pad_id)  # validates the ids

    @property
    def vocab(self) -> Vocab:
        return Vocab(self.vocab_size, self.mask_id, self.pad_id)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        """Build from a dict, rejecting keys that are not fields (the message names them)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown model config keys {unknown}; valid keys: {sorted(known)}")
        return cls(**values)
