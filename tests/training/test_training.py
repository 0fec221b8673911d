"""Training: configuration, schedules, EMA, data streams, exact resume, atomicity, DDP."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from flexmdm.cli import main
from flexmdm.errors import InputFileError
from flexmdm.interpolant import FlexInterpolant
from flexmdm.schedules import LinearSchedule
from flexmdm.tasks.toy import ToyLanguage
from flexmdm.training import (EMA, ConfigError, TrainConfig, keyed_generator, learning_rate_factor, load_config,
                              read_metrics, train)
from flexmdm.training.config import config_from_dict
from flexmdm.training import checkpoint as checkpoint_module
from flexmdm.training.checkpoint import latest_checkpoint, load_trainer_state

TINY = {
    "model": {"kind": "flexmdm", "d_model": 32, "n_layers": 1, "n_heads": 2, "max_length": 16, "dropout": 0.1},
    "data": {"task": "toy", "max_a": 6, "max_b": 6, "prefix_probability": 0.2},
    "train": {
        "steps": 8, "batch_size": 8, "micro_batch_size": 4, "lr": 1e-3, "warmup_steps": 2, "ema_decay": 0.99,
        "log_every": 1, "eval_every": 4, "eval_batches": 2, "save_every": 4, "keep_last": 2, "seed": 3,
    },
}


def write_config(directory: Path, overrides: dict | None = None, name: str = "config.yaml") -> Path:
    """A tiny config (output under ``directory/run``) with nested ``overrides`` merged in."""
    raw = json.loads(json.dumps(TINY))
    for section, values in (overrides or {}).items():
        if isinstance(values, dict):
            raw.setdefault(section, {}).update(values)
        else:
            raw[section] = values
    raw.setdefault("output_dir", str(directory / "run"))
    path = directory / name
    path.write_text(yaml.safe_dump(raw))
    return path


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "flexmdm.cli", *args]


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


# -- configuration ------------------------------------------------------------------------------


def test_overrides_apply_and_defaults_resolve(tmp_path):
    path = write_config(tmp_path)
    config = load_config(path, [
        "train.lr=3e-3", "schedules.insertion.name=polynomial", "schedules.insertion.power=3",
        "model.d_model=48", "data.max_a=9", "train.betas=[0.8, 0.95]", f"output_dir={tmp_path / 'x'}",
    ])
    assert config.train.lr == 3e-3 and config.train.betas == (0.8, 0.95)
    assert config.schedules.insertion == {"name": "polynomial", "power": 3.0}
    assert config.schedules.unmasking == {"name": "linear"}
    assert config.model.d_model == 48 and config.model.vocab_size == 4  # vocab from the task
    assert config.data.options["max_a"] == 9 and config.data.build_task().max_length == 15
    assert config.output_dir == str(tmp_path / "x")
    assert config.train.max_time == pytest.approx(1 - 1e-3)


def test_saved_config_round_trips(tmp_path):
    config = load_config(write_config(tmp_path), ["schedules.unmasking=cosine"])
    config.save(tmp_path / "saved.yaml")
    again = load_config(tmp_path / "saved.yaml")
    assert again == config and again.to_dict() == config.to_dict()


@pytest.mark.parametrize("override, key", [
    ("train.lrr=1", "'train.lrr'"),
    ("bogus=1", "'bogus'"),
    ("model.width=3", "'model.width'"),
    ("data.colour=red", "'data.colour'"),
    ("schedules.insertion.power=2", "schedules.insertion"),  # linear has no power
    ("schedules.middle={name: linear}", "'schedules.middle'"),
])
def test_unknown_keys_are_named(tmp_path, override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(write_config(tmp_path), [override])


def test_unknown_key_in_file_is_named(tmp_path):
    path = write_config(tmp_path, {"train": {"warmup": 3}})
    with pytest.raises(ConfigError, match=r"'train\.warmup'"):
        load_config(path)


@pytest.mark.parametrize("override, key", [
    ("train.steps=0", "train.steps"),
    ("train.lr=fast", "train.lr"),
    ("train.betas=[0.9]", "train.betas"),
    ("train.ema_decay=1.0", "train.ema_decay"),
    ("train.autocast=float16", "train.autocast"),
    ("train.time_power=0", "train.time_power"),
    ("train.length_buckets=0", "train.length_buckets"),
    ("train.log_every=true", "train.log_every"),
    ("model.kind=gpt", "model.kind"),
    ("model.vocab_size=9", "model.vocab_size"),
    ("model.max_length=5", "model.max_length"),
    ("schedules.insertion.name=zigzag", "schedules.insertion"),
    ("data.task=nope", "data.task"),
    ("data.max_a=-1", "data.max_a"),
    ("output_dir=[1]", "output_dir"),
])
def test_invalid_values_are_named(tmp_path, override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(write_config(tmp_path), [override])


@pytest.mark.parametrize("override", ["train.lr", "=3", "train..lr=3", "train.lr=[1"])
def test_malformed_overrides(tmp_path, override):
    with pytest.raises(ConfigError, match="bad override"):
        load_config(write_config(tmp_path), [override])


def test_override_into_a_value_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match=r"'train\.lr' is a value"):
        load_config(write_config(tmp_path), ["train.lr.x=1"])


def test_missing_output_dir_and_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"train": {"steps": 3}}))
    with pytest.raises(ConfigError, match="output_dir"):
        load_config(path)
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "absent.yaml")


def test_batching():
    assert TrainConfig(batch_size=8, micro_batch_size=2).batching(2) == (2, 2)
    assert TrainConfig(batch_size=8, grad_accum=2).batching(1) == (4, 2)
    assert TrainConfig(batch_size=8).batching(2) == (4, 1)
    assert TrainConfig(batch_size=8, micro_batch_size=2, grad_accum=4).batching(1) == (2, 4)
    for bad in (TrainConfig(batch_size=8, micro_batch_size=3), TrainConfig(batch_size=8, micro_batch_size=2, grad_accum=3)):
        with pytest.raises(ConfigError, match="train.batch_size"):
            bad.batching(1)
    with pytest.raises(ConfigError, match=r"2 rank\(s\)"):
        TrainConfig(batch_size=3).batching(2)


# -- learning rate and EMA ----------------------------------------------------------------------


def test_learning_rate_schedule_values():
    factor = lambda s: learning_rate_factor(s, warmup_steps=10, total_steps=111, min_lr_ratio=0.1)  # noqa: E731
    assert factor(0) == pytest.approx(0.1)
    assert factor(4) == pytest.approx(0.5)
    assert factor(9) == pytest.approx(1.0)
    assert factor(10) == pytest.approx(1.0)
    assert factor(60) == pytest.approx(0.55)  # half-way through the cosine
    assert factor(110) == pytest.approx(0.1)
    assert factor(500) == pytest.approx(0.1)
    assert learning_rate_factor(0, warmup_steps=0, total_steps=1, min_lr_ratio=0.0) == 1.0


def test_ema_update_math():
    model = torch.nn.Linear(2, 1)
    ema = EMA(model, decay=0.9)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)  # d_1 = min(0.9, 1/10) = 0.1
    assert torch.allclose(ema.shadow["weight"], 0.1 * start + 0.9 * 1.0)
    for _ in range(99):
        ema.update(model)
    assert ema.decay_at(1) == pytest.approx(0.1) and ema.decay_at(81) == pytest.approx(0.9)
    assert ema.decay_at(1000) == 0.9
    expected = start
    for k in range(1, 101):
        d = min(0.9, k / (k + 9))
        expected = d * expected + (1 - d)
    assert torch.allclose(ema.shadow["weight"], expected, atol=1e-6)
    restored = EMA(torch.nn.Linear(2, 1), 0.9)
    restored.load_state_dict(ema.state_dict())
    assert restored.updates == 100 and torch.equal(restored.shadow["weight"], ema.shadow["weight"])


def test_ema_follows_trainable_parameters_only_and_applies_them_exactly():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 1))
    model[0].requires_grad_(False)  # a frozen base
    ema = EMA(model, decay=0.5)
    assert sorted(ema.shadow) == ["1.bias", "1.weight"]
    live = {name: p.detach().clone() for name, p in model.named_parameters()}
    with torch.no_grad():
        model[1].weight.add_(1.0)
    ema.update(model)  # d_1 = 0.1
    raw = model[1].weight.detach().clone()
    with ema.applied(model) as inside:
        assert inside is model and torch.equal(model[1].weight, ema.shadow["1.weight"])
        assert torch.equal(model[0].weight, live["0.weight"])  # frozen: the model's own
        assert not torch.equal(model[1].weight, raw)
    assert torch.equal(model[1].weight, raw)
    legacy = EMA(model, 0.5)  # a checkpoint written when the EMA held the whole model
    legacy.load_state_dict({"model": {**model.state_dict(), "1.weight": ema.shadow["1.weight"]}, "updates": 7})
    assert legacy.updates == 7 and torch.equal(legacy.shadow["1.weight"], ema.shadow["1.weight"])


# -- data ---------------------------------------------------------------------------------------


def test_keyed_generators_are_reproducible_and_distinct():
    a = torch.rand(4, generator=keyed_generator(0, "train", 5, 1))
    assert torch.equal(a, torch.rand(4, generator=keyed_generator(0, "train", 5, 1)))
    assert not torch.equal(a, torch.rand(4, generator=keyed_generator(0, "train", 5, 2)))
    assert not torch.equal(a, torch.rand(4, generator=keyed_generator(1, "train", 5, 1)))


def test_toy_language_batches():
    task = ToyLanguage(max_a=5, max_b=4, prefix_probability=0.5)
    batch = task.sample_batch(2000, torch.Generator().manual_seed(0))
    assert batch.x1.shape == (2000, 9) and task.vocab.size == 4
    sequences = [row[:n].tolist() for row, n in zip(batch.x1, batch.lengths.tolist())]
    assert all(task.is_member(s) for s in sequences)
    assert not task.is_member([1, 0]) and not task.is_member([])
    histogram = torch.bincount(batch.lengths, minlength=10).double() / 2000
    assert 0.5 * (histogram - task.length_distribution()).abs().sum() < 0.05
    assert task.length_distribution()[0] == 0 and task.length_distribution().sum() == pytest.approx(1.0)
    # frozen prefixes: a strict prefix, insertion only after it, accepted by the interpolant
    prefix = batch.frozen.sum(dim=1)
    assert bool((batch.frozen == (torch.arange(9) < prefix[:, None])).all())
    assert bool((prefix < batch.lengths.clamp(min=1)).all()) and 0.3 < float((prefix > 0).double().mean()) < 0.6
    assert bool(batch.allowed_regions[torch.arange(2000), prefix].all()) and bool((batch.allowed_regions.sum(1) == 1).all())
    states = FlexInterpolant(LinearSchedule(), LinearSchedule(), task.vocab).sample(
        batch.x1, batch.lengths, torch.rand(2000), frozen=batch.frozen, allowed_regions=batch.allowed_regions)
    assert bool((states.frozen.sum(dim=1) == prefix).all())
    canvas, frozen = batch.canvas(12, task.vocab.pad_id)
    assert canvas.shape == (2000, 12) and bool((canvas[:, 9:] == task.vocab.pad_id).all())
    assert torch.equal(frozen[:, :9], batch.frozen)


def test_toy_tokenizer(tmp_path):
    from tokenizers import Tokenizer

    assert ToyLanguage().write_tokenizer(tmp_path)
    tokenizer = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert tokenizer.encode("a a b").ids == [0, 0, 1] and tokenizer.decode([0, 1, 1]) == "a b b"


# -- training runs ------------------------------------------------------------------------------


def test_train_in_process_writes_everything(tmp_path):
    config = load_config(write_config(tmp_path))
    result = train(config)
    run = Path(config.output_dir)
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == list(range(1, 9)) and result.steps == 8
    assert {"loss", "token_loss", "gap_loss", "lr", "grad_norm", "tokens_per_s", "padding_fraction"} <= rows[0].keys()
    assert "val_loss" in rows[3] and "val_loss" in rows[7] and "val_loss" not in rows[4]
    assert all(math.isfinite(r["loss"]) and r["loss"] == pytest.approx(r["token_loss"] + r["gap_loss"]) for r in rows)
    assert all(0.0 <= r["padding_fraction"] < 1.0 for r in rows)
    assert rows[0]["lr"] == pytest.approx(5e-4) and rows[1]["lr"] == pytest.approx(1e-3)
    assert latest_checkpoint(run).name == "step_000008"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step_000004", "step_000008"]
    exported = json.loads((run / "model" / "config.json").read_text())
    assert exported["schedules"] == {"insertion": {"name": "linear"}, "unmasking": {"name": "linear"}}
    assert exported["vocab"] == {"size": 4, "mask_id": 2, "pad_id": 3} and exported["task"]["task"] == "toy"
    assert (run / "model" / "tokenizer.json").is_file()
    assert load_config(run / "config.yaml") == config
    # a finished run resumes as a no-op
    assert train(config).steps == 8 and len(read_metrics(run)) == 8


def test_mdm_training_runs(tmp_path):
    config = load_config(write_config(tmp_path, {"model": {"kind": "mdm"}}), ["train.steps=2", "train.eval_batches=1"])
    train(config)
    rows = read_metrics(Path(config.output_dir))
    assert rows[-1]["gap_loss"] == 0.0 and "val_loss" in rows[-1]
    # canvas of 12 positions, mean data length 6 -> about half the positions are PAD
    assert 0.3 < rows[-1]["padding_fraction"] < 0.7


def test_length_buckets_change_the_padding_not_the_objective(tmp_path):
    """Sub-batches sorted by len(x_t): same losses, gradients and weights, less padding."""
    base = {"model": {"dropout": 0.0}, "train": {"steps": 3, "eval_batches": 1, "eval_every": 0}}
    plain = load_config(write_config(tmp_path, {**base, "output_dir": str(tmp_path / "plain")}, "plain.yaml"))
    split = load_config(write_config(tmp_path, {**base, "output_dir": str(tmp_path / "split")}, "split.yaml"),
                        ["train.length_buckets=3"])
    train(plain)
    train(split)
    expected, observed = read_metrics(tmp_path / "plain"), read_metrics(tmp_path / "split")
    for key in ("loss", "token_loss", "gap_loss", "grad_norm", "val_loss"):
        a = [r[key] for r in expected if key in r]
        b = [r[key] for r in observed if key in r]
        assert len(a) == len(b) > 0 and b == pytest.approx(a, rel=1e-5, abs=1e-7), key
    assert all(b["padding_fraction"] < a["padding_fraction"] for a, b in zip(expected, observed))
    plain_state, split_state = (load_trainer_state(latest_checkpoint(tmp_path / run)) for run in ("plain", "split"))
    for name, weight in plain_state["model"].items():
        assert torch.allclose(split_state["model"][name], weight, rtol=1e-4, atol=1e-6), name


def test_length_buckets_are_for_flexmdm_only(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.length_buckets applies to FlexMDM"):
        load_config(write_config(tmp_path, {"model": {"kind": "mdm"}}), ["train.length_buckets=2"])


def test_gap_weight_weighs_the_insertion_loss_and_is_for_flexmdm_only(tmp_path):
    config = load_config(write_config(tmp_path), ["train.steps=2", "train.eval_batches=0", "train.gap_weight=0.3"])
    train(config)
    rows = [r for r in read_metrics(Path(config.output_dir)) if "gap_loss" in r]
    assert rows and all(r["loss"] == pytest.approx(r["token_loss"] + 0.3 * r["gap_loss"], rel=1e-5) for r in rows)
    with pytest.raises(ConfigError, match=r"train\.gap_weight weighs the FlexMDM insertion loss; model\.kind is 'mdm'"):
        load_config(write_config(tmp_path, {"model": {"kind": "mdm"}}), ["train.gap_weight=0.5"])
    with pytest.raises(ConfigError, match=r"train\.gap_weight"):
        load_config(write_config(tmp_path), ["train.gap_weight=0"])


def test_bfloat16_autocast_runs(tmp_path):
    config = load_config(write_config(tmp_path), ["train.steps=2", "train.autocast=bfloat16", "train.eval_batches=1"])
    assert math.isfinite(train(config).val_loss)


def test_failed_checkpoint_write_keeps_previous(tmp_path, monkeypatch):
    config = load_config(write_config(tmp_path), ["train.save_every=2", "train.eval_batches=0"])
    run = Path(config.output_dir)
    real_write = checkpoint_module._write_state

    def failing_write(path, state):
        if state["step"] == 4:
            real_write(path, state)  # the file is complete, the checkpoint not yet renamed
            raise OSError("disk full (injected)")
        real_write(path, state)

    monkeypatch.setattr(checkpoint_module, "_write_state", failing_write)
    with pytest.raises(OSError, match="injected"):
        train(config)
    assert latest_checkpoint(run).name == "step_000002"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step_000002"]
    # a stale temporary and an orphan later checkpoint (renamed, `latest` not yet moved) are harmless
    (run / "checkpoints" / ".tmp-step_000004-1").mkdir()
    monkeypatch.setattr(checkpoint_module, "_write_state", real_write)
    assert train(config).steps == 8
    assert latest_checkpoint(run).name == "step_000008"
    assert not list((run / "checkpoints").glob(".tmp-*"))
    assert [r["step"] for r in read_metrics(run)] == list(range(1, 9))


def test_resume_refuses_a_changed_config(tmp_path):
    config = load_config(write_config(tmp_path), ["train.steps=4", "train.eval_batches=0"])
    train(config)
    changed = load_config(write_config(tmp_path), ["train.steps=6", "train.lr=5e-3", "train.eval_batches=0"])
    with pytest.raises(ConfigError, match=r"train\.lr"):
        train(changed)


def test_training_time_accumulates_over_resumed_sessions(tmp_path):
    config = load_config(write_config(tmp_path), ["train.steps=4", "train.save_every=2", "train.eval_batches=0"])
    first = train(config)
    assert 0 < first.train_seconds <= first.elapsed_s
    again = train(config)  # finished already: no step is taken, the recorded time is reported
    assert again.steps == 4 and again.elapsed_s < first.elapsed_s
    assert again.train_seconds == first.train_seconds
    checkpoint = latest_checkpoint(tmp_path / "run")
    state = checkpoint_module.load_trainer_state(checkpoint)
    del state["train_seconds"]  # as in a checkpoint written before training time was recorded
    torch.save(state, checkpoint / checkpoint_module.STATE_FILE)
    assert train(config).train_seconds is None


def test_a_run_resumed_at_its_end_reports_its_logged_losses(tmp_path):
    """Rerunning a finished run (as a resumed benchmark does) reports the losses its log holds."""
    config = load_config(write_config(tmp_path), ["train.steps=4", "train.eval_every=2", "train.log_every=1"])
    first = train(config)
    assert first.loss is not None and first.val_loss is not None
    again = train(config)
    assert (again.steps, again.loss, again.val_loss) == (4, first.loss, first.val_loss)
    assert (first.start_step, again.start_step) == (0, 4)  # nothing was left to train
    assert again.val_loss == read_metrics(tmp_path / "run")[-1]["val_loss"]


@pytest.mark.e2e
def test_exact_resume_after_sigkill(tmp_path):
    settings = {"train": {"steps": 60, "save_every": 10, "eval_every": 20, "keep_last": 1}}
    reference = write_config(tmp_path, {**settings, "output_dir": str(tmp_path / "reference")}, "reference.yaml")
    killed = write_config(tmp_path, {**settings, "output_dir": str(tmp_path / "killed")}, "killed.yaml")
    env = subprocess_env()
    subprocess.run(cli("train", str(reference)), env=env, check=True, capture_output=True)

    process = subprocess.Popen(cli("train", str(killed)), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = tmp_path / "killed" / "checkpoints" / "latest"
    deadline = time.monotonic() + 120
    while not latest.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    interrupted_at = int(latest.read_text().split("_")[1])
    assert interrupted_at < 60, "the run finished before it could be killed"
    subprocess.run(cli("train", str(killed)), env=env, check=True, capture_output=True)

    expected, resumed = read_metrics(tmp_path / "reference"), read_metrics(tmp_path / "killed")
    assert [r["step"] for r in resumed] == list(range(1, 61))
    for key in ("loss", "token_loss", "gap_loss", "grad_norm", "lr", "val_loss"):
        assert [r.get(key) for r in resumed] == [r.get(key) for r in expected], key
    weights = [(tmp_path / run / "model" / "model.safetensors").read_bytes() for run in ("reference", "killed")]
    assert weights[0] == weights[1]


@pytest.mark.e2e
def test_ddp_matches_gradient_accumulation(tmp_path):
    common = {"train": {"steps": 4, "batch_size": 8, "micro_batch_size": 4, "save_every": 2, "eval_batches": 1}}
    single = write_config(tmp_path, {**common, "output_dir": str(tmp_path / "single")}, "single.yaml")
    double = write_config(tmp_path, {**common, "output_dir": str(tmp_path / "ddp")}, "ddp.yaml")
    env = subprocess_env()
    subprocess.run(cli("train", str(single)), env=env, check=True, capture_output=True)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run([*torchrun, "-m", "flexmdm.cli", "train", str(double)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    expected, observed = read_metrics(tmp_path / "single"), read_metrics(tmp_path / "ddp")
    assert [r["step"] for r in observed] == [1, 2, 3, 4]
    for key in ("loss", "token_loss", "gap_loss", "grad_norm", "val_loss", "padding_fraction"):
        a = [r[key] for r in expected if key in r]
        b = [r[key] for r in observed if key in r]
        assert len(a) == len(b) > 0 and b == pytest.approx(a, rel=1e-5, abs=1e-7), key
    assert latest_checkpoint(tmp_path / "ddp").name == "step_000004"


def torchrun(config: Path, **options) -> subprocess.Popen:
    """``flexmdm train config`` on 2 gloo ranks."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    return subprocess.Popen([*launcher, "-m", "flexmdm.cli", "train", str(config)], env=subprocess_env(), text=True,
                            **options)


