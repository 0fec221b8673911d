"""Networks run through ``torch.compile``, with an eager fallback: :class:`CompiledNetwork`.

The network is compiled whole with ``dynamic=True``: FlexMDM states, packed or cropped, change
shape at every call, and dynamic shapes keep that from recompiling at every new width or number
of packed tokens. The host-side parts — the packed layout (:class:`flexmdm.models.packing.Packing`
is built eagerly), the length checks — split the forward pass into a few graphs; the blocks, the
heads and their backward pass are compiled. The first calls compile (seconds to a minute, less
when inductor's on-disk cache holds the graphs), later ones reuse the graphs. Outputs and
gradients are the eager ones up to float rounding; dropout draws from inductor's own random
stream, deterministic given the seed but not the eager draws.

If compiling fails (no C++ compiler for inductor on CPU, a backend error), one line is written to
stderr and the network runs eagerly from then on.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch import nn

__all__ = ["CompiledNetwork"]


class CompiledNetwork(nn.Module):
    """``network`` called through ``torch.compile(dynamic=True)``, eagerly if compiling fails.

    Its parameters, buffers and state dict are those of ``network`` (under ``network.``); other
    attributes (``no_sync``, ``config``) are looked up on ``network``.

    Attributes:
        network: the eager network.
        compiled: True until a compilation fails.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.compiled = True
        # kept out of the submodules, so that the parameters and the state dict are registered once
        object.__setattr__(self, "_compiled", torch.compile(network, dynamic=True))

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.compiled:
            try:
                return self._compiled(*args, **kwargs)
            except torch._dynamo.exc.TorchDynamoException as error:
                self.compiled = False
                cause = getattr(error, "inner_exception", None) or error  # what the backend raised
                reason = type(cause).__name__ + "".join(f": {line}" for line in str(cause).splitlines()[:1])
                print(f"flexmdm: torch.compile failed, running eagerly ({reason})", file=sys.stderr)
        return self.network(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["network"], name)
