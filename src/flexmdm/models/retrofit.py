"""Retrofitting a pretrained LLaDA masked diffusion model into a FlexMDM (paper §5.2, appendix F.3).

MDM and FlexMDM share the unmasking posterior's form, so a pretrained MDM already holds most of
a FlexMDM. :func:`retrofit` adds what is missing and trains only that:

* **time conditioning** — sinusoidal features of ``t · time_scale`` through an MLP, then adaLN on
  every block: ``norm(h)·(1+scale)+shift`` before attention and MLP, ``(1+gate)·branch`` on the
  residuals. One modulation (:func:`time_modulation`: ``d → 6d``, or low-rank ``d → r → 6d``
  with ``time_rank`` r) serves each group of ``time_groups`` consecutive blocks. Its output
  layer starts at zero, so the retrofitted network starts out computing exactly the MDM's token
  logits. At LLaDA-8B's width (d = 4096, 32 blocks, groups of 2) the full modulation is
  16 · 6d² ≈ 1.61 B parameters, the rank-64 one 16 · (7 · 64 · d + 6d) ≈ 30 M;
* a learned **frozen-token vector** added to the embeddings of prompt tokens (zero at start);
* a **gap head** over the n + 1 gap slots: gap i sits between tokens i − 1 and i, and its
  expected size is ``softplus(MLP([left_i; right_i; c(t)]))`` of the final hidden states on
  both sides (a learned START vector left of slot 0, a learned END vector right of the tail
  slot), of the time features c(t) — without them the empty state, where sampling starts,
  would get one expected length whatever the time — and of the slot index i and the state
  length n (both over ``max_length``); its hidden width is ``gap_hidden`` (default d). RoPE
  gives the hidden states only relative positions, and how much is left to insert depends on
  how long the state already is;
* **LoRA** adapters (``peft``) on the query/key/value projections, on the per-block MLP
  matrices selected (``ff_proj`` gate, ``up_proj``, and the per-block down projection
  ``blocks.N.ff_out`` — selected by full path, not by the bare name ``ff_out`` that LLaDA also
  gives its LM head) and optionally on the token head ``transformer.ff_out``.

Everything else is frozen — unless ``train_base`` asks for full fine-tuning: then no adapters are
made and every base weight trains with the new modules (for a base small enough to fine-tune whole;
the paper's LLaDA-8B retrofit uses LoRA). :func:`save_retrofit` writes only what trains: the
LoRA adapters as ``peft`` writes them for the base network (``adapter_config.json`` +
``adapter_model.safetensors``: ``PeftModel.from_pretrained(base, directory)`` reads them), the new
modules beside them (``retrofit_modules.safetensors``; with ``train_base``, the whole network's
weights, and no ``peft`` files) and ``retrofit_config.json``;
:func:`load_retrofit` re-attaches all of them to the base checkpoint, and :func:`load_adapters`
loads them into a fresh retrofit of it (one run's adapters as the start of the next).

:class:`LLaDAFlexMDM` is also the FlexMDM of the LLaDA architecture trained from scratch
(``ModelConfig(kind="flexmdm", architecture="llada")``): same modules, all trainable.
Both are FlexMDM denoisers ``(x, t, lengths, frozen) -> (token_logits, expected_gaps)`` for
:func:`flexmdm.sampling.sample_flexmdm`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from flexmdm.atomic import atomic_directory
from flexmdm.families import family
from flexmdm.models.config import ModelConfig
from flexmdm.models.layers import TimeEmbedding
from flexmdm.models.llada import LLaDAModel, Modulation, llada_config_from_model_config, load_llada

__all__ = [
    "GapHead",
    "LLaDAFlexMDM",
    "RetrofitConfig",
    "build_llada_model",
    "is_retrofit_parameter",
    "load_adapters",
    "load_retrofit",
    "lora_target_pattern",
    "merge_adapters",
    "merged_state_dict",
    "read_retrofit_record",
    "retrofit",
    "retrofit_model_config",
    "save_retrofit",
    "setting_differences",
    "time_modulation",
    "trains",
    "ADAPTER_WEIGHTS_NAME",
    "RETROFIT_CONFIG_NAME",
    "MODULES_WEIGHTS_NAME",
]

ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
MODULES_WEIGHTS_NAME = "retrofit_modules.safetensors"
PEFT_PREFIX = "base_model.model."
"""Where ``peft`` puts the base network's modules in the names of its saved adapters."""
BACKBONE = "backbone."
RETROFIT_CONFIG_NAME = "retrofit_config.json"
NEW_MODULES = ("time_embedding", "time_modulations", "frozen_embedding", "gap_head")
ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "attn_out")
MLP_MATRICES = ("ff_proj", "up_proj", "ff_out")


