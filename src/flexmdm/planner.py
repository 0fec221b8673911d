"""``flexmdm plan CONFIG``: parameters and memory per device of a training run, without its weights.

The network is built on the meta device (:func:`flexmdm.training.network.build_network` with
``meta=True``): shapes and ``requires_grad`` flags only; a retrofit reads only its base's
``config.json`` (or ``retrofit.base_config``), and its data section is not built. The counts are
those of the network ``flexmdm train`` would build.

**Memory model** (bytes per device; a model, not a measurement). N ranks; S = N under FSDP
sharding, S = 1 under DDP replication. P_f frozen and P_t trainable parameters; frozen ones held
in b_f bytes (2 for bfloat16, 4 for float32), trainable ones in float32. B sequences of L tokens
per micro-batch, n_layers blocks of width d with MLP hidden width m, V token ids; a = 2 bytes
per activation under ``train.autocast: bfloat16``, else 4::

    weights     = (b_f · P_f + 4 · P_t) / S
    gathered    = FSDP only: the unsharded root unit (every parameter outside the blocks:
                  embeddings, heads, time conditioning) for the whole step, plus two blocks
                  (the one running and the one prefetched), in their storage bytes
    gradients   = 4 · P_t / S, plus 4 · P_t for DDP's communication buckets
    optimizer   = 8 · P_t / S                     (AdamW's two float32 moments)
    ema         = 4 · P_t / S                     (an average of the trainable parameters; 0 without EMA)
    activations = B · L · n_layers · (13 d + 4 m) · a  +  B · L · V · 12
                  (with ``train.activation_checkpointing``: B · L · (n_layers · d + 13 d + 4 m) · a
                  + B · L · V · 12: each block keeps its input, one block's activations are
                  recomputed at a time)

Activations, per token and block, count what autograd keeps for the backward pass through a
pre-norm block with adaLN (gradients reach every block whenever any block has trainable
parameters): 13 vectors of width d (two norm inputs, two norm outputs, two modulated inputs,
q, k, v, the attention output and its projection's input, the two branch outputs before their
gates) and 4 of width m (SwiGLU's gate, its SiLU, the up projection and their product), with a
fused attention kernel (no n × n scores). The logits term is 3
float32 copies of ``[B · L, V]`` (the float cast, the log-softmax kept for backward, its
gradient). Heads other than the token head, allocator slack and the CUDA context are neglected.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["MemoryEstimate", "Plan", "add_plan_command", "estimate_memory", "plan", "render", "run_plan"]

GB = 1e9
STRATEGIES = ("ddp", "fsdp")
FROZEN_BYTES = {"bfloat16": 2, "float32": 4}


@dataclass
class MemoryEstimate:
    """Bytes per device of one strategy, by the formulas of the module docstring."""

    weights: float
    gathered: float
    gradients: float
    optimizer: float
    ema: float
    activations: float

    @property
    def total(self) -> float:
        return self.weights + self.gathered + self.gradients + self.optimizer + self.ema + self.activations

    def gigabytes(self) -> dict[str, float]:
        """Every term and the total in GB (10⁹ bytes), rounded to 0.01."""
        return {name: round(value / GB, 2) for name, value in {**asdict(self), "total": self.total}.items()}


@dataclass
class Plan:
    """What ``flexmdm plan`` reports (see :func:`plan`)."""

    config: str
    description: str
    world_size: int
    micro_batch: int
    seq_len: int
    strategy: str
    frozen_dtype: str
    activation_checkpointing: bool
    parameters_total: int
    parameters_trainable: int
    trainable_by_module: dict[str, int]
    memory: dict[str, MemoryEstimate]

    @property
    def trainable_fraction(self) -> float:
        return self.parameters_trainable / self.parameters_total

    def to_json(self) -> dict[str, Any]:
        return {
            "config": self.config, "network": self.description, "world_size": self.world_size,
            "micro_batch": self.micro_batch, "seq_len": self.seq_len, "strategy": self.strategy,
            "frozen_dtype": self.frozen_dtype, "activation_checkpointing": self.activation_checkpointing,
            "parameters_total": self.parameters_total,
            "parameters_trainable": self.parameters_trainable,
            "trainable_fraction": round(self.trainable_fraction, 6),
            "trainable_by_module": self.trainable_by_module,
            "memory_per_device_gb": self.memory[self.strategy].gigabytes()["total"],
            "memory_gb": {name: estimate.gigabytes() for name, estimate in self.memory.items()},
        }


def _bytes(parameter: Any, frozen_bytes: int) -> int:
    return parameter.numel() * (4 if parameter.requires_grad else frozen_bytes)


def estimate_memory(network: Any, model_config: Any, *, strategy: str, world_size: int, micro_batch: int,
                    seq_len: int, frozen_bytes: int, activation_bytes: int, ema: bool,
                    activation_checkpointing: bool = False) -> MemoryEstimate:
    """The memory model of the module docstring for ``network`` (meta or real) and its ``ModelConfig``."""
    parameters = list(network.parameters())
    trainable = sum(p.numel() for p in parameters if p.requires_grad)
    stored = sum(_bytes(p, frozen_bytes) for p in parameters)
    shards = world_size if strategy == "fsdp" else 1
    gathered = 0.0
    if strategy == "fsdp":
        from flexmdm.training.sharding import shard_units

        blocks = shard_units(network)
        in_blocks = sum(_bytes(p, frozen_bytes) for block in blocks for p in block.parameters())
        largest = max((sum(_bytes(p, frozen_bytes) for p in block.parameters()) for block in blocks), default=0)
        gathered = stored - in_blocks + 2 * largest
    d, layers = model_config.d_model, model_config.n_layers
    m = round(model_config.mlp_ratio * d)
    tokens = micro_batch * seq_len
    per_block = 13 * d + 4 * m
    kept = layers * d + per_block if activation_checkpointing else layers * per_block
    return MemoryEstimate(
        weights=stored / shards,
        gathered=gathered,
        gradients=4 * trainable / shards + (4 * trainable if strategy == "ddp" and world_size > 1 else 0),
        optimizer=8 * trainable / shards,
        ema=4 * trainable / shards if ema else 0.0,
        activations=tokens * kept * activation_bytes + tokens * model_config.vocab_size * 12,
    )


def _trainable_by_module(network: Any) -> dict[str, int]:
    """Trainable parameters by top-level module, LoRA adapters counted apart."""
    groups: dict[str, int] = {}
    for name, parameter in network.named_parameters():
        if parameter.requires_grad:
            group = "lora" if ".lora_" in name else name.split(".")[0]
            groups[group] = groups.get(group, 0) + parameter.numel()
    return groups


def _description(config: Any) -> str:
    model = config.model
    shape = (f"d_model {model.d_model}, {model.n_layers} layers, {model.n_heads} heads, "
             f"MLP {round(model.mlp_ratio * model.d_model)}, vocab {model.vocab_size}")
    if config.retrofit is not None:
        extra = config.retrofit
        training = "every base weight" if extra.train_base else f"LoRA rank {extra.lora_rank}"
        return (f"FlexMDM retrofit of the LLaDA checkpoint {extra.base} ({shape}); {training}, "
                f"time_groups {extra.time_groups}, time_rank {extra.time_rank or 'full'}, "
                f"gap_hidden {extra.gap_hidden or model.d_model}")
    return f"{model.kind} ({model.architecture}; {shape})"


def plan(path: str | Path, overrides: list[str] = (), *, world_size: int = 1, micro_batch: int | None = None,
         seq_len: int | None = None, strategy: str | None = None, frozen_dtype: str | None = None) -> Plan:
    """Build the network of the configuration at ``path`` on the meta device; count and estimate.

    Args:
        path, overrides: the configuration and its ``--set`` overrides.
        world_size: ranks.
        micro_batch: sequences per forward pass (default: ``train.batching(world_size)``'s).
        seq_len: tokens per sequence (default ``model.max_length``, the longest state).
        strategy: the column reported as ``memory_per_device_gb`` (both are estimated); default
            ``train.strategy``.
        frozen_dtype: storage of frozen parameters ("bfloat16" or "float32"); default
            ``retrofit.base_dtype`` (float32 without a retrofit).
    """
    from flexmdm.training.config import load_config
    from flexmdm.training.network import build_network

    config = load_config(path, overrides, check_data=False)
    network = build_network(config, meta=True)
    strategy = strategy or config.train.strategy
    frozen_dtype = frozen_dtype or (config.retrofit.base_dtype if config.retrofit is not None else "float32")
    micro = micro_batch or config.train.batching(world_size)[0]
    length = seq_len or config.model.max_length
    settings = dict(world_size=world_size, micro_batch=micro, seq_len=length, frozen_bytes=FROZEN_BYTES[frozen_dtype],
                    activation_bytes=2 if config.train.autocast == "bfloat16" else 4, ema=config.train.ema_decay > 0,
                    activation_checkpointing=config.train.activation_checkpointing)
    parameters = list(network.parameters())
    return Plan(
        config=str(path), description=_description(config), world_size=world_size, micro_batch=micro,
        seq_len=length, strategy=strategy, frozen_dtype=frozen_dtype,
        activation_checkpointing=config.train.activation_checkpointing,
        parameters_total=sum(p.numel() for p in parameters),
        parameters_trainable=sum(p.numel() for p in parameters if p.requires_grad),
        trainable_by_module=_trainable_by_module(network),
        memory={name: estimate_memory(network, config.model, strategy=name, **settings) for name in STRATEGIES},
    )


def _count(value: int) -> str:
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if value >= size:
            return f"{value / size:.2f} {unit}"
    return str(value)


def render(result: Plan) -> str:
    """The text report."""
    lines = [
        f"network: {result.description}",
        f"parameters: total {result.parameters_total:,} ({_count(result.parameters_total)}), trainable "
        f"{result.parameters_trainable:,} ({_count(result.parameters_trainable)}); trainable fraction "
        f"{result.trainable_fraction:.4f}",
        "trainable by module: " + ", ".join(f"{name} {_count(n)}" for name, n in result.trainable_by_module.items()),
        "",
        f"memory per device, GB (10^9 bytes), for {result.world_size} rank(s) x micro-batch {result.micro_batch} "
        f"x {result.seq_len} tokens:",
        f"  {'':<12}" + "".join(f"{name:>9}" for name in STRATEGIES),
    ]
    tables = {name: estimate.gigabytes() for name, estimate in result.memory.items()}
    for term in tables["ddp"]:
        lines.append(f"  {term:<12}" + "".join(f"{tables[name][term]:>9.2f}" for name in STRATEGIES))
    lines += [
        "",
        "This is a model, not a measurement (formulas: flexmdm.planner). Assumed: frozen parameters in "
        f"{result.frozen_dtype}, trainable ones, gradients, AdamW moments and an EMA of the trainable parameters "
        f"in float32; activations kept for backward {'with' if result.activation_checkpointing else 'without'} "
        "activation checkpointing, fused attention; fsdp: each block a unit, the rest one root unit "
        "(train.strategy: fsdp).",
    ]
    return "\n".join(lines)


# -- the command ----------------------------------------------------------------------------------


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_plan_command(commands: argparse._SubParsersAction) -> None:
    """Register ``flexmdm plan CONFIG [--world-size N --micro-batch B --seq-len L] [--json]``."""
    parser = commands.add_parser(
        "plan", help="count a config's parameters and estimate its memory per device, without weights",
        description="Builds the network of a training config on the meta device (a retrofit reads only its "
        "base's config.json) and prints its parameters, trainable fraction and a modelled memory per device "
        "under DDP replication and FSDP sharding.",
    )
    parser.add_argument("config", type=Path, help="YAML training configuration")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value (as for 'flexmdm train')")
    parser.add_argument("--world-size", type=_positive, default=1, help="ranks (default 1)")
    parser.add_argument("--micro-batch", type=_positive, default=None,
                        help="sequences per forward pass (default: the config's, for --world-size ranks)")
    parser.add_argument("--seq-len", type=_positive, default=None,
                        help="tokens per sequence (default model.max_length)")
    parser.add_argument("--strategy", choices=STRATEGIES, default=None,
                        help="the estimate reported as memory_per_device_gb (default train.strategy; both are "
                        "printed)")
    parser.add_argument("--frozen-dtype", choices=tuple(FROZEN_BYTES), default=None,
                        help="storage of frozen parameters (default retrofit.base_dtype)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the text report")
    parser.set_defaults(run=run_plan)


def run_plan(args: argparse.Namespace) -> int:
    """Print the plan of ``args.config``."""
    result = plan(args.config, args.overrides, world_size=args.world_size, micro_batch=args.micro_batch,
                  seq_len=args.seq_len, strategy=args.strategy, frozen_dtype=args.frozen_dtype)
    print(json.dumps(result.to_json(), indent=1) if args.json else render(result))
    return 0