def descendants(pid: int) -> list[int]:
    """The processes below ``pid`` (read from /proc), children first."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    out, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        out += children
        frontier = children
    return out


@pytest.mark.e2e
def test_fsdp_matches_one_process_and_resumes_exactly_after_a_kill(tmp_path):
    settings = {"train": {"steps": 24, "batch_size": 8, "micro_batch_size": 2, "save_every": 4, "eval_every": 8,
                          "eval_batches": 1, "keep_last": 1, "strategy": "fsdp"}}
    configs = {name: write_config(tmp_path, {**settings, "output_dir": str(tmp_path / name)}, f"{name}.yaml")
               for name in ("single", "sharded", "killed")}
    subprocess.run(cli("train", str(configs["single"])), env=subprocess_env(), check=True, capture_output=True)
    done = torchrun(configs["sharded"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert done.wait(300) == 0, done.stderr.read()[-3000:]

    # two ranks equal one process (gradients are reduced in another order: float tolerance)
    expected, observed = read_metrics(tmp_path / "single"), read_metrics(tmp_path / "sharded")
    assert [r["step"] for r in observed] == list(range(1, 25))
    for key in ("loss", "token_loss", "gap_loss", "grad_norm", "val_loss"):
        a, b = [r[key] for r in expected if key in r], [r[key] for r in observed if key in r]
        assert len(a) == len(b) > 0 and b == pytest.approx(a, rel=1e-5, abs=1e-7), key
    single, sharded = (load_file(tmp_path / run / "model" / "model.safetensors") for run in ("single", "sharded"))
    assert single.keys() == sharded.keys()
    for name in single:
        torch.testing.assert_close(sharded[name], single[name], rtol=1e-5, atol=1e-6)
    checkpoint = latest_checkpoint(tmp_path / "sharded")
    assert {p.name for p in (checkpoint / "sharded").iterdir()} == {".metadata", "__0_0.distcp", "__1_0.distcp"}
    assert "model" not in load_trainer_state(checkpoint) and "optimizer" not in load_trainer_state(checkpoint)

    # killed (launcher and both ranks) after a checkpoint, resumed on two ranks: the same run bit for bit
    process = torchrun(configs["killed"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = tmp_path / "killed" / "checkpoints" / "latest"
    deadline = time.monotonic() + 180
    while not latest.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    for pid in [process.pid, *descendants(process.pid)]:  # the launcher starts its ranks in sessions of their own
        with contextlib.suppress(ProcessLookupError):  # a worker may exit between listing and killing
            os.kill(pid, signal.SIGKILL)
    process.wait()
    interrupted_at = int(latest.read_text().split("_")[1])
    assert interrupted_at < 24, "the run finished before it could be killed"
    resumed = torchrun(configs["killed"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert resumed.wait(300) == 0, resumed.stderr.read()[-3000:]
    assert f"resuming from step {interrupted_at} (" in resumed.stderr.read()
    assert_same_run(tmp_path / "sharded", tmp_path / "killed")


def test_task_layout_follows_the_model_family(tmp_path):
    maze = {"task": "maze", "rooms": 2, "num_pairs": 20, "k_max": 2}
    config = config_from_dict({**TINY, "model": {**TINY["model"], "kind": "mdm", "max_length": 40}, "data": maze,
                               "output_dir": str(tmp_path)})
    assert config.data.options["layout"] == "mdm" and config.data.build_task().layout == "mdm"
    with pytest.raises(ConfigError, match="data.layout='mdm' contradicts model.kind='flexmdm'"):
        config_from_dict({**TINY, "model": {**TINY["model"], "max_length": 40}, "data": {**maze, "layout": "mdm"},
                          "output_dir": str(tmp_path)})


# -- interruptions and damaged checkpoints ------------------------------------------------------

INTERRUPTIBLE = {"train": {"steps": 60, "save_every": 25, "eval_every": 20, "keep_last": 1}}
"""A run long enough to be interrupted mid-way; its scheduled checkpoints (25, 50) are rarely where
a signal lands, so the interruption writes its own."""


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    """The output directory of the :data:`INTERRUPTIBLE` run, never interrupted."""
    directory = tmp_path_factory.mktemp("uninterrupted")
    subprocess.run(cli("train", str(write_config(directory, INTERRUPTIBLE))), env=subprocess_env(), check=True,
                   capture_output=True)
    return directory / "run"


def wait_for_rows(metrics: Path, rows: int, process: subprocess.Popen) -> None:
    """Until ``metrics`` holds ``rows`` rows (the training loop runs) or ``process`` ends."""
    deadline = time.monotonic() + 180
    while process.poll() is None and time.monotonic() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= rows:
            return
        time.sleep(0.005)


def assert_same_run(expected: Path, observed: Path) -> None:
    """Same metrics row by row (timing aside) and bit-identical exported weights."""
    a, b = read_metrics(expected), read_metrics(observed)
    assert [r["step"] for r in b] == [r["step"] for r in a]
    for key in ("loss", "token_loss", "gap_loss", "grad_norm", "lr", "val_loss"):
        assert [r.get(key) for r in b] == [r.get(key) for r in a], key
    weights = [(run / "model" / "model.safetensors").read_bytes() for run in (expected, observed)]
    assert weights[0] == weights[1]


@pytest.mark.e2e
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_checkpoints_the_step_and_resumes_exactly(tmp_path, uninterrupted, signum):
    config = write_config(tmp_path, INTERRUPTIBLE)
    process = subprocess.Popen(cli("train", str(config)), env=subprocess_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    wait_for_rows(tmp_path / "run" / "metrics.jsonl", 3, process)
    process.send_signal(signum)
    _, err = process.communicate(timeout=180)
    assert process.returncode == 128 + signum, err[-2000:]
    assert "Traceback" not in err
    stopped = re.search(r"stopped after step (\d+) \((SIGINT|SIGTERM), exit code (\d+)\)", err)
    assert stopped is not None, err[-2000:]
    step = int(stopped.group(1))
    assert 3 <= step < 60, "the run finished before it could be interrupted"
    assert stopped.group(3) == str(128 + signum)
    assert latest_checkpoint(tmp_path / "run").name == f"step_{step:06d}"

    resumed = subprocess.run(cli("train", str(config)), env=subprocess_env(), capture_output=True, text=True,
                             check=True)
    assert f"resuming from step {step} (" in resumed.stderr
    assert_same_run(uninterrupted, tmp_path / "run")


@pytest.mark.e2e
def test_sigint_under_torchrun_stops_every_rank_at_one_checkpoint(tmp_path, uninterrupted):
    config = write_config(tmp_path, INTERRUPTIBLE)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    process = subprocess.Popen([*torchrun, "-m", "flexmdm.cli", "train", str(config)], env=subprocess_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_rows(tmp_path / "run" / "metrics.jsonl", 3, process)
    process.send_signal(signal.SIGINT)  # the launcher passes it on to both ranks
    _, err = process.communicate(timeout=180)
    stopped = re.search(r"stopped after step (\d+) \(SIGINT, exit code 130\)", err)
    assert stopped is not None, err[-3000:]
    step = int(stopped.group(1))
    assert step < 60 and latest_checkpoint(tmp_path / "run").name == f"step_{step:06d}"
    # the ranks saved one consistent state: a single process finishes the run as the uninterrupted one
    subprocess.run(cli("train", str(config)), env=subprocess_env(), check=True, capture_output=True)
    expected, observed = read_metrics(uninterrupted), read_metrics(tmp_path / "run")
    assert [r["step"] for r in observed] == list(range(1, 61))
    for key in ("loss", "grad_norm", "val_loss"):
        a = [r[key] for r in expected if key in r]
        b = [r[key] for r in observed if key in r]
        assert len(a) == len(b) > 0 and b == pytest.approx(a, rel=1e-4, abs=1e-6), key


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_last_bit(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))


@pytest.mark.parametrize("damage, name, reason", [
    (truncate, "trainer_state.pt", "trainer_state.pt is unreadable"),
    (flip_last_bit, "model/model.safetensors", "model.safetensors does not match the checksum"),
    (truncate, "model/config.json", "config.json is not valid JSON"),
])
def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys, damage, name, reason):
    config = load_config(write_config(tmp_path), ["train.eval_batches=0"])  # checkpoints at 4 and 8
    train(config)
    run = Path(config.output_dir)
    expected = (run / "model" / "model.safetensors").read_bytes()
    damage(run / "checkpoints" / "step_000008" / name)
    capsys.readouterr()
    assert train(config).steps == 8
    err = capsys.readouterr().err
    assert f"damaged checkpoint skipped: {run / 'checkpoints' / 'step_000008'}" in err and reason in err
    assert f"resuming from step 4 ({run / 'checkpoints' / 'step_000004'})" in err
    assert (run / "model" / "model.safetensors").read_bytes() == expected  # steps 5..8 retrained exactly
    assert latest_checkpoint(run).name == "step_000008"
    assert [r["step"] for r in read_metrics(run)] == list(range(1, 9))


def test_no_intact_checkpoint_is_one_error(tmp_path):
    config = load_config(write_config(tmp_path), ["train.eval_batches=0", "train.keep_last=1"])
    train(config)
    truncate(Path(config.output_dir) / "checkpoints" / "step_000008" / "trainer_state.pt")
    with pytest.raises(InputFileError, match=r"no intact checkpoint in .*step_000008.*trainer_state\.pt"):
        train(config)


def test_finished_run_says_how_to_train_again(tmp_path, capsys):
    config = write_config(tmp_path, {"train": {"steps": 2, "eval_batches": 0}})
    assert main(["train", str(config)]) == 0
    capsys.readouterr()
    assert main(["train", str(config)]) == 0
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "is already trained to step 2 (train.steps=2)" in err
    assert "--set output_dir=DIR" in err and "--set train.steps=N" in err


def test_readme_torchrun_line_trains_a_run_of_its_own():
    """The README's torchrun line after its train line must not find that run already finished."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    lines = [line for line in readme.splitlines() if "flexmdm" in line and " train configs/toy.yaml" in line]
    plain = [line for line in lines if "torch.distributed.run" not in line]
    distributed = [line for line in lines if "torch.distributed.run" in line]
    assert plain and distributed
    outputs = {re.search(r"output_dir=(\S+)", line).group(1) if "output_dir=" in line else "runs/toy"
               for line in plain}
    for line in distributed:
        chosen = re.search(r"--set output_dir=(\S+)", line)
        assert chosen is not None and chosen.group(1) not in outputs, line


