"""Saving and loading networks in the Hugging Face layout: ``model.safetensors`` + ``config.json``.

``config.json`` holds ``{"model": <ModelConfig>, "flexmdm_version": ..., **metadata,
"weights_sha256": ...}``; the metadata carries what samplers need besides the weights (schedules,
vocabulary, task), so users never re-type them, and the checksum of ``model.safetensors`` lets
:func:`load_pretrained` refuse damaged weights (flipped bits load silently otherwise). Tokenizer files, when given, are copied beside. Writes are atomic: the
checkpoint is assembled in a temporary sibling directory and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from flexmdm.atomic import atomic_directory
from flexmdm.errors import InputFileError
from flexmdm.families import family
from flexmdm.models.config import ModelConfig

__all__ = [
    "CHECKSUM_KEY",
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "build_model",
    "load_pretrained",
    "save_pretrained",
    "verify_pretrained",
    "weights_digest",
]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
TOKENIZER_NAME = "tokenizer.json"
CHECKSUM_KEY = "weights_sha256"
"""The ``config.json`` entry holding the SHA-256 of ``model.safetensors`` (checked at load)."""


def build_model(config: ModelConfig) -> nn.Module:
    """A freshly initialised network of ``config.kind`` and ``config.architecture``."""
    if config.architecture == "llada":
        from flexmdm.models.retrofit import build_llada_model  # imports this module

        return build_llada_model(config)
    return family(config.kind).network(config)


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
        config = {"model": model.config.to_dict(), "flexmdm_version": _package_version(), **(metadata or {}),
                  CHECKSUM_KEY: weights_digest(staging / WEIGHTS_NAME)}
        (staging / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
        if tokenizer_dir is not None:
            for file in Path(tokenizer_dir).iterdir():
                if file.is_file():
                    shutil.copy2(file, staging / file.name)
    return directory


def weights_digest(path: str | Path) -> str:
    """The SHA-256 of the file ``path`` (hex), read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_config(directory: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a :func:`save_pretrained` directory.

    Raises:
        FileNotFoundError: ``config.json`` or ``model.safetensors`` is missing.
        InputFileError: ``config.json`` is not a JSON object with a ``model`` section.
    """
    directory = Path(directory)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory} is not a flexmdm checkpoint: {name} is missing")
    path = directory / CONFIG_NAME
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputFileError(f"{path} is not valid JSON ({error}): restore it or export the model again") from None
    if not isinstance(config, dict) or "model" not in config:
        raise InputFileError(f"{path} has no 'model' section: it is not a flexmdm model's config.json")
    return config


def verify_pretrained(directory: str | Path) -> dict[str, Any]:
    """Check every file of a :func:`save_pretrained` directory without building the network;
    returns its ``config.json``.

    The weights must match the checksum ``config.json`` records (directories written before
    checksums were recorded are not checked), and a ``tokenizer.json`` must parse.

    Raises:
        FileNotFoundError: a required file is missing.
        InputFileError: a file is truncated, corrupted or malformed (the message names it).
    """
    directory = Path(directory)
    config = _read_config(directory)
    expected = config.get(CHECKSUM_KEY)
    if expected is not None and weights_digest(directory / WEIGHTS_NAME) != expected:
        raise InputFileError(
            f"{directory / WEIGHTS_NAME} does not match the checksum in {CONFIG_NAME} ({CHECKSUM_KEY}): "
            "the file is damaged; copy or export the model again"
        )
    tokenizer = directory / TOKENIZER_NAME
    if tokenizer.is_file():
        from tokenizers import Tokenizer

        try:
            Tokenizer.from_file(str(tokenizer))
        except Exception as error:  # tokenizers raises a bare Exception for a malformed file
            raise InputFileError(f"{tokenizer} is not a valid tokenizer ({error}): restore it or export "
                                 "the model again") from None
    return config


def _read_weights(path: Path) -> dict[str, Tensor]:
    try:
        return load_file(path)
    except SafetensorError as error:
        raise InputFileError(f"{path} is truncated or not a safetensors file ({error}): copy or export "
                             "the model again") from None


def load_pretrained(directory: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """``(model in eval mode, the whole config.json)`` from a :func:`save_pretrained` directory,
    every file checked first (:func:`verify_pretrained`).

    Raises:
        FileNotFoundError: a required file is missing.
        InputFileError: a file is truncated, corrupted or malformed, or the weights do not fit the
            network that ``config.json`` describes (the message names the file).
    """
    directory = Path(directory)
    config = verify_pretrained(directory)
    try:
        model = build_model(ModelConfig.from_dict(config["model"]))
    except (TypeError, ValueError) as error:
        raise InputFileError(f"{directory / CONFIG_NAME}: invalid 'model' section ({error})") from None
    try:
        model.load_state_dict(_read_weights(directory / WEIGHTS_NAME))
    except RuntimeError as error:
        first_line = str(error).splitlines()[0]
        raise InputFileError(f"{directory / WEIGHTS_NAME} does not fit the network of {CONFIG_NAME} "
                             f"({first_line}): export the model again") from None
    return model.eval(), config