class GapHead(nn.Module):
    """Expected insertions per gap slot: ``(hidden [B, n, d], lengths [B], cond [B, d]) -> [B, n + 1]``
    (0 past a row's tail)."""

    def __init__(self, d_model: int, max_length: int, hidden: int | None = None) -> None:
        super().__init__()
        self.max_length = max_length
        hidden = hidden or d_model
        self.start = nn.Parameter(torch.randn(d_model) * 0.02)
        self.end = nn.Parameter(torch.randn(d_model) * 0.02)
        self.mlp = nn.Sequential(nn.Linear(3 * d_model + 3, hidden), nn.SiLU(), nn.Linear(hidden, 1))

    def forward(self, hidden: Tensor, lengths: Tensor, cond: Tensor) -> Tensor:
        batch, n, d = hidden.shape
        slots = torch.arange(n + 1, device=hidden.device)[None, :]
        left = torch.cat([self.start.to(hidden.dtype).expand(batch, 1, d), hidden], dim=1)
        right = torch.cat([hidden, hidden.new_zeros(batch, 1, d)], dim=1)
        right = torch.where((slots == lengths[:, None])[..., None], self.end.to(hidden.dtype), right)
        time = cond.to(hidden.dtype)[:, None, :].expand(batch, n + 1, d)
        slot = (slots / self.max_length).expand(batch, n + 1)
        length = (lengths[:, None] / self.max_length).expand(batch, n + 1)
        positions = torch.stack([slot, length, length - slot], dim=-1).to(hidden.dtype)
        gaps = F.softplus(self.mlp(torch.cat([left, right, time, positions], dim=-1)).squeeze(-1).float())
        return torch.where(slots <= lengths[:, None], gaps, 0.0)


def time_modulation(d_model: int, rank: int = 0) -> nn.Module:
    """The adaLN parameters of one group of blocks: ``cond [B, d] -> [B, 6d]``, zero at start.

    ``rank`` 0: one ``d → 6d`` linear layer, 6d² + 6d parameters, weights and bias at zero.
    ``rank`` r: ``d → r`` (no bias, default init) then ``r → 6d`` (zero), 7dr + 6d parameters;
    the zero second layer makes the output zero at start while the first one's output still
    gives it a gradient (as in LoRA).
    """
    up = nn.Linear(rank or d_model, 6 * d_model)
    nn.init.zeros_(up.weight)
    nn.init.zeros_(up.bias)
    return up if rank == 0 else nn.Sequential(nn.Linear(d_model, rank, bias=False), up)