# -- TensorBoard --------------------------------------------------------------------------------


def test_tensorboard_scalars_beside_the_metrics(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = load_config(write_config(tmp_path), ["train.tensorboard=true", "train.steps=4"])
    train(config)
    events = EventAccumulator(str(Path(config.output_dir) / "tensorboard"))
    events.Reload()
    losses = [(e.step, e.value) for e in events.Scalars("loss")]
    rows = read_metrics(Path(config.output_dir))
    assert [s for s, _ in losses] == [r["step"] for r in rows]
    assert [v for _, v in losses] == pytest.approx([r["loss"] for r in rows])


def test_tensorboard_missing_is_one_config_error(tmp_path, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else find_spec(name, *a))
    with pytest.raises(ConfigError, match=r"train\.tensorboard: .*pip install tensorboard"):
        load_config(write_config(tmp_path), ["train.tensorboard=true"])


def test_a_repeated_signal_is_one_request_and_a_later_one_stops_at_once(monkeypatch):
    from flexmdm.training import interrupt

    monkeypatch.setattr(interrupt, "REPEAT_GRACE_S", 0.2)
    stop = interrupt.StopRequest()
    with stop.catching(announce=False):
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)  # e.g. torchrun passing on the terminal's Ctrl-C
        assert stop.signum == signal.SIGINT
        time.sleep(0.3)
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)  # pressed again: the usual Ctrl-C
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.parametrize("model", [{}, {"architecture": "llada", "dropout": 0.0, "n_heads": 4}], ids=["dit", "llada"])
def test_activation_checkpointing_changes_nothing_but_memory(tmp_path, model):
    """Same metrics and bit-identical weights (dropout included: the recomputation replays its RNG);
    the blocks' activations are recomputed in the backward pass."""
    from torch.distributed._composable.checkpoint_activation import checkpoint as composable

    runs = {}
    for flag in (False, True):
        overrides = {"model": {**TINY["model"], **model}, "train": {"activation_checkpointing": flag, "steps": 4},
                     "output_dir": str(tmp_path / str(flag))}
        runs[flag] = train(load_config(write_config(tmp_path, overrides, f"{flag}.yaml")))
    assert_same_run(runs[False].output_dir, runs[True].output_dir)
    resumed = {"model": {**TINY["model"], **model}, "train": {"activation_checkpointing": True, "steps": 6},
               "output_dir": str(tmp_path / "False")}  # a run may resume with it switched
    assert train(load_config(write_config(tmp_path, resumed, "resumed.yaml"))).steps == 6
    calls = []
    from flexmdm.training.distributed import DistributedContext
    from flexmdm.training.sharding import shard_units
    from flexmdm.training.trainer import _Run

    config = load_config(write_config(tmp_path, {"train": {"activation_checkpointing": True}}, "probe.yaml"))
    run = _Run(config, DistributedContext(0, 1, torch.device("cpu")))
    block = shard_units(run.model)[0]
    assert composable.state(block) is not None  # the block is checkpointed, its names unchanged
    inner = next(m for m in block.modules() if isinstance(m, torch.nn.Linear))
    inner.register_forward_hook(lambda *args: calls.append(1))
    run.train_step()
    assert len(calls) == 2 * config.train.batching(1)[1]  # forward, then the recomputation in backward


