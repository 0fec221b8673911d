"""The training loop for FlexMDM and MDM models.

One optimizer step consumes a *global batch* of ``train.batch_size`` sequences split into
``world_size × grad_accum`` micro-batches (shards). Shard ``s = rank · grad_accum + micro`` draws
its data, its training times (stratum ``s`` of a low-discrepancy sample over the global batch),
its interpolant noise and its dropout from generators keyed by ``(seed, step, s)`` (see
:mod:`flexmdm.training.streams`), so a run is a deterministic function of its configuration
whatever the number of ranks, the accumulation and the interruptions.

**Loss normalisation.** The objective of a step is the sum, over the global batch, of each
sequence's weighted loss (:func:`flexmdm.losses.flexmdm_loss` / :func:`~flexmdm.losses.mdm_loss`
``per_sequence``) divided by the number of tokens the model must generate in the *global*
batch: a per-token negative ELBO independent of how the batch is sharded.

**Metrics** (``output_dir/metrics.jsonl``, one row every ``log_every`` steps and at evaluations):
``step``, ``loss`` / ``token_loss`` / ``gap_loss`` (that step's global batch, per token),
``lr`` (used by that step), ``grad_norm`` (before clipping), ``tokens_per_s`` (data tokens of the
global batches per wall-clock second since the previous row), ``padding_fraction`` (share of the
positions fed to the network that hold no token: FlexMDM batches are cropped to their longest
x_t, or with ``train.length_buckets`` sorted by length and cut into sub-batches cropped each to
its own longest; with ``train.packing`` FlexMDM and autoregressive networks see no padding;
MDM ones are full canvases), and ``val_loss`` when computed: the loss of the
EMA weights (raw weights without EMA) on a fixed held-out set. With ``train.tensorboard`` the
same rows are also written as TensorBoard scalars to ``output_dir/tensorboard`` (a resumed run
hides the events logged after its checkpoint).

**Resuming** is automatic: when ``output_dir/checkpoints/latest`` exists, the run continues from
it (weights, EMA, optimizer, scheduler, step, RNG) and reproduces the uninterrupted run exactly; a
damaged newest checkpoint is skipped for the newest intact one
(:func:`~flexmdm.training.checkpoint.resume_point`), and both are said on stderr. Only
``train.{steps, log_every, eval_every, eval_batches, save_every, keep_last, device, tensorboard, compile,
activation_checkpointing}`` may change between the runs (and ``data.cache_dir``, where the text task caches its corpus).

**Interrupting**: the first SIGINT (Ctrl-C) or SIGTERM lets the current step finish, writes a
checkpoint and raises :class:`~flexmdm.training.interrupt.TrainingInterrupted` (under ``torchrun``
the ranks agree on the step to stop after); resuming continues exactly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from flexmdm.atomic import write_text_atomic
from flexmdm.families import family
from flexmdm.losses import LossOutput, sample_times
from flexmdm.models import ModelConfig, save_pretrained
from flexmdm.models.compiled import CompiledNetwork
from flexmdm.models.retrofit import save_retrofit
from flexmdm.objectives import states_to
from flexmdm.tasks.base import TrainingBatch
from flexmdm.training.checkpoint import (
    SHARDS_DIR,
    ResumePoint,
    checkpoint_path,
    load_shards,
    remove_stale_temporaries,
    resume_point,
    save_checkpoint,
    save_shards,
)
from flexmdm.training.config import Config, ConfigError, config_from_dict
from flexmdm.training.distributed import DistributedContext, init_distributed
from flexmdm.training.interrupt import StopRequest, TrainingInterrupted
from flexmdm.training.network import build_network
from flexmdm.training.sharding import full_state_dict, gradient_sync, local_value, meta_copy, wrap
from flexmdm.training.streams import keyed_generator

__all__ = ["EMA", "TrainResult", "learning_rate_factor", "read_metrics", "train"]

RESUMABLE_CHANGES = frozenset(
    f"train.{key}" for key in ("steps", "log_every", "eval_every", "eval_batches", "save_every", "keep_last", "device",
                               "tensorboard", "compile", "activation_checkpointing")
) | {"output_dir", "data.cache_dir"}  # where a task caches its data (text) may move
METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
ModelFactory = Callable[[ModelConfig], nn.Module]
"""Builds the network of a run in place of the configuration's own
(:func:`flexmdm.training.network.build_network`: a fresh network, or a retrofit of the base named
by ``retrofit.base``). Only parameters with ``requires_grad`` are optimised."""
MODEL_DIR = "model"
ADAPTERS_DIR = "adapters"
"""Where a run of a retrofitted network (one with a ``retrofit_config``) also writes its adapters
and new modules on their own (:func:`flexmdm.models.retrofit.save_retrofit`)."""


def read_metrics(output_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of a run's ``output_dir/metrics.jsonl``, in the order written (see **Metrics** above)."""
    lines = (Path(output_dir) / METRICS_FILE).read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


