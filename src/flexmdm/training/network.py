"""The network of a training configuration: built fresh, or retrofitted from a base checkpoint.

Without a ``retrofit`` or ``init`` section the network is :func:`flexmdm.models.build_model` of
``model``, initialised from the global RNG (the trainer seeds it with ``train.seed``). With ``init``
it is the base checkpoint itself, in float32, every weight trainable. With ``retrofit``, the base
checkpoint is loaded in ``retrofit.base_dtype`` (float32 or bfloat16) and
:func:`flexmdm.models.retrofit.retrofit` adds the FlexMDM modules and LoRA adapters, seeded with
``train.seed`` (or loaded from ``retrofit.adapters_from``); only those are trainable, always in
float32.

The retrofit recipe as configuration mappings: :func:`retrofit_run_config` turns a from-scratch
FlexMDM run into the run that retrofits a base checkpoint instead, with the same data, training and
schedules, and :func:`scratch_model_like` gives a from-scratch FlexMDM the time conditioning and gap
head that a retrofit adds (:data:`RETROFIT_MODULE_OPTIONS`), so that the two compare like for like.

``meta=True`` builds the same module tree on the meta device — shapes and ``requires_grad``
flags, no storage, no weights read (a retrofit reads only the base's ``config.json``) — for
:mod:`flexmdm.planner`.
"""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flexmdm.models import build_model
from flexmdm.models.llada import LLaDAModel, load_llada, read_llada_config
from flexmdm.models.retrofit import load_adapters, retrofit
from flexmdm.training.config import Config, ConfigError

__all__ = ["RETROFIT_MODULE_OPTIONS", "build_network", "retrofit_run_config", "scratch_model_like"]

RETROFIT_MODULE_OPTIONS = ("time_groups", "time_rank", "gap_hidden")
"""Options of a ``retrofit`` section that are also ``model`` options: the new modules' shapes."""


def retrofit_run_config(scratch: dict[str, Any], base: str | Path, adapters: dict[str, Any]) -> dict[str, Any]:
    """The ``config_from_dict`` mapping that retrofits the LLaDA checkpoint ``base`` with ``adapters`` (the
    ``retrofit`` section's other options) and trains it as the from-scratch FlexMDM run ``scratch`` would: the
    same data, training and schedules; the network's ``model`` section is the base's."""
    config = copy.deepcopy(scratch)
    del config["model"]
    config["retrofit"] = {"base": str(base), **adapters}
    return config


def scratch_model_like(model: dict[str, Any], adapters: dict[str, Any]) -> dict[str, Any]:
    """The ``model`` section of a from-scratch FlexMDM: its ``model`` section with the shapes of the modules
    that a retrofit with ``adapters`` adds (its :data:`RETROFIT_MODULE_OPTIONS`)."""
    return {**model, **{key: adapters[key] for key in RETROFIT_MODULE_OPTIONS if key in adapters}}


def build_network(config: Config, *, meta: bool = False) -> nn.Module:
    """The network that :func:`flexmdm.training.train` trains for ``config``.

    Args:
        config: a resolved configuration.
        meta: build on the meta device, without weights.

    Raises:
        ConfigError: the base checkpoint disagrees with ``retrofit.base_config``.
    """
    device = torch.device("meta") if meta else contextlib.nullcontext()
    if config.init is not None and not meta:
        return load_llada(config.init.base, dtype=torch.float32)
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
    if section.adapters_from is not None and not meta:
        load_adapters(network, section.adapters_from)
    for parameter in network.parameters():  # adapters made in the base's dtype train in float32
        if parameter.requires_grad:
            parameter.data = parameter.data.float()
    return network
