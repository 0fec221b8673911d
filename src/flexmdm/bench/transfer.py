"""``flexmdm bench transfer``: pretrain an MDM, retrofit it, instruction-tune both (paper §5.2 at CPU scale).

An MDM of the LLaDA architecture is pretrained (the text task) on standard-library functions and
GSM8K-format arithmetic prose (:mod:`flexmdm.tasks.transfer.data`: held-out modules and problems kept
out) and exported as a native LLaDA checkpoint. From it, side by side, for the same optimizer steps on
the same instruction pairs (coupling ``infill``: math rows have an empty suffix, the prompt coupling):
the MDM arm (``model.init``: LLaDA-style SFT on a fixed canvas, the response padded with PAD targets)
and the FlexMDM arm (the ``retrofit`` section: LoRA, time conditioning and a gap head, then the same
pairs). Every checkpoint is scored (:mod:`flexmdm.bench.budgets`); the final models give math accuracy
against sampling steps, held-out-module single-line infilling and HumanEval single-line pass@1
(:mod:`flexmdm.tasks.transfer.evaluation`). Each arm gets the same three sampler trials
(:func:`~flexmdm.bench.tuning.standard_trials`), chosen on validation for math (accuracy) and for code (parse rate) apart; the held-out
infills alternate between a validation and a test half.
"""

from __future__ import annotations

import sysconfig
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from flexmdm.bench.budgets import budget_rows, learning_curve
from flexmdm.bench.figures import accuracy_against_steps, infill_bars
from flexmdm.bench.side_by_side import train_side_by_side
from flexmdm.bench.skeleton import BenchRun, Column, bench_main, choose, format_rows, train_fields
from flexmdm.bench.tuning import DecoderTrial, standard_trials, tune
from flexmdm.families import SamplingOptions, family
from flexmdm.models import load_pretrained
from flexmdm.models.llada import save_llada
from flexmdm.pipeline import Pipeline
from flexmdm.tasks.transfer import TransferData, build_transfer_data
from flexmdm.tasks.transfer.evaluation import TransferEvaluation
from flexmdm.training.config import config_from_dict
from flexmdm.training.network import retrofit_run_config
from flexmdm.training.trainer import train

__all__ = ["TransferBenchSettings", "main", "run_transfer_benchmark"]


@dataclass
class TransferBenchSettings:
    """What the benchmark trains and evaluates (the default is the committed run)."""

    data: TransferData = field(default_factory=lambda: TransferData(num_test=100))
    model: dict[str, Any] = field(default_factory=lambda: {
        "d_model": 128, "n_layers": 4, "n_heads": 4, "mlp_ratio": 2.75, "rope_theta": 10000.0})
    pretrain: dict[str, Any] = field(default_factory=lambda: {
        "steps": 800, "batch_size": 64, "lr": 1e-3, "warmup_steps": 100, "weight_decay": 0.01, "ema_decay": 0.99,
        "log_every": 50, "eval_every": 200, "eval_batches": 8})
    retrofit: dict[str, Any] = field(default_factory=lambda: {"lora_rank": 16, "lora_alpha": 32.0, "time_groups": 2})
    insertion_schedule: dict[str, Any] = field(default_factory=lambda: {"name": "power_decay", "power": 4.0})
    ift: dict[str, Any] = field(default_factory=lambda: {
        "steps": 2000, "save_every": 500, "batch_size": 32, "warmup_steps": 50, "weight_decay": 0.01,
        "ema_decay": 0.99, "log_every": 50, "eval_every": 0, "eval_batches": 4})
    lr: dict[str, float] = field(default_factory=lambda: {"mdm": 5e-4, "flexmdm": 2e-3})
    sampling_steps: tuple[int, ...] = (8, 16, 32, 64)
    curve_steps: int = 16
    curve_examples: int = 50
    eval_batch: int = 100

    @classmethod
    def quick(cls) -> TransferBenchSettings:
        """A smoke run (about a minute on one thread; not a result): one standard-library package, a tiny model."""
        settings = cls(data=TransferData(
            vocab_size=512, max_length=96, middle_budget=16, held_out_fraction=0.3, num_train_problems=300,
            num_validation=12, num_test=16, max_steps=3, num_infill=12, num_humaneval=4,
            stdlib_root=str(Path(sysconfig.get_paths()["stdlib"]) / "email")),
            model={**cls().model, "d_model": 32, "n_layers": 2, "n_heads": 2},
            sampling_steps=(4, 8), curve_steps=4, curve_examples=8, eval_batch=16)
        settings.pretrain.update(steps=40, batch_size=16, warmup_steps=5, eval_every=20, eval_batches=1)
        settings.ift.update(steps=20, save_every=10, batch_size=8, warmup_steps=2, log_every=10)
        return settings


