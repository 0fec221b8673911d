"""Samplers: FlexMDM (insert + unmask) and the fixed-length MDM baseline."""

from flexmdm.sampling.flexmdm import FlexDenoiser, SampleOutput, sample_flexmdm
from flexmdm.sampling.insertion import Insertion
from flexmdm.sampling.mdm import MDMDenoiser, mdm_canvas, sample_mdm
from flexmdm.sampling.trace import Trace, TraceEvent
from flexmdm.sampling.unmasking import (
    SCORES,
    Adaptive,
    ConfidenceThreshold,
    EntropyBounded,
    EntropySum,
    SemiAutoregressive,
    TauLeaping,
    UnmaskingRule,
)

__all__ = [
    "FlexDenoiser",
    "MDMDenoiser",
    "SampleOutput",
    "sample_flexmdm",
    "Insertion",
    "sample_mdm",
    "mdm_canvas",
    "Trace",
    "TraceEvent",
    "UnmaskingRule",
    "TauLeaping",
    "Adaptive",
    "EntropyBounded",
    "EntropySum",
    "ConfidenceThreshold",
    "SemiAutoregressive",
    "SCORES",
]
