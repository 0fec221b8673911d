"""The network of a training configuration: built fresh, or retrofitted from a base checkpoint.

Without a ``retrofit`` section the network is :func:`flexmdm.models.build_model` of ``model``,
initialised from the global RNG (the trainer seeds it with ``train.seed``). With one, the base
checkpoint is loaded in ``retrofit.base_dtype`` (float32 or bfloat16) and
:func:`flexmdm.models.retrofit.retrofit` adds the FlexMDM modules and LoRA adapters, seeded with
``train.seed``; only those are trainable, always in float32.

``meta=True`` builds the same module tree on the meta device — shapes and ``requires_grad``
flags, no storage, no weights read (a retrofit reads only the base's ``config.json``) — for
:mod:`flexmdm.planner`.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from flexmdm.models import build_model
from flexmdm.models.llada import LLaDAModel, load_llada, read_llada_config
from flexmdm.models.retrofit import retrofit
from flexmdm.training.config import Config, ConfigError

__all__ = ["build_network"]


def build_network(config: Config, *, meta: bool = False) -> nn.Module:
    """The network that :func:`flexmdm.training.train` trains for ``config``.

    Args:
        config: a resolved configuration.
        meta: build on the meta device, without weights.

    Raises:
        ConfigError: the base checkpoint disagrees with ``retrofit.base_config``.
    """
    device = torch.device("meta") if meta else contextlib.nullcontext()
    section = config.retrofit
    if section is None:
        with device:
            return build_model(config.model)
    if meta:
        with device:
            base = LLaDAModel(section.llada_config())
    else:
        base = load_llada(section.base, dtype=getattr(torch, section.base_dtype))
        if section.base_config and base.llada_config != read_llada_config(section.base_config):
            raise ConfigError(f"retrofit.base_config: {section.base_config} does not describe the checkpoint "
                              f"{section.base} ({base.llada_config})")
    with device:
        network = retrofit(base, section.adapters, seed=config.train.seed)
    for parameter in network.parameters():  # adapters made in the base's dtype train in float32
        if parameter.requires_grad:
            parameter.data = parameter.data.float()
    return network
