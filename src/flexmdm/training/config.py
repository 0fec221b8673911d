"""Training configuration: a YAML file read into nested dataclasses.

A configuration has five top-level keys, and a sixth to start from a base checkpoint::

    model:      fields of flexmdm.models.ModelConfig; vocab_size, mask_id and pad_id default to
                the task's vocabulary (and must match it when given)
    schedules:  {insertion: {name: linear|polynomial|power_decay|cosine|geometric, ...params}, unmasking: ...}
    data:       {task: <registered task name>, ...that task's parameters}
    train:      optimisation, logging and checkpointing (see TrainConfig)
    output_dir: where metrics, checkpoints and the exported model go (relative to the cwd)
    retrofit:   {base: DIR, ...} turns the native LLaDA checkpoint DIR into a FlexMDM and trains
                only what it adds (see RetrofitSection). The network, its dimensions and its
                vocabulary are the base's: ``model`` may be left out, and a value it gives must
                equal the base's; the task's vocabulary must be the base's.
    init:       {base: DIR} instead trains every weight of the native LLaDA checkpoint DIR as an
                MDM (supervised fine-tuning, as LLaDA's SFT); ``model`` and the vocabulary follow
                the base as for a retrofit (see InitSection).

``load_config(path, overrides)`` applies ``a.b=value`` overrides (each value parsed with
``yaml.safe_load``), rejects unknown keys and invalid values with a :class:`ConfigError` naming
the full dotted key, and returns the fully resolved :class:`Config` (every default filled in),
which the trainer saves as ``output_dir/config.yaml``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from flexmdm.atomic import write_text_atomic
from flexmdm.families import FAMILIES, family
from flexmdm.losses import MAX_TIME
from flexmdm.models import ModelConfig
from flexmdm.models.llada import LLaDAConfig, model_config_from_llada, read_llada_config
from flexmdm.models.retrofit import RetrofitConfig, read_retrofit_record, retrofit_model_config, setting_differences
from flexmdm.schedules import Schedule, schedule_from_config
from flexmdm.tasks.base import Task, get_task_class

__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "InitSection",
    "RetrofitSection",
    "ScheduleConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "load_config",
    "parse_override",
]

TOP_LEVEL_KEYS = ("model", "schedules", "data", "train", "output_dir", "retrofit", "init")
VOCAB_FIELDS = ("vocab_size", "mask_id", "pad_id")


class ConfigError(ValueError):
    """An invalid configuration; the message names the offending dotted key."""


def _require(predicate: Callable[[Any], bool], description: str) -> Callable[[Any], Any]:
    """A field converter that keeps values satisfying ``predicate`` and rejects the others."""

    def convert(value: Any) -> Any:
        if value is not None and not predicate(value):
            raise ValueError(f"must be {description}, got {value!r}")
        return value

    return convert


def _field(default: Any, convert: Callable[[Any], Any] | None = None) -> Any:
    """A dataclass field whose value is passed through ``convert`` when read from a file."""
    metadata = {"convert": convert} if convert else {}
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=metadata)
    return field(default=default, metadata=metadata)


_POSITIVE = _require(lambda v: v >= 1, ">= 1")
_NON_NEGATIVE = _require(lambda v: v >= 0, ">= 0")


def _schedule_dict(value: Any) -> dict[str, Any]:
    """Validate and normalise a schedule given as a name or ``{name: ..., **params}``."""
    if not isinstance(value, (str, Mapping)):
        raise ValueError(f"must be a schedule name or a mapping with a 'name', got {value!r}")
    return schedule_from_config(dict(value) if isinstance(value, Mapping) else value).to_config()


@dataclass
class ScheduleConfig:
    """The insertion schedule α and the unmasking schedule β (see :mod:`flexmdm.schedules`)."""

    insertion: Any = _field({"name": "linear"}, _schedule_dict)
    unmasking: Any = _field({"name": "linear"}, _schedule_dict)

    def build(self) -> tuple[Schedule, Schedule]:
        """``(insertion_schedule, unmasking_schedule)``."""
        return schedule_from_config(self.insertion), schedule_from_config(self.unmasking)

    def to_dict(self) -> dict[str, Any]:
        return {"insertion": dict(self.insertion), "unmasking": dict(self.unmasking)}


@dataclass
class DataConfig:
    """A registered task and its parameters (flat in YAML: ``{task: name, **options}``)."""

    task: str = "toy"
    options: dict[str, Any] = field(default_factory=dict)

    def build_task(self) -> Task:
        """Instantiate the task (options were validated when the config was loaded)."""
        return get_task_class(self.task)(**self.options)

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, **self.options}


@dataclass
class TrainConfig:
    """Optimisation, logging and checkpointing.

    Attributes:
        steps: optimizer updates in total.
        batch_size: global batch (sequences per update, over all ranks and micro-batches).
        micro_batch_size: sequences per forward pass on one rank. Give it or ``grad_accum`` (or
            both, consistently); with neither, one micro-batch per rank.
        grad_accum: micro-batches accumulated per update on each rank.
        lr: peak learning rate (AdamW).
        weight_decay: AdamW decoupled weight decay (weight matrices only, not biases, norms
            or vectors).
        betas: AdamW betas.
        warmup_steps: linear warm-up from lr/warmup_steps to lr.
        min_lr_ratio: the cosine decay ends at ``lr * min_lr_ratio`` at the last step.
        grad_clip: maximal global gradient norm (0: no clipping; the norm is still logged).
        ema_decay: decay of the exponential moving average of the weights (0: off), reached
            after a warm-up (see :class:`flexmdm.training.trainer.EMA`). The EMA weights are
            validated, checkpointed for sampling and exported.
        seed: the seed of everything (initialisation, data, times, noise, dropout).
        log_every: append a metrics row every this many steps.
        eval_every: validation loss every this many steps (0: only at the end).
        eval_batches: held-out micro-batches in the fixed validation set.
        save_every: checkpoint every this many steps (0: only at the end).
        keep_last: number of checkpoints kept (0: all).
        autocast: "bfloat16" runs the forward pass under autocast (slower than fp32 on CPU).
        max_time: training times are drawn in [0, max_time] (the rates diverge at t = 1).
        time_power: training times are ``max_time · u^time_power``, u stratified uniform: 1 is
            uniform, 2 draws more early times (same minimiser; see
            :func:`flexmdm.losses.sample_times`). Validation always uses uniform times.
        gap_weight: FlexMDM only: the weight of the insertion part of the loss (eq. 7 is 1).
            Both parts keep the true posterior as their minimiser at any positive weight; a
            smaller one leaves more of the shared layers to unmasking
            (:func:`flexmdm.losses.flexmdm_loss`).
        length_buckets: FlexMDM only: each micro-batch of states x_t is sorted by length and
            run through the network as this many sub-batches, each padded only to its own
            longest state. The objective is unchanged (up to float rounding); the network sees
            less padding. 1: one pass per micro-batch.
        packing: the network runs on the live positions of every sequence only, packed with
            block-diagonal attention (:mod:`flexmdm.models.packing`): no work on padding, the same
            objective up to float rounding. DiT and autoregressive networks only.
        compile: the training forward and backward passes run through ``torch.compile``
            (:class:`flexmdm.models.compiled.CompiledNetwork`: dynamic shapes, eager if compiling
            fails); validation stays eager. Same objective up to float rounding, but dropout
            draws differ from the eager run's.
        device: "auto" (cuda when available), "cpu" or "cuda".
        strategy: how ranks share the network under ``torchrun`` (:mod:`flexmdm.training.sharding`):
            "ddp" replicates it; "fsdp" shards parameters, gradients, optimizer and EMA with FSDP2,
            one unit per transformer block, and checkpoints them with torch.distributed.checkpoint.
        activation_checkpointing: every transformer block keeps only its input for the backward
            pass and recomputes its activations there: less memory, one more forward pass per
            block, the same results.
        tensorboard: also write every metrics row as TensorBoard scalars to
            ``output_dir/tensorboard`` (needs the ``tensorboard`` package).
    """

    steps: int = _field(1000, _POSITIVE)
    batch_size: int = _field(64, _POSITIVE)
    micro_batch_size: int | None = _field(None, _POSITIVE)
    grad_accum: int | None = _field(None, _POSITIVE)
    lr: float = _field(3e-4, _require(lambda v: v > 0, "> 0"))
    weight_decay: float = _field(0.0, _NON_NEGATIVE)
    betas: tuple[float, float] = _field((0.9, 0.99), _require(lambda v: all(0 <= b < 1 for b in v), "in [0, 1)"))
    warmup_steps: int = _field(100, _NON_NEGATIVE)
    min_lr_ratio: float = _field(0.1, _require(lambda v: 0 <= v <= 1, "in [0, 1]"))
    grad_clip: float = _field(1.0, _NON_NEGATIVE)
    ema_decay: float = _field(0.999, _require(lambda v: 0 <= v < 1, "in [0, 1)"))
    seed: int = _field(0, _NON_NEGATIVE)
    log_every: int = _field(10, _POSITIVE)
    eval_every: int = _field(0, _NON_NEGATIVE)
    eval_batches: int = _field(4, _NON_NEGATIVE)
    save_every: int = _field(0, _NON_NEGATIVE)
    keep_last: int = _field(2, _NON_NEGATIVE)
    autocast: Literal["none", "bfloat16"] = "none"
    max_time: float = _field(MAX_TIME, _require(lambda v: 0 < v <= 1, "in (0, 1]"))
    time_power: float = _field(1.0, _require(lambda v: v > 0, "> 0"))
    gap_weight: float = _field(1.0, _require(lambda v: v > 0, "> 0"))
    length_buckets: int = _field(1, _POSITIVE)
    packing: bool = False
    compile: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"
    strategy: Literal["ddp", "fsdp"] = "ddp"
    activation_checkpointing: bool = False
    tensorboard: bool = False

    def batching(self, world_size: int) -> tuple[int, int]:
        """``(micro_batch_size, grad_accum)`` for ``world_size`` ranks.

        Raises:
            ConfigError: the global batch does not split evenly.
        """
        per_rank, rest = divmod(self.batch_size, world_size)
        if self.micro_batch_size is None:
            accum = self.grad_accum or 1
            micro, rest_micro = divmod(per_rank, accum)
        else:
            micro = self.micro_batch_size
            accum, rest_micro = divmod(per_rank, micro)
        consistent = self.grad_accum is None or self.grad_accum == accum
        if rest or rest_micro or micro == 0 or accum == 0 or not consistent:
            raise ConfigError(
                f"train.batch_size={self.batch_size} does not split into {world_size} rank(s) x "
                f"train.micro_batch_size={self.micro_batch_size} x train.grad_accum={self.grad_accum}"
            )
        return micro, accum


@dataclass
class RetrofitSection(RetrofitConfig):
    """``retrofit:``: a native LLaDA checkpoint and what :func:`flexmdm.models.retrofit.retrofit` adds to it.

    Attributes:
        base: the checkpoint folder (``config.json`` + safetensors, see :mod:`flexmdm.models.llada`),
            relative to the cwd.
        base_config: a LLaDA ``config.json`` to read the architecture from instead of
            ``base/config.json``, so that a configuration can be checked and planned
            (``flexmdm plan``) without the weights; training checks that the base agrees.
        base_dtype: how the frozen base weights are stored: "float32", or "bfloat16" (half the
            memory; the trainable parameters stay float32, and ``train.autocast: bfloat16`` is
            required so that both meet in bfloat16 matmuls).
        adapters_from: a folder of adapters saved by an earlier retrofit run of the same base with
            the same settings (its ``adapters/``), which this run's adapters and new modules start
            from instead of fresh ones: e.g. instruction tuning after an adaptation run.

    The other fields are :class:`~flexmdm.models.retrofit.RetrofitConfig`'s (LoRA rank, alpha and
    targets, time conditioning, gap head width).
    """

    base: str = ""
    base_config: str | None = None
    base_dtype: Literal["float32", "bfloat16"] = "float32"
    adapters_from: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.base:
            raise ValueError("base must name a LLaDA checkpoint folder")
        if self.train_base and self.base_dtype != "float32":
            raise ValueError("base_dtype stores the frozen base weights; with train_base every weight trains "
                             "in float32, so leave base_dtype at float32")

    def check_adapters_from(self) -> None:
        """Raise a :class:`ConfigError` unless ``adapters_from`` (if given) holds adapters saved with
        this section's retrofit settings."""
        if self.adapters_from is None:
            return
        try:
            saved = RetrofitConfig.from_dict(read_retrofit_record(self.adapters_from)["retrofit"])
        except (OSError, ValueError, KeyError) as error:
            raise ConfigError(f"retrofit.adapters_from: {self.adapters_from} holds no saved retrofit adapters "
                              f"({error})") from None
        differ = setting_differences(saved, self.adapters)
        if differ:
            raise ConfigError(f"retrofit.adapters_from: {self.adapters_from} was saved with {', '.join(differ)}; "
                              "give this retrofit the same settings")

    @property
    def adapters(self) -> RetrofitConfig:
        """The retrofit settings alone (what is saved beside the adapters)."""
        return RetrofitConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(RetrofitConfig)})

    def llada_config(self) -> LLaDAConfig:
        """The base network, from ``base_config`` or ``base/config.json`` (no weights are read).

        Raises:
            ConfigError: no such file, or a config this implementation does not support.
        """
        if self.base_config:
            return _read_base_config("retrofit.base_config", self.base_config)
        return _read_base_config("retrofit.base", Path(self.base) / "config.json")

    def model_config(self) -> ModelConfig:
        """The FlexMDM the retrofit makes of the base."""
        return retrofit_model_config(model_config_from_llada(self.llada_config()), self.adapters)