@dataclass
class TrainResult:
    """What a finished run produced.

    Attributes:
        output_dir: the run directory.
        model_dir: the exported model (``flexmdm sample`` it).
        steps: optimizer steps completed.
        loss: the loss of the last step logged (in an earlier session for a run resumed at its end).
        val_loss: the last validation loss, of this session or an earlier one (None if never computed).
        elapsed_s: wall-clock seconds this process spent in the loop.
        train_seconds: wall-clock seconds in the loop over every session of the run: a resumed run
            adds its own to those its checkpoint recorded (steps lost to an interruption are not
            counted); None when resumed from a checkpoint that did not record them.
        start_step: the step this session started from (0 for a new run; ``steps`` when the run
            was already trained to its end and nothing was left to do).
    """

    output_dir: Path
    model_dir: Path
    steps: int
    loss: float | None
    val_loss: float | None
    elapsed_s: float
    train_seconds: float | None
    start_step: int = 0


def learning_rate_factor(step: int, *, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """Multiplier of the peak learning rate used by optimizer step ``step`` (0-based).

    Linear warm-up ``(step + 1) / warmup_steps`` for the first ``warmup_steps`` steps, then a
    cosine from 1 down to ``min_lr_ratio``, reached at the last step ``total_steps − 1``.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(total_steps - 1 - warmup_steps, 1)
    progress = min((step - warmup_steps) / span, 1.0)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class EMA:
    """Exponential moving average of a model's trainable parameters (frozen ones and buffers are the
    model's own: a retrofit's base is not copied).

    After update number k (1-based) the average moves by ``1 − d_k`` towards the weights, with
    ``d_k = min(decay, k / (k + 9))``: the warm-up keeps the start-up weights from dominating
    short runs. Under FSDP the averages are sharded like the parameters they follow.

    Args:
        model: the model to follow (its current weights start the average).
        decay: the long-run decay in [0, 1).
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.shadow = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}

    def decay_at(self, update: int) -> float:
        """d_k for update number ``update`` (1-based)."""
        return min(self.decay, update / (update + 9))

    def _pairs(self, model: nn.Module) -> list[tuple[Tensor, Tensor]]:
        parameters = dict(model.named_parameters())
        return [(average, parameters[name]) for name, average in self.shadow.items()]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s weights."""
        self.updates += 1
        weight = 1.0 - self.decay_at(self.updates)
        for average, current in self._pairs(model):
            average.lerp_(current.detach(), weight)

    @contextlib.contextmanager
    def applied(self, model: nn.Module):
        """Inside, ``model``'s trainable parameters hold the averages (restored exactly on exit)."""
        pairs = self._pairs(model)
        with torch.no_grad():
            saved = [current.detach().clone() for _, current in pairs]
            for average, current in pairs:
                current.copy_(average)
        try:
            yield model
        finally:
            with torch.no_grad():
                for (_, current), value in zip(pairs, saved):
                    current.copy_(value)

    def state_dict(self) -> dict[str, Any]:
        return {"shadow": self.shadow, "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict` (or from a checkpoint whose EMA held the whole model)."""
        saved = state["shadow"] if "shadow" in state else state["model"]
        with torch.no_grad():
            for name, average in self.shadow.items():
                average.copy_(saved[name])
        self.updates = int(state["updates"])


@dataclass
class _Stats:
    """Per-step sums over micro-batches (and, once reduced, ranks), in this field order."""

    loss: float
    token: float
    gap: float
    generated: float
    positions: float
    live: float
    data_tokens: float

    @staticmethod
    def of_micro_batch(outs: list[LossOutput], positions: int, live: Tensor, data_tokens: Tensor) -> Tensor:
        """``[7]`` float64 sums of one micro-batch (its network passes ``outs``), kept on its
        device (no host sync)."""
        generated = sum(out.num_tokens.double() for out in outs)
        values = [sum(out.per_sequence.detach().double().sum() for out in outs),
                  sum(out.token_loss.detach().double() * out.num_tokens for out in outs),
                  sum(out.gap_loss.detach().double() * out.num_tokens for out in outs),
                  generated, torch.tensor(float(positions)), live.double(), data_tokens.double()]
        return torch.stack([v.to(generated.device) for v in values])


class _Run:
    """State of one training run on one rank (built by :func:`train`)."""

    def __init__(self, config: Config, ctx: DistributedContext, model_factory: ModelFactory | None = None):
        self.config, self.ctx, self.train_cfg = config, ctx, config.train
        self.output_dir = Path(config.output_dir)
        self.task = config.data.build_task()
        self.micro, self.accum = self.train_cfg.batching(ctx.world_size)
        insertion, unmasking = config.schedules.build()
        self.objective = family(config.model.kind).objective(
            {"insertion": insertion, "unmasking": unmasking}, self.task.vocab, self.task.max_length,
            packed=config.train.packing, gap_weight=config.train.gap_weight,
        )

        torch.manual_seed(self.train_cfg.seed)
        self.model = (model_factory(config.model) if model_factory else build_network(config)).to(ctx.device)
        self.skeleton = meta_copy(self.model)  # the unsharded module tree exports are assembled in
        self.network = wrap(self.model, self.train_cfg.strategy, ctx.device, ctx.world_size,
                            self.train_cfg.activation_checkpointing)
        self.sharded = self.train_cfg.strategy == "fsdp"  # checkpoints by torch.distributed.checkpoint
        self.gathering = self.sharded and ctx.enabled  # every forward pass is a collective
        self.ema = EMA(self.model, self.train_cfg.ema_decay) if self.train_cfg.ema_decay > 0 else None
        if self.train_cfg.compile:
            self.network = CompiledNetwork(self.network)

        trainable = [p for p in self.model.parameters() if p.requires_grad]
        matrices = [p for p in trainable if p.dim() >= 2]
        others = [p for p in trainable if p.dim() < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": matrices, "weight_decay": self.train_cfg.weight_decay},
             {"params": others, "weight_decay": 0.0}],
            lr=self.train_cfg.lr, betas=self.train_cfg.betas,
        )
        factor = functools.partial(
            learning_rate_factor, warmup_steps=self.train_cfg.warmup_steps,
            total_steps=self.train_cfg.steps, min_lr_ratio=self.train_cfg.min_lr_ratio,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)
        self.step = 0
        self.train_seconds: float | None = 0.0
        self.validation = self._validation_set()

    # -- data ---------------------------------------------------------------------------------

    def _shard_batches(self, step: int) -> list[tuple[int, TrainingBatch, torch.Generator]]:
        """This rank's micro-batches of global step ``step``: ``(shard, batch, its generator)``."""
        shards = range(self.ctx.rank * self.accum, (self.ctx.rank + 1) * self.accum)
        out = []
        for shard in shards:
            generator = keyed_generator(self.train_cfg.seed, "train", step, shard)
            out.append((shard, self.task.sample_batch(self.micro, generator, "train"), generator))
        return out

    def _validation_set(self) -> list[Any]:
        """A fixed list of held-out interpolated states (rank 0 only, but every rank under FSDP)."""
        if not (self.ctx.is_main or self.gathering):
            return []
        states = []
        for index in range(self.train_cfg.eval_batches):
            generator = keyed_generator(self.train_cfg.seed, "validation", index)
            batch = self.task.sample_batch(self.micro, generator, "validation")
            t = sample_times(self.micro, generator=generator, max_time=self.train_cfg.max_time)
            states.append(states_to(self.objective.states(batch, t, generator), self.ctx.device))
        return states

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.train_cfg.autocast != "bfloat16":
            return contextlib.nullcontext()
        return torch.autocast(self.ctx.device.type, dtype=torch.bfloat16)

    # -- one step -----------------------------------------------------------------------------

    def train_step(self) -> tuple[Tensor, Tensor, float]:
        """One optimizer step; returns ``(this rank's [7] sums of _Stats, grad norm, lr used)``."""
        self.network.train()
        shard_batches = self._shard_batches(self.step)
        normaliser = sum(self.objective.normaliser(batch) for _, batch, _ in shard_batches)
        normaliser = torch.as_tensor(normaliser, dtype=torch.float64, device=self.ctx.device)
        # DDP and FSDP average gradients over ranks: scale by world_size to get the global sum (on the
        # device, no host sync).
        scale = (self.ctx.world_size / self.ctx.all_reduce_sum(normaliser).clamp(min=1)).float()
        sums = torch.zeros(len(dataclasses.fields(_Stats)), dtype=torch.float64, device=self.ctx.device)
        for index, (shard, batch, generator) in enumerate(shard_batches):
            t = sample_times(
                self.micro, generator=generator, offset=shard * self.micro,
                total=self.train_cfg.batch_size, max_time=self.train_cfg.max_time,
                power=self.train_cfg.time_power,
            )
            states = states_to(self.objective.states(batch, t, generator), self.ctx.device)
            torch.manual_seed(keyed_generator(self.train_cfg.seed, "dropout", self.step, shard).initial_seed())
            passes = self.objective.passes(states, self.train_cfg.length_buckets)
            outs = []
            for number, piece in enumerate(passes):
                # DDP and FSDP reduce the gradients on the step's last backward pass only.
                last = index == len(shard_batches) - 1 and number == len(passes) - 1
                with gradient_sync(self.network, last):
                    with self._autocast():
                        outs.append(self.objective.loss(self.network, piece))
                    (outs[-1].per_sequence.sum() * scale).backward()
            positions = sum(self.objective.positions(piece) for piece in passes)
            sums += _Stats.of_micro_batch(outs, positions, self.objective.live(batch, states), batch.lengths.sum())
        max_norm = self.train_cfg.grad_clip if self.train_cfg.grad_clip > 0 else math.inf
        grad_norm = local_value(torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm))
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model)
        self.step += 1
        return sums, grad_norm, lr

    def _exported_weights(self) -> contextlib.AbstractContextManager:
        """Inside, the model holds the weights to validate, checkpoint for sampling and export: the
        EMA's when on."""
        return contextlib.nullcontext() if self.ema is None else self.ema.applied(self.model)

    @torch.no_grad()
    def validation_loss(self) -> float:
        """Per-token loss of the exported weights on the fixed held-out set (rank 0; every rank
        under FSDP)."""
        total, tokens = 0.0, 0.0
        with self._exported_weights():
            self.model.eval()
            for states in self.validation:
                with self._autocast():
                    out = self.objective.loss(self.model, states)
                total += float(out.per_sequence.double().sum())
                tokens += float(out.num_tokens)
        return total / max(tokens, 1.0)

    def exported(self) -> nn.Module | None:
        """The exported weights (the EMA's when on) as an unsharded module on rank 0, None on the other
        ranks. Unsharded, it shares the live tensors (no copy: valid until the next step); under FSDP
        the units are gathered one by one into CPU tensors on rank 0 (a collective)."""
        if self.gathering:
            with self._exported_weights():
                state = full_state_dict(self.model)
        else:
            state = {**self.model.state_dict(), **({} if self.ema is None else self.ema.shadow)}
        if not self.ctx.is_main:
            return None
        module = meta_copy(self.skeleton)
        module.load_state_dict(state, assign=True)
        return module

    # -- persistence --------------------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        """``config.json`` entries besides the model: what ``flexmdm sample`` needs."""
        return {
            "schedules": self.config.schedules.to_dict(),
            "vocab": self.task.vocab.to_config(),
            "task": self.config.data.to_dict(),
            "max_length": self.task.max_length,
            "step": self.step,
        }

    def tokenizer_dir(self) -> Path | None:
        directory = self.output_dir / "tokenizer"
        return directory if (directory / "tokenizer.json").is_file() else None

    def trainer_state(self) -> dict[str, Any]:
        """What ``trainer_state.pt`` holds; under FSDP the weights, optimizer and EMA averages are in
        the checkpoint's shards instead."""
        state = {
            "step": self.step,
            "train_seconds": self.train_seconds,
            "config": self.config.to_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": {"torch": torch.get_rng_state()},
        }
        if self.sharded:
            return {**state, "sharded": True, "ema": None if self.ema is None else {"updates": self.ema.updates}}
        return {**state, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "ema": None if self.ema is None else self.ema.state_dict()}

    def save(self) -> None:
        """Checkpoint between two barriers: rank 0 writes it, every rank its shards under FSDP."""
        self.ctx.barrier()
        shards = None
        if self.sharded:
            shards = save_shards(self.output_dir, self.step, self.model, self.optimizer,
                                 None if self.ema is None else self.ema.shadow, self.ctx)
        model = self.exported()
        if self.ctx.is_main:
            save_checkpoint(
                self.output_dir, self.step, export_model=model, state=self.trainer_state(),
                metadata=self.metadata(), tokenizer_dir=self.tokenizer_dir(), keep_last=self.train_cfg.keep_last,
                shards=shards,
            )
        self.ctx.barrier()

    def resume(self, point: ResumePoint) -> None:
        """Restore everything from the checkpoint ``point``."""
        state = point.state
        _check_resumable(config_from_dict(state["config"]).to_dict(), self.config.to_dict(), point.path)
        if self.sharded:
            load_shards(point.path / SHARDS_DIR, self.model, self.optimizer,
                        None if self.ema is None else self.ema.shadow)
            if self.ema is not None:
                self.ema.updates = int(state["ema"]["updates"])
        else:
            self.model.load_state_dict(state["model"])
            if self.ema is not None:
                self.ema.load_state_dict(state["ema"])
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        self.step = int(state["step"])
        self.train_seconds = state.get("train_seconds")


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _check_resumable(saved: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    """Refuse to resume when anything but the harmless train settings changed."""
    old, new = _flatten(saved), _flatten(current)
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k) and k not in RESUMABLE_CHANGES)
    if changed:
        key = changed[0]
        raise ConfigError(
            f"cannot resume from {path}: {key} was {old.get(key)!r}, now {new.get(key)!r}"
            f"{f' (and {len(changed) - 1} more)' if len(changed) > 1 else ''}; use a new output_dir"
        )