def test_fsdp_strategy_in_one_process_checkpoints_with_dcp_and_resumes_exactly(tmp_path, recwarn):
    """Without torchrun nothing is sharded: the run is the DDP-strategy run bit for bit, but its
    checkpoints are torch.distributed.checkpoint folders, and resuming from one reproduces the run."""
    runs = {}
    for strategy in ("ddp", "fsdp"):
        overrides = {"train": {"strategy": strategy}, "output_dir": str(tmp_path / strategy)}
        runs[strategy] = train(load_config(write_config(tmp_path, overrides, f"{strategy}.yaml")))
    assert_same_run(runs["ddp"].output_dir, runs["fsdp"].output_dir)
    step_8 = tmp_path / "fsdp" / "checkpoints" / "step_000008"
    assert (step_8 / "sharded" / ".metadata").is_file() and "model" not in load_trainer_state(step_8)
    expected = (tmp_path / "fsdp" / "model" / "model.safetensors").read_bytes()
    (step_8 / "sharded" / ".metadata").unlink()  # damaged: the run falls back to step 4 and retrains 5..8
    assert train(load_config(tmp_path / "fsdp.yaml")).steps == 8
    assert (tmp_path / "fsdp" / "model" / "model.safetensors").read_bytes() == expected
    assert not [w for w in recwarn if "torch.distributed" in str(w.message)]
