"""``flexmdm bench reasoning``: entropy-based parallel decoding and early exit (second paper).

A FlexMDM and an MDM, same backbone and optimiser, train side by side on generated arithmetic word
problems (:mod:`flexmdm.tasks.reasoning`), each with its own recipe (an
:class:`~flexmdm.bench.train_config.Arm`); the FlexMDM's is ``configs/reasoning.yaml``'s
(front-loaded insertion, a count head, the length embedding), sampled with exact insertion and
certain counts. Every checkpoint decodes the test problems one token per call: the learning curves
give each model's accuracy at equal steps, equal training CPU time and its last checkpoint
(:mod:`flexmdm.bench.budgets`). The final models then decode (temperature 0) with one token per
call (``confidence_1``), MED (entropy below λ), EB (entropy budget γ) and MED with early exit on the
answer's entropy, on validation and test; the summary chooses on validation the cheapest decoder
within ``within`` of one token per call and reports its test row. Rows carry accuracy,
``trace_exact`` (the gold reasoning), network calls (``mean_nfe``) and reasoning length. Last,
reasoning as infilling (:func:`~flexmdm.tasks.reasoning.inference.infilling_scores`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from flexmdm.bench.budgets import budget_rows, learning_curve
from flexmdm.bench.reasoning_report import format_table, plot, summarize
from flexmdm.bench.side_by_side import train_side_by_side
from flexmdm.bench.skeleton import BenchRun, bench_main, choose, train_fields
from flexmdm.bench.train_config import Arm, arm_config
from flexmdm.evaluation.gsm8k import GSM8KSet, evaluate_gsm8k
from flexmdm.pipeline import Pipeline
from flexmdm.sampling import ConfidenceThreshold, EntropyBounded, EntropySum, Insertion
from flexmdm.tasks.reasoning import ReasoningTask
from flexmdm.tasks.reasoning.inference import AnswerEntropyExit, infilling_scores

__all__ = ["ReasoningBenchSettings", "decoding_methods", "main", "run_reasoning_benchmark"]


def _default_arms() -> dict[str, Arm]:
    return {
        "flexmdm": Arm(steps=12000, save_every=1000, model={"count_cap": 32, "length_conditioning": True},
                       schedules={"insertion": {"name": "power_decay", "power": 4.0}}, decode_steps=64,
                       insertion=Insertion("exact", certainty=0.9)),
        "mdm": Arm(steps=2000, save_every=500),
    }


@dataclass
class ReasoningBenchSettings:
    """What the benchmark trains and evaluates (the default is the committed result)."""

    num_train: int = 20000
    min_steps: int = 2
    max_steps: int = 5
    max_value: int = 9
    num_test: int = 300
    eval_batch: int = 300
    med_thresholds: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4)
    eb_budgets: tuple[float, ...] = (0.05, 0.1, 0.3, 1.0)
    exit_med_thresholds: tuple[float, ...] = (0.1, 0.2, 0.4)
    exit_threshold: float = 0.1
    exit_reduces: tuple[str, ...] = ("max",)
    within: float = 0.01
    num_posterior: int = 100
    prefix_fractions: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    backbone: dict[str, Any] = field(default_factory=lambda: {"d_model": 128, "n_layers": 4, "n_heads": 4})
    train: dict[str, Any] = field(default_factory=lambda: {"batch_size": 48, "lr": 1e-3, "warmup_steps": 100,
        "weight_decay": 0.01, "ema_decay": 0.995, "log_every": 50, "eval_every": 0, "eval_batches": 4})
    arms: dict[str, Arm] = field(default_factory=_default_arms)

    @classmethod
    def quick(cls) -> ReasoningBenchSettings:
        settings = cls(num_test=100, med_thresholds=(0.1, 0.2), eb_budgets=(0.1, 0.3), exit_med_thresholds=(0.2,),
                       exit_reduces=("max", "mean"), num_posterior=50)
        settings.arms["flexmdm"].steps, settings.arms["flexmdm"].save_every = 800, 200
        settings.arms["mdm"].steps, settings.arms["mdm"].save_every = 400, 100
        return settings

    def task(self, layout: str, seed: int) -> ReasoningTask:
        return ReasoningTask(num_train=self.num_train, problem_seed=seed, min_steps=self.min_steps,
                             max_steps=self.max_steps, max_value=self.max_value, layout=layout)


def decoding_methods(settings: ReasoningBenchSettings, template) -> list[tuple[str, Any, Any, Any, dict]]:
    """``(method, param, rule, early_exit, extra row fields)`` for every evaluated decoder."""
    out = [("confidence_1", 1, ConfidenceThreshold(threshold=2.0), None, {})]  # no top prob reaches 2: one per call
    out += [("med", lam, EntropyBounded(lam), None, {}) for lam in settings.med_thresholds]
    out += [("eb", gamma, EntropySum(gamma), None, {}) for gamma in settings.eb_budgets]
    for lam in settings.exit_med_thresholds:
        for reduce in settings.exit_reduces:
            criterion = AnswerEntropyExit.for_template(template, threshold=settings.exit_threshold, reduce=reduce)
            out.append(("med_exit", lam, EntropyBounded(lam), criterion,
                        {"exit_threshold": settings.exit_threshold, "exit_reduce": reduce}))
    return out


def _steps(arm: Arm, template) -> int:
    return arm.decode_steps or template.reasoning_width + template.answer_width


def _evaluate(pipe: Pipeline, arm: Arm, template, data: GSM8KSet, rule, early_exit, settings, seed) -> dict[str, Any]:
    """Accuracy, exact traces, calls and reasoning length of one decoder on ``data``."""
    metrics, _ = evaluate_gsm8k(pipe, template, data, rule=rule, steps=_steps(arm, template), early_exit=early_exit,
                                insertion=arm.insertion, batch_size=settings.eval_batch, progress=False,
                                generator=torch.Generator().manual_seed(seed))
    return metrics


def run_reasoning_benchmark(out: str | Path, *, quick: bool = False, settings: ReasoningBenchSettings | None = None,
                            seed: int = 0, work_dir: str | Path | None = None,
                            argv: list[str] | None = None) -> dict[str, Any]:
    """Train both models, score their checkpoints and decoders, write JSON + PNG and return the record."""
    run = BenchRun.start(out, seed=seed, work_dir=work_dir, argv=argv)
    settings = choose(ReasoningBenchSettings, quick, settings)
    data = {"task": "reasoning", "num_train": settings.num_train, "problem_seed": seed, "min_steps": settings.min_steps,
            "max_steps": settings.max_steps, "max_value": settings.max_value}
    configs = {name: arm_config(name, arm, backbone=settings.backbone, max_length=64, data=data, train=settings.train,
                                seed=seed, output_dir=run.work / name) for name, arm in settings.arms.items()}
    trained, threads = train_side_by_side(configs)
    results, curves, extras = [], {}, {}
    for name, arm in settings.arms.items():
        task = settings.task(name, seed)
        template, one_per_call = task.template, ConfidenceThreshold(threshold=2.0)
        test = GSM8KSet.from_problems(template, task.test_set(settings.num_test))
        validation = GSM8KSet.from_problems(template, task.splits["validation"])
        curves[name] = learning_curve(trained[name].output_dir, label=name, score=lambda pipe: _evaluate(
            pipe, arm, template, test, one_per_call, None, settings, seed))
        pipe = Pipeline.from_pretrained(trained[name].model_dir)
        for method, param, rule, criterion, extra in tqdm(decoding_methods(settings, template), desc=f"decode {name}"):
            for split, data in (("validation", validation), ("test", test)):
                metrics = _evaluate(pipe, arm, template, data, rule, criterion, settings, seed)
                results.append({"model": name, "split": split, "method": method, "param": param, **extra, **metrics})
        posterior = task.test_set(min(settings.num_posterior, settings.num_test))
        extras[name] = {**infilling_scores(pipe.kind, pipe.model, template, pipe.schedules, posterior,
                                           steps=_steps(arm, template), insertion=arm.insertion,
                                           prefix_fractions=settings.prefix_fractions, seed=seed),
                        **train_fields(trained[name], threads)}
    plot(results, curves, run.png())
    print(format_table(results))
    return run.write({
        "seeds": [seed], "split": "test", "config": asdict(settings), "train_configs": configs,
        "tuning": {"selected_on": "validation", "trials": "every decoder in results",
                   "choice": f"per method, the fewest calls within {settings.within} of one token per call"},
        "results": results, "curves": curves, "budgets": budget_rows(curves, "accuracy"),
        "summary": summarize(results, settings.within), "reasoning_as_infilling": extras, "plot": run.png().name,
    })


main = bench_main(run_reasoning_benchmark)