def _truncate_metrics(path: Path, step: int) -> list[dict[str, Any]]:
    """Drop rows after ``step`` (written after the checkpoint a resumed run restarts from); return the rows kept."""
    if not path.is_file():
        return []
    kept, rows = [], []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a row cut short by a kill
            continue
        if row.get("step", math.inf) <= step:
            kept.append(line + "\n")
            rows.append(row)
    write_text_atomic(path, "".join(kept))
    return rows


def _last_losses(rows: list[dict[str, Any]]) -> tuple[float | None, float | None]:
    """The last training loss and the last validation loss logged in ``rows`` (None where none is)."""
    def last(key: str) -> float | None:
        return next((row[key] for row in reversed(rows) if row.get(key) is not None), None)
    return last("loss"), last("val_loss")


def _metrics_row(step: int, totals: Tensor, lr: float, grad_norm: float, tokens_per_s: float) -> dict[str, Any]:
    """A metrics row from the global sums of :class:`_Stats` (given in its field order)."""
    stats = _Stats(*totals.tolist())
    generated = max(stats.generated, 1.0)
    return {
        "step": step,
        "loss": stats.loss / generated,
        "token_loss": stats.token / generated,
        "gap_loss": stats.gap / generated,
        "lr": lr,
        "grad_norm": grad_norm,
        "tokens_per_s": tokens_per_s,
        "padding_fraction": 1.0 - stats.live / max(stats.positions, 1.0),
    }


