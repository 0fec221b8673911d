"""Saving and loading networks in the Hugging Face layout: ``model.safetensors`` + ``config.json``.

``config.json`` holds ``{"model": <ModelConfig>, "flexmdm_version": ..., **metadata}``; the
metadata carries what samplers need besides the weights (schedules, vocabulary, task), so users
never re-type them. Tokenizer files, when given, are copied beside. Writes are atomic: the
checkpoint is assembled in a temporary sibling directory and renamed into place.
"""

from __future__ import annotations

import json
import shutil
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn

from flexmdm.atomic import atomic_directory
from flexmdm.models.autoregressive import AutoregressiveLM
from flexmdm.models.config import ModelConfig
from flexmdm.models.dit import FlexMDMModel, MDMModel

__all__ = ["build_model", "save_pretrained", "load_pretrained", "WEIGHTS_NAME", "CONFIG_NAME"]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
_CLASSES = {"flexmdm": FlexMDMModel, "mdm": MDMModel, "autoregressive": AutoregressiveLM}


def build_model(config: ModelConfig) -> nn.Module:
    """A freshly initialised network of ``config.kind`` and ``config.architecture``."""
    if config.architecture == "llada":
        from flexmdm.models.retrofit import build_llada_model  # imports this module

        return build_llada_model(config)
    return _CLASSES[config.kind](config)


def _package_version() -> str:
    try:
        return version("flexmdm")
    except PackageNotFoundError:
        return "unknown"


def save_pretrained(
    model: nn.Module,
    directory: str | Path,
    *,
    metadata: dict[str, Any] | None = None,
    tokenizer_dir: str | Path | None = None,
) -> Path:
    """Write ``model`` (which has a ``config: ModelConfig``) to ``directory`` atomically.

    A retrofitted network (LoRA adapters from :func:`flexmdm.models.retrofit.retrofit`) is written
    with its adapters merged (:func:`~flexmdm.models.retrofit.merged_state_dict`), so that
    :func:`load_pretrained` reads it as the plain FlexMDM of its architecture.
    """
    directory = Path(directory)
    state = model.state_dict()
    if any(".lora_" in name for name in state):
        from flexmdm.models.retrofit import merged_state_dict

        state = merged_state_dict(model)
    with atomic_directory(directory) as staging:
        tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in state.items()}
        save_file(tensors, staging / WEIGHTS_NAME)
        config = {"model": model.config.to_dict(), "flexmdm_version": _package_version(), **(metadata or {})}
        (staging / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
        if tokenizer_dir is not None:
            for file in Path(tokenizer_dir).iterdir():
                if file.is_file():
                    shutil.copy2(file, staging / file.name)
    return directory


def load_pretrained(directory: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """``(model in eval mode, the whole config.json)`` from a :func:`save_pretrained` directory."""
    directory = Path(directory)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory} is not a flexmdm checkpoint: {name} is missing")
    config = json.loads((directory / CONFIG_NAME).read_text())
    if "model" not in config:
        raise ValueError(f"{directory / CONFIG_NAME} has no 'model' section")
    model = build_model(ModelConfig.from_dict(config["model"]))
    model.load_state_dict(load_file(directory / WEIGHTS_NAME))
    return model.eval(), config