class LLaDAFlexMDM(nn.Module):
    """A LLaDA backbone with adaLN time conditioning, a frozen-token vector and a gap head.

    Args:
        backbone: the LLaDA network (its weights are used as they are).
        config: ``kind="flexmdm"``, ``architecture="llada"``; ``time_groups``, ``time_rank``
            and ``time_scale`` shape the time conditioning, ``gap_hidden`` the gap head.
    """

    def __init__(self, backbone: LLaDAModel, config: ModelConfig) -> None:
        super().__init__()
        if not family(config.kind).inserts:
            raise ValueError(f"LLaDAFlexMDM needs a config of kind 'flexmdm', got {config.kind!r}")
        self.config = config
        self.backbone = backbone
        d, layers = backbone.llada_config.d_model, backbone.llada_config.n_layers
        self.time_groups = config.time_groups
        self.time_embedding = TimeEmbedding(d, config.time_scale)
        self.time_modulations = nn.ModuleList(time_modulation(d, config.time_rank)
                                              for _ in range(-(-layers // config.time_groups)))
        self.frozen_embedding = nn.Parameter(torch.zeros(d))
        self.gap_head = GapHead(d, config.max_length, config.gap_hidden)

    def modulations(self, cond: Tensor) -> list[Modulation]:
        """One :class:`Modulation` per block from the time features ``cond [B, d]``; blocks of a group share theirs."""
        shared = [Modulation.from_vector(layer(cond)) for layer in self.time_modulations]
        return [shared[index // self.time_groups] for index in range(self.backbone.llada_config.n_layers)]

    def forward(self, x: Tensor, t: Tensor, lengths: Tensor, frozen: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(x [B, n], t [B], lengths [B], frozen [B, n]) -> (token_logits [B, n, V], gaps [B, n+1])``.

        MASK and PAD get −inf logits; gaps past a row's tail slot are 0.
        """
        h = self.backbone.embed(x)
        if frozen is not None:
            h = h + frozen[..., None].to(h.dtype) * self.frozen_embedding.to(h.dtype)
        cond = F.silu(self.time_embedding(t)).to(h.dtype)
        hidden = self.backbone.hidden_states(h, lengths, self.modulations(cond))
        logits = self.backbone.logits(hidden)
        logits[..., self.config.pad_id] = float("-inf")
        return logits, self.gap_head(hidden, lengths, cond)


def build_llada_model(config: ModelConfig) -> nn.Module:
    """A fresh LLaDA-architecture network: :class:`LLaDAModel` (mdm) or :class:`LLaDAFlexMDM` (flexmdm)."""
    if config.dropout > 0:
        raise ValueError("the llada architecture has no dropout; set model.dropout to 0")
    if not family(config.kind).generates:
        raise ValueError(f"the llada architecture builds 'mdm' or 'flexmdm' networks, not {config.kind!r}")
    mdm_config = dataclasses.replace(config, kind="mdm", time_rank=0, gap_hidden=0)
    backbone = LLaDAModel(llada_config_from_model_config(mdm_config), mdm_config)
    return LLaDAFlexMDM(backbone, config) if family(config.kind).inserts else backbone


# -- retrofitting ---------------------------------------------------------------------------------


@dataclass
class RetrofitConfig:
    """What :func:`retrofit` adds and trains.

    Attributes:
        lora_rank: LoRA rank r.
        lora_alpha: LoRA scaling numerator (the update is scaled by alpha / r).
        attention_targets: attention projections that get adapters (of ``q_proj k_proj v_proj attn_out``).
        mlp_targets: per-block MLP matrices that get adapters (of ``ff_proj up_proj ff_out``;
            ``ff_out`` here is the block's down projection).
        lora_token_head: also adapt the LM head ``transformer.ff_out``.
        time_groups: consecutive blocks sharing one adaLN parameter set.
        time_scale: t is multiplied by this before its sinusoidal features.
        time_rank: 0 for a ``d → 6d`` modulation per group, r for a low-rank ``d → r → 6d``
            one (:func:`time_modulation`).
        gap_hidden: hidden width of the gap head (0: the base's ``d_model``).
        train_base: full fine-tuning: every base weight trains and no LoRA adapters are made (the
            ``lora_*`` settings and targets then do not apply).
    """

    lora_rank: int = 16
    lora_alpha: float = 32.0
    attention_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj")
    mlp_targets: tuple[str, ...] = MLP_MATRICES
    lora_token_head: bool = True
    time_groups: int = 2
    time_scale: float = 1000.0
    time_rank: int = 0
    gap_hidden: int = 0
    train_base: bool = False

    def __post_init__(self) -> None:
        self.attention_targets, self.mlp_targets = tuple(self.attention_targets), tuple(self.mlp_targets)
        for name, least in (("lora_rank", 1), ("time_groups", 1), ("time_rank", 0), ("gap_hidden", 0)):
            if getattr(self, name) < least:
                raise ValueError(f"{name} must be >= {least}, got {getattr(self, name)}")
        if self.time_scale <= 0:
            raise ValueError(f"time_scale must be > 0, got {self.time_scale}")
        for name, allowed in (("attention_targets", ATTENTION_PROJECTIONS), ("mlp_targets", MLP_MATRICES)):
            bad = [m for m in getattr(self, name) if m not in allowed]
            if bad:
                raise ValueError(f"{name} {bad} not among {list(allowed)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RetrofitConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown retrofit config keys {unknown}; valid keys: {sorted(known)}")
        return cls(**values)


def lora_target_pattern(config: RetrofitConfig, root: str = r"backbone\.") -> str:
    """The regular expression (full match on module paths) selecting the LoRA targets; ``root``
    ``""`` gives the paths in the base network itself."""
    block = "|".join((*config.attention_targets, *config.mlp_targets))
    options = [rf"blocks\.\d+\.({block})"] if block else []
    if config.lora_token_head:
        options.append("ff_out")
    if not options:
        raise ValueError("the retrofit config selects no LoRA target")
    return rf"{root}model\.transformer\.({'|'.join(options)})"


def is_retrofit_parameter(name: str) -> bool:
    """Whether a parameter (by its name in :class:`LLaDAFlexMDM`) is new: a retrofit module or a LoRA adapter."""
    return name.split(".")[0] in NEW_MODULES or ".lora_" in name


def trains(name: str, config: RetrofitConfig) -> bool:
    """Whether a retrofit of ``config`` trains the parameter ``name``: every one with ``train_base``, else the new ones."""
    return config.train_base or is_retrofit_parameter(name)


def retrofit_model_config(base: ModelConfig, config: RetrofitConfig) -> ModelConfig:
    """The :class:`ModelConfig` of the FlexMDM that :func:`retrofit` makes of a base network of config ``base``."""
    return dataclasses.replace(base, kind="flexmdm", architecture="llada", time_groups=config.time_groups,
                               time_scale=config.time_scale, time_rank=config.time_rank,
                               gap_hidden=config.gap_hidden)


def retrofit(mdm: LLaDAModel, config: RetrofitConfig | None = None, *, seed: int = 0) -> LLaDAFlexMDM:
    """Turn a pretrained LLaDA MDM into a FlexMDM whose only trainable parameters are the new ones
    (with ``config.train_base``: every parameter, and no adapters).

    At return the network's token logits equal the MDM's (on every id but PAD, which a FlexMDM
    never predicts): adaLN and the frozen-token vector start at zero and LoRA's B matrices too.

    Args:
        mdm: the pretrained network (modified in place: it becomes the frozen backbone).
        config: adapters and conditioning; default :class:`RetrofitConfig`.
        seed: initialisation of the new modules.
    """
    from peft import inject_adapter_in_model

    config = config or RetrofitConfig()
    model_config = retrofit_model_config(mdm.config, config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LLaDAFlexMDM(mdm, model_config)
        if not config.train_base:
            model = inject_adapter_in_model(lora_config(config), model)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(trains(name, config))
    model.retrofit_config = config
    return model


def lora_config(config: RetrofitConfig, root: str = r"backbone\.") -> Any:
    """The ``peft.LoraConfig`` of the adapters (targets under ``root``, see :func:`lora_target_pattern`)."""
    from peft import LoraConfig

    return LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=0.0, bias="none",
                      target_modules=lora_target_pattern(config, root))


def merge_adapters(model: nn.Module) -> nn.Module:
    """Fold every LoRA update into its base weight, in place, for fast inference.

    The outputs stay the same up to float rounding; LoRA's extra matmuls (and, on the LM head,
    a scaled add over ``[B, n, V]``) disappear. Save adapters *before* merging.
    """
    from peft.tuners.lora import LoraLayer

    for module in model.modules():
        if isinstance(module, LoraLayer) and not module.merged:
            module.merge()
    return model


def merged_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The state dict of a retrofitted network under the plain architecture's names.

    Each adapted weight is replaced by its merged value (what :func:`merge_adapters` computes: the
    base weight plus peft's delta, rounded to the base's dtype), one layer at a time; every other
    tensor is the network's own (no copy of the network). The ``lora_*`` tensors are dropped and
    peft's ``.base_layer`` removed from the names, so the result loads into the FlexMDM of the LLaDA
    architecture (hence :func:`flexmdm.models.load_pretrained` and ``flexmdm sample``). ``model``
    itself is not changed.
    """
    from peft.tuners.lora import LoraLayer

    state = model.state_dict()
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, LoraLayer) and not module.merged:
                weight = module.get_base_layer().weight
                delta = sum(module.get_delta_weight(adapter) for adapter in module.active_adapters)
                state[f"{name}.base_layer.weight"] = (weight + delta).to(weight.dtype)
    return {name.replace(".base_layer.", "."): tensor for name, tensor in state.items() if ".lora_" not in name}


def retrofit_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The tensors a :func:`retrofit` trains: the new modules' and adapters' or, with ``train_base``, all
    (works on EMA copies, whose flags are all off)."""
    config = model.retrofit_config
    return {name: tensor.detach().cpu().contiguous()
            for name, tensor in model.state_dict().items() if trains(name, config)}


def save_retrofit(model: LLaDAFlexMDM, directory: str | Path, *, metadata: dict[str, Any] | None = None) -> Path:
    """Write what the retrofit trains, atomically: the adapters and new modules, not the base weights
    (with ``train_base``: every weight, to ``retrofit_modules.safetensors``, and no ``peft`` files).

    The LoRA adapters are written as ``peft`` saves them for the base network (their names relative
    to the backbone), the new modules to ``retrofit_modules.safetensors``.

    Args:
        model: a network made by :func:`retrofit` (or an EMA copy of one).
        directory: target folder (replaced if it exists).
        metadata: extra entries for ``retrofit_config.json`` (schedules, vocabulary, ...).
    """
    config = getattr(model, "retrofit_config", None)
    if config is None:
        raise ValueError("model was not made by retrofit(): it has no retrofit_config")
    directory = Path(directory)
    tensors = _saveable(model)
    adapters = {PEFT_PREFIX + name.removeprefix(BACKBONE): tensor for name, tensor in tensors.items() if ".lora_" in name}
    modules = {name: tensor for name, tensor in tensors.items() if ".lora_" not in name}
    with atomic_directory(directory) as staging:
        save_file(modules, staging / MODULES_WEIGHTS_NAME, metadata={"format": "pt"})
        if not config.train_base:
            save_file(adapters, staging / ADAPTER_WEIGHTS_NAME, metadata={"format": "pt"})
            lora_config(config, root="").save_pretrained(str(staging))
        record = {"retrofit": config.to_dict(), "model": model.config.to_dict(), **(metadata or {})}
        (staging / RETROFIT_CONFIG_NAME).write_text(json.dumps(record, indent=2) + "\n")
    return directory


def _saveable(model: nn.Module) -> dict[str, Tensor]:
    """The new modules' tensors and the adapters' under the names ``peft`` saves them by (relative to
    ``model``, the adapter's name dropped)."""
    from peft import get_peft_model_state_dict

    tensors = retrofit_state_dict(model)
    if model.retrofit_config.train_base:
        return tensors
    modules = {name: tensor for name, tensor in tensors.items() if ".lora_" not in name}
    return {**modules, **get_peft_model_state_dict(model, state_dict=tensors)}


def load_retrofit(base: str | Path | LLaDAModel, directory: str | Path,
                  *, dtype: torch.dtype | None = None) -> tuple[LLaDAFlexMDM, dict[str, Any]]:
    """Re-attach saved adapters to a base LLaDA checkpoint (a ``train_base`` folder replaces every weight).

    Args:
        base: the base checkpoint folder (LLaDA layout) or the loaded base network.
        directory: a :func:`save_retrofit` folder.
        dtype: convert the base weights when loading from a folder.

    Returns:
        ``(the retrofitted network in eval mode, the whole retrofit_config.json)``.

    Raises:
        ValueError: the adapters do not fit the base (missing or unexpected tensors, shapes).
    """
    record = read_retrofit_record(directory)
    mdm = load_llada(base, dtype=dtype) if isinstance(base, (str, Path)) else base
    model = retrofit(mdm, RetrofitConfig.from_dict(record["retrofit"]))
    load_adapters(model, directory)
    return model.eval(), record


def read_retrofit_record(directory: str | Path) -> dict[str, Any]:
    """The ``retrofit_config.json`` of a :func:`save_retrofit` folder (its ``retrofit`` entry is the
    :class:`RetrofitConfig` the adapters were made with)."""
    return json.loads((Path(directory) / RETROFIT_CONFIG_NAME).read_text())


def setting_differences(saved: RetrofitConfig, wanted: RetrofitConfig) -> list[str]:
    """``name=value`` (``saved``'s value) for each setting in which ``saved`` differs from ``wanted``."""
    return [f"{f.name}={getattr(saved, f.name)!r}" for f in dataclasses.fields(RetrofitConfig)
            if getattr(saved, f.name) != getattr(wanted, f.name)]


def load_adapters(model: LLaDAFlexMDM, directory: str | Path) -> None:
    """Load a :func:`save_retrofit` folder's adapters and new modules into ``model``, in place.

    ``model`` is a :func:`retrofit` of the same base with the settings the folder was saved with
    (an earlier run's adapters as the start of the next, e.g. instruction tuning after adaptation).

    Raises:
        ValueError: the folder's retrofit settings differ from ``model``'s, or its tensors do not fit
            (missing or unexpected names, shapes).
    """
    from peft import set_peft_model_state_dict

    directory = Path(directory)
    differ = setting_differences(RetrofitConfig.from_dict(read_retrofit_record(directory)["retrofit"]),
                                 model.retrofit_config)
    if differ:
        raise ValueError(f"{directory} was saved with {', '.join(differ)}, not this retrofit's settings")
    with_adapters = not model.retrofit_config.train_base
    adapters = {BACKBONE + name.removeprefix(PEFT_PREFIX): tensor
                for name, tensor in load_file(directory / ADAPTER_WEIGHTS_NAME).items()} if with_adapters else {}
    modules = load_file(directory / MODULES_WEIGHTS_NAME)
    tensors, expected = {**modules, **adapters}, _saveable(model)
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{directory} does not fit the base: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for key, tensor in tensors.items():
        if tensor.shape != expected[key].shape:
            raise ValueError(f"{directory}: {key} has shape {list(tensor.shape)}, the base needs "
                             f"{list(expected[key].shape)}")
    model.load_state_dict(modules, strict=False)
    if with_adapters:
        set_peft_model_state_dict(model, adapters)