def train(config: Config, *, model_factory: ModelFactory | None = None, progress_line: int = 0) -> TrainResult:
    """Train (or resume) the run described by ``config``; see the module docstring.

    Under ``torchrun`` every rank calls this; only rank 0 writes files. The progress bar is labelled
    with the output directory's name and drawn on terminal line ``progress_line`` (give runs that
    share a terminal different lines).

    Returns:
        the run's :class:`TrainResult` (on every rank).
    """
    ctx = init_distributed(config.train.device)
    try:
        return _train(config, ctx, model_factory, progress_line)
    finally:
        ctx.shutdown()


class _MetricsLog:
    """Where rank 0 writes metrics rows: ``metrics.jsonl``, and TensorBoard when asked."""

    def __init__(self, output_dir: Path, step: int, tensorboard: bool):
        self.jsonl = open(output_dir / METRICS_FILE, "a")
        self.board = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # events after the checkpoint a resumed run restarts from are hidden (rows step + 1, ...)
            self.board = SummaryWriter(str(output_dir / TENSORBOARD_DIR), purge_step=step + 1)

    def write(self, row: dict[str, Any]) -> None:
        self.jsonl.write(json.dumps(row) + "\n")
        self.jsonl.flush()
        if self.board is not None:
            for key, value in row.items():
                if key != "step":
                    self.board.add_scalar(key, value, row["step"])
            self.board.flush()

    def close(self) -> None:
        self.jsonl.close()
        if self.board is not None:
            self.board.close()