def _train_config(settings: TransferBenchSettings, arm: str, run: BenchRun, files, base: Path) -> dict[str, Any]:
    """The instruction tuning of one arm from the pretrained checkpoint ``base`` (same pairs, same steps)."""
    ift, data = settings.ift, {"task": "instruct", "path": str(files.ift), "tokenizer": str(files.tokenizer),
                               "coupling": "infill", "max_length": settings.data.max_length,
                               "middle_budget": settings.data.middle_budget}
    config = {"data": data, "output_dir": str(run.work / arm), "train": {
        **ift, "lr": settings.lr[arm], "seed": run.seed, "keep_last": ift["steps"] // ift["save_every"] + 1}}
    if not family(arm).inserts:  # LLaDA's SFT: every weight of the base trained as an MDM
        return {**config, "init": {"base": str(base)}}
    return retrofit_run_config({**config, "model": {}, "schedules": {"insertion": settings.insertion_schedule}},
                               base, settings.retrofit)


def run_transfer_benchmark(out: str | Path, *, quick: bool = False, seed: int = 0, work_dir: str | Path | None = None,
                           argv: list[str] | None = None, settings: TransferBenchSettings | None = None) -> dict[str, Any]:
    """Build the data, pretrain, tune both arms side by side, evaluate; write JSON + PNGs and return the record."""
    run = BenchRun.start(out, seed=seed, work_dir=work_dir, argv=argv)
    settings = choose(TransferBenchSettings, quick, settings)
    files = run.timed("data_seconds", build_transfer_data, run.work / "data", settings.data, seed)
    pretrain_config = {
        "model": {"kind": "mdm", "architecture": "llada", **settings.model, "max_length": settings.data.max_length},
        "data": {"task": "text", "source": str(files.corpus), "tokenizer": str(files.tokenizer),
                 "max_length": settings.data.max_length, "cache_dir": str(run.work / "cache")},
        "train": {**settings.pretrain, "seed": seed}, "output_dir": str(run.work / "pretrain")}
    pretrained = run.timed("pretrain_seconds", lambda: train(config_from_dict(pretrain_config)))
    base = save_llada(load_pretrained(pretrained.model_dir)[0], run.work / "base-llada")
    configs = {arm: _train_config(settings, arm, run, files, base) for arm in ("mdm", "flexmdm")}
    trained, threads = run.timed("ift_seconds", train_side_by_side, configs)
    budget, pipes = settings.data.middle_budget, {arm: Pipeline.from_pretrained(trained[arm].model_dir) for arm in configs}
    sets = TransferEvaluation(files.evaluation(), budget, settings.eval_batch, seed)

    def options(arm: str, trial: DecoderTrial, steps: int | None = None) -> SamplingOptions:
        return replace(trial, steps=steps or trial.steps).options(family(arm).inserts, temperature=0.0)

    tuning = {  # tune asks for the validation split only
        "math": tune(standard_trials(max(settings.sampling_steps)), lambda arm, trial, split: sets.math(
            pipes[arm], options(arm, trial), split), "accuracy", "mean_nfe"),
        "infill": tune(standard_trials(budget), lambda arm, trial, split: sets.infill(pipes[arm], options(arm, trial), split),
                       "parse_rate", "length_abs_error")}
    chosen = {task: {arm: DecoderTrial(**c) for arm, c in tuning[task]["choice"].items()} for task in tuning}
    math_rows, infill_rows = [], []
    for arm, pipe in pipes.items():
        fields, math_trial, infill_trial = train_fields(trained[arm], threads), chosen["math"][arm], chosen["infill"][arm]
        math_rows += [{"arm": arm, "split": "test", "steps": steps, "rule": math_trial.rule,
                       **sets.math(pipe, options(arm, math_trial, steps), "test"), **fields}
                      for steps in settings.sampling_steps]
        infill_rows.append({"arm": arm, "split": "test", "steps": budget, "rule": infill_trial.rule,
                            **sets.infill(pipe, options(arm, infill_trial), "test"),
                            **sets.humaneval(pipe, options(arm, infill_trial)), **fields})

    def score(pipe: Pipeline, arm: str) -> dict[str, Any]:  # one checkpoint, on a part of test
        return {**sets.math(pipe, options(arm, chosen["math"][arm], settings.curve_steps), "test", settings.curve_examples),
                **sets.infill(pipe, options(arm, chosen["infill"][arm]), "test", settings.curve_examples)}

    curves = {arm: learning_curve(trained[arm].output_dir, lambda pipe, arm=arm: score(pipe, arm), label=arm)
              for arm in configs}
    accuracy_against_steps(math_rows, run.png(), "Arithmetic word problems (test) after instruction tuning")
    infill_bars([{**r, "model": r["arm"], "setting": "held-out modules"} for r in infill_rows], run.png("_infill"))
    print(format_rows(math_rows, MATH_TABLE), format_rows(infill_rows, INFILL_TABLE), sep="\n\n")
    return run.write({
        "seeds": [seed], "split": "test", "math": math_rows, "infill": infill_rows, "curves": curves, "tuning": tuning,
        "budget": [{"arm": row["model"], **row} for row in budget_rows(curves, "accuracy")],
        "pretrain": {"corpus": files.meta["corpus"], "steps": pretrained.steps, "train_seconds": pretrained.train_seconds,
                     "seconds": run.phases["pretrain_seconds"], "final_val_loss": pretrained.val_loss},
        "arms": {arm: train_fields(trained[arm], threads) for arm in configs}, "data": files.meta,
        "phase_seconds": run.phases, "config": asdict(settings), "train_configs": configs,
        "plots": [run.png().name, run.png("_infill").name],
    })


MATH_TABLE: list[Column] = [("arm", "arm", "<8"), ("steps", "steps", ">5"), ("accuracy", "accuracy", ">8.3f"),
                            ("calls", "mean_nfe", ">7.1f")]
INFILL_TABLE: list[Column] = [("arm", "arm", "<8"), ("exact", "exact_match", ">6.3f"), ("parse", "parse_rate", ">6.3f"),
                              ("|len err|", "length_abs_error", ">9.2f"), ("pass@1", "pass_at_1", ">6.3f")]
main = bench_main(run_transfer_benchmark)  # ``flexmdm bench transfer``
