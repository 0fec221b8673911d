"""The LLaDA architecture, loaded and saved natively (no remote code).

LLaDA (Nie et al. 2025) is a LLaMA-style transformer without a causal mask: token embedding,
pre-norm blocks of RMSNorm → multi-head attention with rotary positions (optionally grouped-query,
``n_kv_heads < n_heads``) and RMSNorm → SwiGLU MLP, a final RMSNorm and an untied LM head; no
biases anywhere. It is a masked diffusion model (MDM) that ignores the time.

**Checkpoint layout** (the released LLaDA-8B checkpoints; Nie et al., *Large Language Diffusion
Models*, arXiv:2502.09992). ``config.json`` holds the LLaDA fields (``d_model``,
``n_layers``, ``n_heads``, ``n_kv_heads``, ``mlp_hidden_size``, ``vocab_size``,
``embedding_size``, ``rope_theta``, ``max_sequence_length``, ``mask_token_id``,
``eos_token_id``, ...) and the weights are safetensors, either one ``model.safetensors`` or shards
listed in ``model.safetensors.index.json``, with the keys::

    model.transformer.wte.weight                      [embedding_size, d_model]
    model.transformer.blocks.{N}.attn_norm.weight     [d_model]
    model.transformer.blocks.{N}.q_proj.weight        [d_model, d_model]
    model.transformer.blocks.{N}.k_proj.weight        [n_kv_heads · head_dim, d_model]
    model.transformer.blocks.{N}.v_proj.weight        [n_kv_heads · head_dim, d_model]
    model.transformer.blocks.{N}.attn_out.weight      [d_model, d_model]
    model.transformer.blocks.{N}.ff_norm.weight       [d_model]
    model.transformer.blocks.{N}.ff_proj.weight       [mlp_hidden_size, d_model]   (gate)
    model.transformer.blocks.{N}.up_proj.weight       [mlp_hidden_size, d_model]
    model.transformer.blocks.{N}.ff_out.weight        [d_model, mlp_hidden_size]   (down)
    model.transformer.ln_f.weight                     [d_model]
    model.transformer.ff_out.weight                   [embedding_size, d_model]    (LM head)

The module tree of :class:`LLaDAModel` mirrors these names, so its ``state_dict`` *is* that
layout. Note that ``ff_out`` names both the per-block down projection and the LM head: code
that selects modules by the bare name ``ff_out`` hits both (or, by suffix rules, only one) —
:mod:`flexmdm.models.retrofit` selects them by full path.

**In flexmdm.** With ``ModelConfig(kind="mdm", architecture="llada")`` the trainer builds a
:class:`LLaDAModel` (see :func:`llada_config_from_model_config`); the FlexMDM variant (time
conditioning and gap head) is :class:`flexmdm.models.retrofit.LLaDAFlexMDM`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from flexmdm.atomic import atomic_directory
from flexmdm.models.config import ModelConfig
from flexmdm.models.layers import RotaryEmbedding, attention_mask
from flexmdm.vocab import Vocab

__all__ = [
    "LLaDAConfig",
    "LLaDABlock",
    "LLaDAModel",
    "Modulation",
    "llada_config_from_model_config",
    "model_config_from_llada",
    "read_llada_config",
    "load_llada",
    "save_llada",
    "write_tiny_llada_checkpoint",
    "LLADA_CONFIG_NAME",
    "LLADA_WEIGHTS_NAME",
    "LLADA_INDEX_NAME",
]

LLADA_CONFIG_NAME = "config.json"
LLADA_WEIGHTS_NAME = "model.safetensors"
LLADA_INDEX_NAME = "model.safetensors.index.json"

# LLaDA config.json fields whose values this implementation supports, and the value it needs.
_REQUIRED_VALUES = {
    "include_bias": False,
    "include_qkv_bias": False,
    "weight_tying": False,
    "alibi": False,
    "rope": True,
    "multi_query_attention": None,
    "attention_layer_norm": False,
    "input_emb_norm": False,
    "scale_logits": False,
}
_SUPPORTED_CHOICES = {
    "block_type": ("llama",),
    "activation_type": ("silu", "swiglu"),
    "layer_norm_type": ("rms",),
}


@dataclass
class LLaDAConfig:
    """The fields of a LLaDA ``config.json`` that define the network.

    Attributes:
        d_model: residual width.
        n_layers: blocks.
        n_heads: query heads.
        n_kv_heads: key/value heads (``n_heads`` without GQA; must divide ``n_heads``).
        mlp_hidden_size: SwiGLU hidden width.
        vocab_size: token ids the tokenizer produces (logits are cut to this width).
        embedding_size: rows of the embedding and LM head (``>= vocab_size``, padded for speed).
        rope_theta: rotary base (500000 in LLaDA-8B).
        max_sequence_length: longest context.
        mask_token_id: the MASK id (126336 in LLaDA-8B).
        eos_token_id: end of text; LLaDA pads with it.
        pad_token_id: padding id (defaults to ``eos_token_id``).
        rms_norm_eps: epsilon of every RMSNorm.
    """

    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    mlp_hidden_size: int
    vocab_size: int
    embedding_size: int
    rope_theta: float
    max_sequence_length: int
    mask_token_id: int
    eos_token_id: int
    pad_token_id: int | None = None
    rms_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.pad_token_id is None:
            self.pad_token_id = self.eos_token_id
        for name in ("d_model", "n_layers", "n_heads", "n_kv_heads", "mlp_hidden_size", "vocab_size",
                     "max_sequence_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ValueError(f"d_model={self.d_model} must split into {self.n_heads} heads of even width")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_kv_heads={self.n_kv_heads} must divide n_heads={self.n_heads}")
        if self.embedding_size < self.vocab_size:
            raise ValueError(f"embedding_size={self.embedding_size} is smaller than vocab_size={self.vocab_size}")
        for name in ("mask_token_id", "eos_token_id", "pad_token_id"):
            if not 0 <= getattr(self, name) < self.vocab_size:
                raise ValueError(f"{name}={getattr(self, name)} outside [0, vocab_size={self.vocab_size})")
        if self.mask_token_id == self.pad_token_id:
            raise ValueError("mask_token_id and pad_token_id must differ")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def vocab(self) -> Vocab:
        """flexmdm's view of the ids: MASK, and PAD = LLaDA's padding (EOS by default)."""
        return Vocab(self.vocab_size, self.mask_token_id, self.pad_token_id)

    def to_json_dict(self) -> dict[str, Any]:
        """A LLaDA-format ``config.json`` (no ``auto_map``: nothing here needs remote code)."""
        return {
            "model_type": "llada",
            "architectures": ["LLaDAModelLM"],
            **asdict(self),
            "n_kv_heads": self.n_kv_heads,
            "block_type": "llama",
            "activation_type": "silu",
            "layer_norm_type": "rms",
            "include_bias": False,
            "weight_tying": False,
            "rope": True,
            "alibi": False,
        }

    @classmethod
    def from_json_dict(cls, values: dict[str, Any]) -> LLaDAConfig:
        """Read a LLaDA ``config.json``; extra fields are ignored unless they change the network.

        Raises:
            ValueError: a required field is missing, or a field asks for something this
                implementation does not do (biases, tied weights, ALiBi, ...).
        """
        for key, needed in _REQUIRED_VALUES.items():
            value = values.get(key)
            if value is not None and (bool(value) if needed in (None, False) else value != needed):
                raise ValueError(f"LLaDA config {key}={value!r} is not supported (need {needed!r})")
        for key, choices in _SUPPORTED_CHOICES.items():
            if key in values and values[key] not in choices:
                raise ValueError(f"LLaDA config {key}={values[key]!r} is not supported (one of {list(choices)})")
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in values.items() if k in known and v is not None}
        kwargs.setdefault("n_kv_heads", kwargs.get("n_heads"))
        kwargs.setdefault("embedding_size", kwargs.get("vocab_size"))
        if "rms_norm_eps" not in kwargs and values.get("layer_norm_eps") is not None:
            kwargs["rms_norm_eps"] = values["layer_norm_eps"]
        missing = sorted(f.name for f in fields(cls) if f.default is not None and f.name not in kwargs
                         and f.name != "rms_norm_eps")
        if missing:
            raise ValueError(f"LLaDA config is missing {missing}")
        return cls(**kwargs)


def llada_config_from_model_config(config: ModelConfig) -> LLaDAConfig:
    """The LLaDA network of a flexmdm :class:`ModelConfig` (``mlp_hidden_size = mlp_ratio · d_model``)."""
    return LLaDAConfig(
        d_model=config.d_model,
        n_layers=config.n_layers,
        n_heads=config.n_heads,
        n_kv_heads=config.n_kv_heads or config.n_heads,
        mlp_hidden_size=round(config.mlp_ratio * config.d_model),
        vocab_size=config.vocab_size,
        embedding_size=config.vocab_size,
        rope_theta=config.rope_theta,
        max_sequence_length=config.max_length,
        mask_token_id=config.mask_id,
        eos_token_id=config.pad_id,
        pad_token_id=config.pad_id,
    )


def model_config_from_llada(config: LLaDAConfig) -> ModelConfig:
    """The flexmdm :class:`ModelConfig` (kind "mdm") of a LLaDA network read from its ``config.json``."""
    return ModelConfig(
        kind="mdm", architecture="llada", vocab_size=config.vocab_size, mask_id=config.mask_token_id,
        pad_id=config.pad_token_id, d_model=config.d_model, n_layers=config.n_layers, n_heads=config.n_heads,
        n_kv_heads=config.n_kv_heads, mlp_ratio=config.mlp_hidden_size / config.d_model,
        max_length=config.max_sequence_length, rope_theta=config.rope_theta,
    )


@dataclass
class Modulation:
    """adaLN parameters for one block, each ``[B, 1, d]``: norms become ``norm(h)·(1+scale)+shift``
    and residual branches ``(1+gate)·branch``, so all-zero modulation is the plain block."""

    shift_attn: Tensor
    scale_attn: Tensor
    gate_attn: Tensor
    shift_mlp: Tensor
    scale_mlp: Tensor
    gate_mlp: Tensor

    @classmethod
    def from_vector(cls, vector: Tensor) -> Modulation:
        """From ``[B, 6d]`` (the output of a modulation layer)."""
        return cls(*vector[:, None].chunk(6, dim=-1))


class LLaDABlock(nn.Module):
    """Bidirectional LLaMA block; attribute names are the LLaDA checkpoint's."""

    def __init__(self, config: LLaDAConfig) -> None:
        super().__init__()
        d, kv = config.d_model, config.n_kv_heads * config.head_dim
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.n_kv_heads, config.head_dim
        self.attn_norm = nn.RMSNorm(d, eps=config.rms_norm_eps)
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, kv, bias=False)
        self.v_proj = nn.Linear(d, kv, bias=False)
        self.attn_out = nn.Linear(d, d, bias=False)
        self.ff_norm = nn.RMSNorm(d, eps=config.rms_norm_eps)
        self.ff_proj = nn.Linear(d, config.mlp_hidden_size, bias=False)
        self.up_proj = nn.Linear(d, config.mlp_hidden_size, bias=False)
        self.ff_out = nn.Linear(config.mlp_hidden_size, d, bias=False)

    def forward(self, h: Tensor, rotary: tuple[Tensor, Tensor], mask: Tensor,
                modulation: Modulation | None = None) -> Tensor:
        """``h [B, n, d]``, ``mask [B, 1, n, n]`` (True = may attend) -> ``[B, n, d]``."""
        batch, n, d = h.shape
        x = self.attn_norm(h)
        if modulation is not None:
            x = x * (1 + modulation.scale_attn) + modulation.shift_attn
        q = self.q_proj(x).view(batch, n, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, n, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, n, self.n_kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = rotary
        q, k = RotaryEmbedding.rotate(q, cos, sin), RotaryEmbedding.rotate(k, cos, sin)
        if self.n_kv_heads != self.n_heads:
            repeat = self.n_heads // self.n_kv_heads
            k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        a = self.attn_out(a.transpose(1, 2).reshape(batch, n, d))
        h = h + (a if modulation is None else (1 + modulation.gate_attn) * a)
        x = self.ff_norm(h)
        if modulation is not None:
            x = x * (1 + modulation.scale_mlp) + modulation.shift_mlp
        m = self.ff_out(F.silu(self.ff_proj(x)) * self.up_proj(x))
        return h + (m if modulation is None else (1 + modulation.gate_mlp) * m)


class _Transformer(nn.Module):
    def __init__(self, config: LLaDAConfig) -> None:
        super().__init__()
        self.wte = nn.Embedding(config.embedding_size, config.d_model)
        self.blocks = nn.ModuleList(LLaDABlock(config) for _ in range(config.n_layers))
        self.ln_f = nn.RMSNorm(config.d_model, eps=config.rms_norm_eps)
        self.ff_out = nn.Linear(config.d_model, config.embedding_size, bias=False)


class LLaDAModel(nn.Module):
    """The LLaDA masked diffusion model; an MDM denoiser ``(x, t, lengths, frozen) -> logits``.

    Args:
        config: the network.
        model_config: the flexmdm :class:`ModelConfig` it was built from, if any (saved by
            :func:`flexmdm.models.save_pretrained`); derived from ``config`` otherwise.
    """

    def __init__(self, config: LLaDAConfig, model_config: ModelConfig | None = None) -> None:
        super().__init__()
        self.llada_config = config
        self.config = model_config or model_config_from_llada(config)
        self.model = nn.Module()
        self.model.transformer = _Transformer(config)
        self.reset_parameters()

    @property
    def transformer(self) -> _Transformer:
        return self.model.transformer

    def reset_parameters(self, std: float = 0.02) -> None:
        """Normal(0, std) matrices and embeddings, unit norms."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=std)
            elif isinstance(module, nn.RMSNorm):
                nn.init.ones_(module.weight)

    def rotary_tables(self, n: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """``(cos, sin)`` ``[n, head_dim / 2]`` in float32 (computed, not stored: meta-device safe)."""
        head_dim = self.llada_config.head_dim
        inv_freq = self.llada_config.rope_theta ** (
            -torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
        angles = torch.outer(torch.arange(n, device=device, dtype=torch.float32), inv_freq)
        return angles.cos(), angles.sin()

    def embed(self, x: Tensor) -> Tensor:
        """``x [B, n] -> [B, n, d]``."""
        return self.transformer.wte(x)

    def hidden_states(self, h: Tensor, lengths: Tensor | None,
                      modulations: list[Modulation] | None = None) -> Tensor:
        """Blocks and final norm: ``h [B, n, d] -> [B, n, d]``; keys ``>= lengths`` are ignored."""
        batch, n, _ = h.shape
        if lengths is None:
            lengths = torch.full((batch,), n, dtype=torch.long, device=h.device)
        rotary = tuple(table.to(h.dtype) for table in self.rotary_tables(n, h.device))
        mask = attention_mask(lengths, n)
        for index, block in enumerate(self.transformer.blocks):
            h = block(h, rotary, mask, None if modulations is None else modulations[index])
        return self.transformer.ln_f(h)

    def logits(self, hidden: Tensor) -> Tensor:
        """LM head, cut to ``vocab_size``, float32, MASK forbidden: ``[B, n, d] -> [B, n, V]``."""
        logits = self.transformer.ff_out(hidden)[..., : self.llada_config.vocab_size].float()
        # out of place: in float32 the cut is a view of the head's output, and a module output that is
        # a view written in place breaks FSDP's backward hooks
        mask = torch.tensor([self.llada_config.mask_token_id], device=logits.device)
        return logits.index_fill(-1, mask, float("-inf"))

    def forward(self, x: Tensor, t: Tensor | None = None, lengths: Tensor | None = None,
                frozen: Tensor | None = None) -> Tensor:
        """``(x [B, n], t [B] ignored, lengths [B], frozen ignored) -> token_logits [B, n, V]``."""
        return self.logits(self.hidden_states(self.embed(x), lengths))


# -- checkpoints in the LLaDA layout ---------------------------------------------------------------


def _read_tensors(directory: Path, dtype: torch.dtype | None) -> dict[str, Tensor]:
    index = directory / LLADA_INDEX_NAME
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        files = sorted(set(weight_map.values()))
    elif (directory / LLADA_WEIGHTS_NAME).is_file():
        files = [LLADA_WEIGHTS_NAME]
    else:
        raise FileNotFoundError(f"{directory} holds neither {LLADA_WEIGHTS_NAME} nor {LLADA_INDEX_NAME}")
    tensors = {}
    for name in files:
        with safe_open(str(directory / name), framework="pt") as handle:
            for key in handle.keys():
                tensor = handle.get_tensor(key)
                tensors[key] = tensor if dtype is None else tensor.to(dtype)
    return tensors


def read_llada_config(path: str | Path) -> LLaDAConfig:
    """The network described by a LLaDA ``config.json`` (a file, or a checkpoint folder holding one).

    Raises:
        FileNotFoundError: no such file.
        ValueError: an unsupported or incomplete config.
    """
    path = Path(path)
    if path.is_dir():
        path = path / LLADA_CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path.parent} is not a LLaDA checkpoint: {path.name} is missing"
                                if path.name == LLADA_CONFIG_NAME else f"no LLaDA config file at {path}")
    return LLaDAConfig.from_json_dict(json.loads(path.read_text()))


def load_llada(directory: str | Path, *, dtype: torch.dtype | None = None) -> LLaDAModel:
    """A LLaDA checkpoint (``config.json`` + safetensors, single file or sharded) as a :class:`LLaDAModel`.

    The network is built on the meta device and the checkpoint's tensors are assigned to it, so
    the weights are held in memory once.

    Args:
        directory: the checkpoint folder.
        dtype: convert the weights (e.g. ``torch.float32``); default: keep the checkpoint's.

    Raises:
        FileNotFoundError: no config or no weights.
        ValueError: unsupported config, or missing / unexpected / mis-shaped tensors (named).
    """
    directory = Path(directory)
    config = read_llada_config(directory / LLADA_CONFIG_NAME)
    tensors = _read_tensors(directory, dtype)
    with torch.device("meta"):
        model = LLaDAModel(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{directory}: LLaDA keys missing {missing[:5]}{'…' if len(missing) > 5 else ''}, "
                         f"unexpected {unexpected[:5]}{'…' if len(unexpected) > 5 else ''}")
    for key, tensor in tensors.items():
        if tensor.shape != expected[key].shape:
            raise ValueError(f"{directory}: {key} has shape {list(tensor.shape)}, "
                             f"the config implies {list(expected[key].shape)}")
    model.load_state_dict(tensors, assign=True)
    return model.eval()


def save_llada(model: LLaDAModel, directory: str | Path, *, max_shard_bytes: int | None = None) -> Path:
    """Write ``model`` in the LLaDA layout (atomically: a temporary sibling renamed into place).

    Args:
        model: the network.
        directory: target folder (replaced if it exists).
        max_shard_bytes: split the weights into ``model-0000k-of-0000K.safetensors`` shards of
            at most this size with a ``model.safetensors.index.json``; default one file.
    """
    directory = Path(directory)
    with atomic_directory(directory) as staging:
        tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        if max_shard_bytes is None:
            save_file(tensors, staging / LLADA_WEIGHTS_NAME, metadata={"format": "pt"})
        else:
            shards: list[dict[str, Tensor]] = [{}]
            size = 0
            for key, tensor in tensors.items():
                nbytes = tensor.numel() * tensor.element_size()
                if shards[-1] and size + nbytes > max_shard_bytes:
                    shards.append({})
                    size = 0
                shards[-1][key] = tensor
                size += nbytes
            weight_map = {}
            for number, shard in enumerate(shards, start=1):
                name = f"model-{number:05d}-of-{len(shards):05d}.safetensors"
                save_file(shard, staging / name, metadata={"format": "pt"})
                weight_map.update({key: name for key in shard})
            total = sum(t.numel() * t.element_size() for t in tensors.values())
            (staging / LLADA_INDEX_NAME).write_text(
                json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n")
        (staging / LLADA_CONFIG_NAME).write_text(json.dumps(model.llada_config.to_json_dict(), indent=2) + "\n")
    return directory


def write_tiny_llada_checkpoint(directory: str | Path, *, seed: int = 0, d_model: int = 32, n_layers: int = 2,
                                n_heads: int = 4, n_kv_heads: int = 2, mlp_hidden_size: int = 48,
                                vocab_size: int = 40, embedding_size: int = 48,
                                max_shard_bytes: int | None = None) -> Path:
    """A small random LLaDA checkpoint in the real key layout and config format (for tests).

    Written independently of :class:`LLaDAModel` (tensor names and shapes come from the
    released checkpoints' layout, module docstring),
    so loading it checks the layout rather than a round trip of our own naming. MASK is the last
    id, EOS the one before; norms get random weights too so that a mix-up of tensors shows.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    head_dim = d_model // n_heads

    def normal(*shape: int, std: float = 0.05) -> Tensor:
        return torch.randn(*shape, generator=generator) * std

    prefix = "model.transformer"
    tensors = {f"{prefix}.wte.weight": normal(embedding_size, d_model, std=0.5)}
    for n in range(n_layers):
        block = f"{prefix}.blocks.{n}"
        tensors.update({
            f"{block}.attn_norm.weight": 1 + normal(d_model, std=0.1),
            f"{block}.q_proj.weight": normal(d_model, d_model, std=0.2),
            f"{block}.k_proj.weight": normal(n_kv_heads * head_dim, d_model, std=0.2),
            f"{block}.v_proj.weight": normal(n_kv_heads * head_dim, d_model),
            f"{block}.attn_out.weight": normal(d_model, d_model),
            f"{block}.ff_norm.weight": 1 + normal(d_model, std=0.1),
            f"{block}.ff_proj.weight": normal(mlp_hidden_size, d_model),
            f"{block}.up_proj.weight": normal(mlp_hidden_size, d_model),
            f"{block}.ff_out.weight": normal(d_model, mlp_hidden_size),
        })
    tensors[f"{prefix}.ln_f.weight"] = 1 + normal(d_model, std=0.1)
    tensors[f"{prefix}.ff_out.weight"] = normal(embedding_size, d_model, std=0.2)
    config = {
        "model_type": "llada", "architectures": ["LLaDAModelLM"],
        "d_model": d_model, "n_layers": n_layers, "n_heads": n_heads, "n_kv_heads": n_kv_heads,
        "mlp_hidden_size": mlp_hidden_size, "mlp_ratio": mlp_hidden_size // d_model,
        "vocab_size": vocab_size, "embedding_size": embedding_size, "rope_theta": 500000.0,
        "max_sequence_length": 64, "mask_token_id": vocab_size - 1, "eos_token_id": vocab_size - 2,
        "pad_token_id": vocab_size - 2, "rms_norm_eps": 1e-5, "block_type": "llama",
        "activation_type": "silu", "layer_norm_type": "rms", "include_bias": False, "weight_tying": False,
        "rope": True, "alibi": False, "attention_layer_norm": False, "input_emb_norm": False,
        "scale_logits": False, "init_device": "meta", "precision": "amp_bf16",
    }
    (directory / LLADA_CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    if max_shard_bytes is None:
        save_file(tensors, directory / LLADA_WEIGHTS_NAME, metadata={"format": "pt"})
    else:
        weight_map, shard, number, size = {}, {}, 1, 0
        names = []
        for key, tensor in tensors.items():
            nbytes = tensor.numel() * 4
            if shard and size + nbytes > max_shard_bytes:
                names.append(shard)
                shard, size = {}, 0
            shard[key] = tensor
            size += nbytes
        names.append(shard)
        for number, shard in enumerate(names, start=1):
            name = f"model-{number:05d}-of-{len(names):05d}.safetensors"
            save_file(shard, directory / name, metadata={"format": "pt"})
            weight_map.update({key: name for key in shard})
        (directory / LLADA_INDEX_NAME).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}) + "\n")
    return directory