def _stop_if_requested(run: _Run, stop: StopRequest, saved: bool) -> None:
    """On every rank: when any rank received SIGINT/SIGTERM, checkpoint this step (unless ``saved``
    already) and raise :class:`TrainingInterrupted`; the ranks agree through a collective."""
    signum = run.ctx.max_over_ranks(stop.signum or 0)
    if signum:
        if not saved:
            run.save()
        raise TrainingInterrupted(signum, run.step, checkpoint_path(run.output_dir, run.step))


def _announce_resume(point: ResumePoint, steps: int) -> None:
    """Say on stderr which damaged checkpoints were skipped and where the run resumes."""
    for reason in point.damaged:
        print(f"damaged checkpoint skipped: {reason}", file=sys.stderr)
    if point.step < steps:
        print(f"resuming from step {point.step} ({point.path})", file=sys.stderr)


def _train(config: Config, ctx: DistributedContext, model_factory: ModelFactory | None,
           progress_line: int) -> TrainResult:
    output_dir = Path(config.output_dir)
    metrics_path = output_dir / METRICS_FILE
    run = _Run(config, ctx, model_factory)
    point, logged = resume_point(output_dir), []
    if point is not None:
        run.resume(point)
    if ctx.is_main:
        if point is not None:
            _announce_resume(point, config.train.steps)
        output_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(output_dir)
        config.save(output_dir / "config.yaml")
        logged = _truncate_metrics(metrics_path, run.step)
        (output_dir / "tokenizer").mkdir(exist_ok=True)
        run.task.write_tokenizer(output_dir / "tokenizer")
    ctx.barrier()

    cfg, start_step = config.train, run.step
    loss, val_loss = _last_losses(logged)  # a resumed run's, until it logs its own
    start, earlier_seconds = time.perf_counter(), run.train_seconds
    last_time, tokens_since = start, 0.0
    progress = tqdm(total=cfg.steps, initial=run.step, disable=not ctx.is_main, desc=f"train {output_dir.name}",
                    position=progress_line, dynamic_ncols=True)
    stop = StopRequest()
    metrics = _MetricsLog(output_dir, run.step, cfg.tensorboard) if ctx.is_main else None
    closing = contextlib.closing(metrics) if metrics is not None else contextlib.nullcontext()
    with stop.catching(announce=ctx.is_main), progress, closing:
        while run.step < cfg.steps:
            sums, grad_norm, lr = run.train_step()
            step, final = run.step, run.step == cfg.steps
            progress.update(1)
            totals = ctx.all_reduce_sum(sums)
            tokens_since = tokens_since + totals[-1]
            evaluate = cfg.eval_batches > 0 and (final or (cfg.eval_every > 0 and step % cfg.eval_every == 0))
            if final or evaluate or step % cfg.log_every == 0:
                now = time.perf_counter()
                row = _metrics_row(step, totals, lr, float(grad_norm), float(tokens_since) / max(now - last_time, 1e-9))
                last_time, tokens_since = now, 0.0
                loss = row["loss"]
                if evaluate and (ctx.is_main or run.gathering):
                    val_loss = row["val_loss"] = run.validation_loss()
                if ctx.is_main:
                    metrics.write(row)
                    progress.set_postfix(loss=f"{loss:.4f}", tok_s=f"{row['tokens_per_s']:.0f}")
            if earlier_seconds is not None:
                run.train_seconds = earlier_seconds + time.perf_counter() - start
            saved = final or (cfg.save_every > 0 and step % cfg.save_every == 0)
            if saved:
                run.save()
            if not final:
                _stop_if_requested(run, stop, saved)
    elapsed = time.perf_counter() - start
    model_dir = output_dir / MODEL_DIR
    model = run.exported()
    if ctx.is_main:
        save_pretrained(model, model_dir, metadata=run.metadata(), tokenizer_dir=run.tokenizer_dir())
        if getattr(model, "retrofit_config", None) is not None:
            save_retrofit(model, output_dir / ADAPTERS_DIR, metadata=run.metadata())
    ctx.barrier()
    return TrainResult(output_dir, model_dir, run.step, loss, val_loss, elapsed, run.train_seconds, start_step)
