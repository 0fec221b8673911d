"""flexmdm: flexible-length masked diffusion (FlexMDM) in PyTorch.

``from flexmdm import Pipeline`` loads a trained model and generates with it (see
:mod:`flexmdm.pipeline`); the layers beneath follow the paper: :mod:`~flexmdm.schedules`,
:mod:`~flexmdm.interpolant`, :mod:`~flexmdm.losses`, :mod:`~flexmdm.models`,
:mod:`~flexmdm.sampling`, :mod:`~flexmdm.tasks`, :mod:`~flexmdm.training`.
``flexmdm.__version__`` is the installed distribution's version (``pyproject.toml``'s).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("flexmdm")
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"

__all__ = ["Pipeline", "Generation", "SamplingOptions", "__version__"]

_LAZY = {"Pipeline": "flexmdm.pipeline", "Generation": "flexmdm.pipeline", "SamplingOptions": "flexmdm.families"}


def __getattr__(name: str) -> Any:
    """Import the pipeline (and torch) on first use, so that ``flexmdm --help`` stays fast."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'flexmdm' has no attribute {name!r}")
