"""``flexmdm bench transfer``: pretrain an MDM, retrofit it, instruction-tune both (paper §5.2 at CPU scale).

An MDM of the LLaDA architecture is pretrained (the text task) on standard-library functions and
GSM8K-format arithmetic prose (:mod:`flexmdm.tasks.transfer.data`: held-out modules and problems kept
out) and exported as a native LLaDA checkpoint, the origin of both arms. From it, side by side and for
the same optimizer steps (:mod:`flexmdm.bench.transfer_settings`), on the same instruction pairs
(coupling ``infill``: math rows have an empty suffix, the prompt coupling): the MDM arm is fine-tuned
as LLaDA's SFT (a fixed canvas, the response padded with PAD targets) and the FlexMDM arm is the
origin's retrofit (time conditioning and a gap head; by default every weight trains), each after an
optional adaptation stage on the corpus (off by default). Every instruction-tuning checkpoint is scored
(:mod:`flexmdm.bench.budgets`); the final models give math accuracy against sampling steps,
held-out-module single-line infilling and HumanEval single-line pass@1
(:mod:`flexmdm.tasks.transfer.evaluation`), and ``prompt_use``: how much each arm's loss on the test
answers rises when another problem's question replaces their own. Each arm gets the same three sampler trials
(:func:`~flexmdm.bench.tuning.standard_trials`, the FlexMDM's grids with the settings' ``grid_insertion``),
chosen on validation for math (accuracy) and for code (parse rate) apart; the held-out infills alternate
between a validation and a test half.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from flexmdm.bench.budgets import budget_rows, learning_curve
from flexmdm.bench.figures import accuracy_against_steps, infill_bars
from flexmdm.bench.side_by_side import train_side_by_side
from flexmdm.bench.skeleton import BenchRun, Column, bench_main, choose, format_rows, train_fields
from flexmdm.bench.transfer_settings import Start, TransferBenchSettings, adapt_configs, ift_configs, pretrain_config
from flexmdm.bench.tuning import DecoderTrial, standard_trials, tune
from flexmdm.families import SamplingOptions, family
from flexmdm.models import load_pretrained
from flexmdm.models.llada import save_llada
from flexmdm.pipeline import Pipeline
from flexmdm.tasks.transfer import build_transfer_data
from flexmdm.tasks.transfer.evaluation import TransferEvaluation
from flexmdm.training.config import config_from_dict
from flexmdm.training.trainer import ADAPTERS_DIR, train

__all__ = ["TransferBenchSettings", "main", "run_transfer_benchmark"]


def run_transfer_benchmark(out: str | Path, *, quick: bool = False, seed: int = 0, work_dir: str | Path | None = None,
                           argv: list[str] | None = None, settings: TransferBenchSettings | None = None) -> dict[str, Any]:
    """Build the data, pretrain, adapt and tune both arms side by side, evaluate; write JSON + PNGs, return the record."""
    run = BenchRun.start(out, seed=seed, work_dir=work_dir, argv=argv)
    settings = choose(TransferBenchSettings, quick, settings)
    files = run.timed("data_seconds", build_transfer_data, run.work / "data", settings.data, seed)
    pretrained = run.timed("pretrain_seconds", lambda: train(config_from_dict(
        pretrain_config(settings, files, run.work, seed))))
    origin = save_llada(load_pretrained(pretrained.model_dir)[0], run.work / "base-llada")
    starts, adapting, adapted, adapt_threads = {"mdm": Start(origin), "flexmdm": Start(origin)}, {}, {}, 0
    if settings.adapt["steps"]:
        adapting = adapt_configs(settings, files, run.work, seed, origin)
        adapted, adapt_threads = run.timed("adapt_seconds", train_side_by_side, adapting)
        starts = {"mdm": Start(save_llada(load_pretrained(adapted["mdm"].model_dir)[0], run.work / "adapted-mdm-llada")),
                  "flexmdm": Start(origin, adapted["flexmdm"].output_dir / ADAPTERS_DIR)}
    configs = ift_configs(settings, files, run.work, seed, starts)
    trained, threads = run.timed("ift_seconds", train_side_by_side, configs)
    budget, pipes = settings.data.middle_budget, {arm: Pipeline.from_pretrained(trained[arm].model_dir) for arm in configs}
    sets = TransferEvaluation(files.evaluation(), budget, settings.eval_batch, seed)

    def options(arm: str, trial: DecoderTrial, steps: int | None = None) -> SamplingOptions:
        return replace(trial, steps=steps or trial.steps).options(family(arm).inserts, temperature=0.0)

    print("choosing each arm's sampler on validation: 3 trials for math, 3 for code", flush=True)
    math_trials = standard_trials(max(settings.sampling_steps), settings.grid_insertion)
    infill_trials = standard_trials(budget, settings.grid_insertion)
    tuning = {  # tune asks for the validation split only
        "math": tune(math_trials, lambda arm, trial, split: sets.math(pipes[arm], options(arm, trial), split),
                     "accuracy", "mean_nfe"),
        "infill": tune(infill_trials, lambda arm, trial, split: sets.infill(pipes[arm], options(arm, trial), split),
                       "parse_rate", "length_abs_error")}
    chosen = {task: {arm: DecoderTrial(**c) for arm, c in tuning[task]["choice"].items()} for task in tuning}
    prompt_use = {arm: sets.prompt_use(pipe, "test") for arm, pipe in pipes.items()}  # does each arm read its question?
    print("loss per answer token given its own question / another's (nats): " + ", ".join(
        f"{arm} {use['own']:.2f} / {use['other']:.2f}" for arm, use in prompt_use.items()), flush=True)
    math_rows, infill_rows = [], []
    for arm, pipe in pipes.items():
        print(f"testing {arm}: math at {list(settings.sampling_steps)} sampling steps, code infilling, HumanEval",
              flush=True)
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
        "seeds": [seed], "split": "test", "math": math_rows, "infill": infill_rows, "prompt_use": prompt_use,
        "curves": curves, "tuning": tuning,
        "budget": [{"arm": row["model"], **row} for row in budget_rows(curves, "accuracy")],
        "pretrain": {"corpus": files.meta["corpus"], "steps": pretrained.steps, "train_seconds": pretrained.train_seconds,
                     "seconds": run.phases["pretrain_seconds"], "final_val_loss": pretrained.val_loss},
        "adapt": {arm: {**train_fields(result, adapt_threads), "final_val_loss": result.val_loss}
                  for arm, result in adapted.items()},
        "arms": {arm: train_fields(trained[arm], threads) for arm in configs}, "data": files.meta,
        "phase_seconds": run.phases, "config": asdict(settings), "adapt_configs": adapting, "train_configs": configs,
        "plots": [run.png().name, run.png("_infill").name],
    })


MATH_TABLE: list[Column] = [("arm", "arm", "<8"), ("steps", "steps", ">5"), ("accuracy", "accuracy", ">8.3f"),
                            ("calls", "mean_nfe", ">7.1f")]
INFILL_TABLE: list[Column] = [("arm", "arm", "<8"), ("exact", "exact_match", ">6.3f"), ("parse", "parse_rate", ">6.3f"),
                              ("|len err|", "length_abs_error", ">9.2f"), ("pass@1", "pass_at_1", ">6.3f")]
main = bench_main(run_transfer_benchmark)  # ``flexmdm bench transfer``