@dataclass
class InitSection:
    """``init:``: an MDM whose every weight starts from a native LLaDA checkpoint and is trained.

    This is supervised fine-tuning of a pretrained MDM (LLaDA's SFT, the MDM arm of the paper's
    §5.2), where a ``retrofit`` section would turn the same base into a FlexMDM instead.

    Attributes:
        base: the checkpoint folder (``config.json`` + safetensors), relative to the cwd.
    """

    base: str = ""

    def __post_init__(self) -> None:
        if not self.base:
            raise ValueError("base must name a LLaDA checkpoint folder")

    def model_config(self) -> ModelConfig:
        """The base network's configuration (kind "mdm", architecture "llada").

        Raises:
            ConfigError: no ``base/config.json``, or one this implementation does not support.
        """
        return model_config_from_llada(_read_base_config("init.base", Path(self.base) / "config.json"))


def _read_base_config(key: str, path: Path | str) -> LLaDAConfig:
    """:func:`read_llada_config` of ``path``, its failure a :class:`ConfigError` naming ``key``."""
    try:
        return read_llada_config(path)
    except (OSError, ValueError) as error:
        raise ConfigError(f"{key}: {error}") from None


@dataclass
class Config:
    """A resolved training configuration (see the module docstring)."""

    model: ModelConfig
    schedules: ScheduleConfig
    data: DataConfig
    train: TrainConfig
    output_dir: str
    retrofit: RetrofitSection | None = None
    init: InitSection | None = None

    @property
    def base(self) -> RetrofitSection | InitSection | None:
        """The section naming the checkpoint the network starts from (``retrofit`` or ``init``), if any."""
        return self.retrofit or self.init

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML/JSON-ready dict; :func:`config_from_dict` inverts it."""
        out = {
            "model": _plain(self.model.to_dict()),
            "schedules": self.schedules.to_dict(),
            "data": _plain(self.data.to_dict()),
            "train": _plain(dataclasses.asdict(self.train)),
            "output_dir": self.output_dir,
        }
        if self.retrofit is not None:
            out["retrofit"] = _plain(self.retrofit.to_dict())
        if self.init is not None:
            out["init"] = _plain(dataclasses.asdict(self.init))
        return out

    def save(self, path: str | Path) -> None:
        """Write the resolved configuration as YAML, atomically."""
        write_text_atomic(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively (YAML's safe dumper knows no tuples)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against a type annotation, converting where YAML is lax (ints, '1e-3')."""
    origin = get_origin(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: invalid value {value!r}")
    if origin is Literal:
        if value not in get_args(hint):
            raise ConfigError(f"{key}: must be one of {list(get_args(hint))}, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: must be a string, got {value!r}")
        return value
    if origin is tuple and get_args(hint)[-1] is Ellipsis:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: must be a list, got {value!r}")
        return tuple(_coerce(v, get_args(hint)[0], f"{key}[{i}]") for i, v in enumerate(value))
    if origin is tuple:
        items = get_args(hint)
        if not isinstance(value, (list, tuple)) or len(value) != len(items):
            raise ConfigError(f"{key}: must be a list of {len(items)} values, got {value!r}")
        return tuple(_coerce(v, h, f"{key}[{i}]") for i, (v, h) in enumerate(zip(value, items)))
    if origin in (dict, Mapping) or hint is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: must be a mapping, got {value!r}")
        return dict(value)
    if origin in (list, Sequence) or hint is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: must be a list, got {value!r}")
        return list(value)
    if isinstance(hint, type) and not isinstance(value, hint):
        raise ConfigError(f"{key}: must be a {hint.__name__}, got {value!r}")
    return value


def _check_mapping(raw: Any, key: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{key or 'config'}: must be a mapping, got {raw!r}")
    return dict(raw)


def _reject_unknown(raw: Mapping[str, Any], valid: Sequence[str], prefix: str) -> None:
    unknown = [k for k in raw if k not in valid]
    if unknown:
        where = f" under '{prefix[:-1]}'" if prefix else ""
        raise ConfigError(f"unknown key '{prefix}{unknown[0]}'; valid keys{where}: {', '.join(valid)}")


def _build(cls: type, raw: Any, prefix: str) -> Any:
    """Instantiate dataclass ``cls`` from ``raw``, validating every field.

    Field types come from the annotations; a field's ``metadata["convert"]`` (if any) further
    validates or normalises its value. Errors name the dotted key ``prefix + field``; errors
    raised by the class itself are attributed to a field when they start with its name.
    """
    raw = _check_mapping(raw, prefix[:-1])
    init_fields = [f for f in dataclasses.fields(cls) if f.init]
    _reject_unknown(raw, [f.name for f in init_fields], prefix)
    hints = get_type_hints(cls)
    kwargs = {}
    for f in init_fields:
        key = prefix + f.name
        if f.name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"missing required key '{key}'")
            continue
        value = _coerce(raw[f.name], hints[f.name], key)
        convert = f.metadata.get("convert")
        if convert is not None:
            try:
                value = convert(value)
            except ValueError as error:
                raise ConfigError(f"{key}: {error}") from None
        kwargs[f.name] = value
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as error:
        # A message starting with a field name ("max_a must be ...") gets its dotted key.
        message = str(error)
        if re.split(r"[\s:=]", message, maxsplit=1)[0] in {f.name for f in init_fields}:
            raise ConfigError(prefix + message) from None
        raise ConfigError(f"{prefix[:-1] or 'config'}: {message}") from None


def _build_data(raw: Any, kind: Any) -> tuple[DataConfig, Task]:
    """The task of ``data``; a task with a ``layout`` (FlexMDM or MDM) takes the one of ``kind``'s family."""
    raw = _check_mapping(raw, "data")
    name = _coerce(raw.pop("task", "toy"), str, "data.task")
    try:
        task_class = get_task_class(name)
    except KeyError as error:
        raise ConfigError(f"data.task: {error.args[0]}") from None
    model_family = FAMILIES.get(kind) if isinstance(kind, str) else None
    if "layout" in {f.name for f in dataclasses.fields(task_class) if f.init} and model_family is not None:
        try:
            raw["layout"] = model_family.task_layout(raw.get("layout"))
        except ValueError as error:
            raise ConfigError(f"data.{error}") from None
    task = _build(task_class, raw, "data.")
    options = {f.name: getattr(task, f.name) for f in dataclasses.fields(task) if f.init}
    return DataConfig(task=name, options=options), task


def _build_model(raw: Any, task: Task) -> ModelConfig:
    raw = _check_mapping(raw, "model")
    for name in VOCAB_FIELDS:
        expected = getattr(task.vocab, "size" if name == "vocab_size" else name)
        if raw.setdefault(name, expected) != expected:
            raise ConfigError(
                f"model.{name}={raw[name]!r} does not match the task's vocabulary ({name}={expected}); "
                "leave it out to take the task's"
            )
    model = _build(ModelConfig, raw, "model.")
    if model.max_length < task.max_length:
        raise ConfigError(
            f"model.max_length={model.max_length} is shorter than the task's longest sequence ({task.max_length})"
        )
    return model


def _build_base_model(raw: Any, section: str, base: RetrofitSection | InitSection, task: Task | None) -> ModelConfig:
    """The network the ``section`` (``retrofit`` or ``init``) makes of its base; ``model`` values must
    equal it, the task's vocabulary must be the base's."""
    derived = base.model_config()
    raw = _check_mapping(raw, "model")
    _reject_unknown(raw, [f.name for f in dataclasses.fields(ModelConfig)], "model.")
    hints = get_type_hints(ModelConfig)
    for name in raw:
        if _coerce(raw[name], hints[name], f"model.{name}") != getattr(derived, name):
            raise ConfigError(f"model.{name}={raw[name]!r} contradicts the {section} of {base.base} "
                              f"({name}={getattr(derived, name)!r}); leave it out to take the base's")
    if task is not None:
        ours = {"vocab_size": task.vocab.size, "mask_id": task.vocab.mask_id, "pad_id": task.vocab.pad_id}
        theirs = {name: getattr(derived, name) for name in VOCAB_FIELDS}
        if ours != theirs:
            raise ConfigError(f"{section}.base: the task's vocabulary {ours} is not the base's {theirs}; a model "
                              "trained from a base keeps its base's tokenizer")
        if task.max_length > derived.max_length:
            raise ConfigError(f"{section}.base: the task's longest sequence ({task.max_length}) exceeds the base's "
                              f"max_sequence_length ({derived.max_length})")
    return derived


def config_from_dict(raw: Any, *, check_data: bool = True) -> Config:
    """Validate a configuration given as nested dicts (as read from YAML).

    Args:
        raw: the configuration.
        check_data: build the task and check the model against it. With ``False`` a retrofit
            or init configuration, whose network is its base's, is resolved without its data (for
            :mod:`flexmdm.planner`); ``data`` is then kept as given, unchecked. Other
            configurations take their vocabulary from the task, which is then built anyway.

    Raises:
        ConfigError: unknown key, missing ``output_dir`` or invalid value; the message names
            the dotted key.
    """
    raw = _check_mapping(raw, "")
    _reject_unknown(raw, TOP_LEVEL_KEYS, "")
    if "output_dir" not in raw:
        raise ConfigError("missing required key 'output_dir'")
    output_dir = _coerce(raw["output_dir"], str, "output_dir")
    retrofit = None if raw.get("retrofit") is None else _build(RetrofitSection, raw["retrofit"], "retrofit.")
    init = None if raw.get("init") is None else _build(InitSection, raw["init"], "init.")
    if retrofit is not None and init is not None:
        raise ConfigError("init: a retrofit already starts from its base; give either retrofit or init")
    if retrofit is not None:
        retrofit.check_adapters_from()
    section, base = ("retrofit", retrofit) if retrofit is not None else ("init", init)
    if base is not None and not check_data:
        data_raw = _check_mapping(raw.get("data"), "data")
        data, task = DataConfig(task=data_raw.pop("task", "toy"), options=data_raw), None
    else:
        kind = base.model_config().kind if base is not None else _check_mapping(raw.get("model"), "model").get("kind")
        data, task = _build_data(raw.get("data"), kind)
    if base is None:
        model = _build_model(raw.get("model"), task)
    else:
        model = _build_base_model(raw.get("model"), section, base, task)
    schedules = _build(ScheduleConfig, raw.get("schedules"), "schedules.")
    train = _build(TrainConfig, raw.get("train"), "train.")
    if retrofit is not None and retrofit.base_dtype == "bfloat16" and train.autocast != "bfloat16":
        raise ConfigError("retrofit.base_dtype=bfloat16 needs train.autocast=bfloat16 (the float32 adapters and the "
                          "bfloat16 base meet in bfloat16 matmuls)")
    if train.length_buckets > 1 and not family(model.kind).inserts:
        raise ConfigError(f"train.length_buckets applies to FlexMDM states only; model.kind is {model.kind!r}")
    if train.gap_weight != 1.0 and not family(model.kind).inserts:
        raise ConfigError(f"train.gap_weight weighs the FlexMDM insertion loss; model.kind is {model.kind!r}")
    if train.packing and model.architecture != "dit":
        raise ConfigError(f"train.packing needs model.architecture 'dit', got {model.architecture!r}")
    if train.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("train.tensorboard: the tensorboard package is not installed; "
                          "run 'pip install tensorboard' or set train.tensorboard=false")
    return Config(model=model, schedules=schedules, data=data, train=train, output_dir=output_dir, retrofit=retrofit,
                  init=init)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``"a.b=value"`` into ``(["a", "b"], yaml.safe_load(value))``.

    Raises:
        ConfigError: no ``=``, an empty key part, or a value YAML cannot parse.
    """
    key, sep, value = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise ConfigError(f"bad override {text!r}: expected KEY=VALUE with a dotted KEY, e.g. train.lr=1e-3")
    try:
        return parts, yaml.safe_load(value)
    except yaml.YAMLError as error:
        raise ConfigError(f"bad override {text!r}: cannot parse the value ({error.problem})") from None


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Set every ``a.b=value`` of ``overrides`` in the nested dict ``raw`` (in place)."""
    for text in overrides:
        parts, value = parse_override(text)
        node = raw
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                section = ".".join(parts[: depth + 1])
                raise ConfigError(f"bad override {text!r}: '{section}' is a value, not a section")
            node = child
        node[parts[-1]] = value
    return raw


def load_config(path: str | Path, overrides: Sequence[str] = (), *, check_data: bool = True) -> Config:
    """Read a YAML configuration, apply ``a.b=value`` overrides and validate it
    (``check_data``: see :func:`config_from_dict`).

    Raises:
        FileNotFoundError: no such file.
        ConfigError: malformed YAML, unknown key or invalid value (named by its dotted key).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no configuration file at {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({_yaml_problem(error)})") from None
    return config_from_dict(apply_overrides(_check_mapping(raw, ""), overrides), check_data=check_data)


def _yaml_problem(error: yaml.YAMLError) -> str:
    """One line saying what is wrong where (PyYAML's own message spans several, with a caret)."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    return problem if mark is None else f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
