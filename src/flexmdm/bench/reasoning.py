"""``flexmdm bench reasoning``: FlexMDM against MDM on GSM8K-shaped word problems, accuracy and parallel
decoding (entropy-bounded MED, EB, early exit; second paper), under the fair rules (:mod:`flexmdm.bench.fair`).

The problems (:mod:`flexmdm.tasks.reasoning`, ``operations: extended``) take 2–6 steps on quantities
up to 999 with operands up to 99, in thirteen phrasings of the four operations, so that traces vary
from 11 to 65 tokens. For each training seed (the problems fixed by ``--seed``) a FlexMDM and an MDM,
same backbone and optimiser, train side by side (:mod:`flexmdm.bench.seeds`), each with its own recipe
(an :class:`~flexmdm.bench.train_config.Arm`; the FlexMDM's is ``configs/reasoning.yaml``'s: front-loaded
insertion, a count head, the length embedding) and the FlexMDM for more steps. Only the checkpoints at
equal optimizer steps, equal training CPU time and each model's last (its plateau) are decoded.

* **Accuracy** (the headline): one token per call (the FlexMDM with exact insertion), the one decoder
  each model is given, on the test problems at every budget, mean ± standard error over seeds; at the
  plateau also the validation gain over the checkpoint before it (``plateau_gain``).
* **Parallel decoding**: at the plateau checkpoints every decoder of the same grid for both models
  (:func:`~flexmdm.bench.reasoning_report.decoding_methods`) runs on validation and test; for each
  model and method the cheapest decoder within ``within`` of one token per call on validation is
  chosen, and its test speed-up and accuracy drop are reported over seeds.
* **Reasoning as infilling** (:func:`~flexmdm.tasks.reasoning.inference.infilling_scores`), on the
  first seed's plateau checkpoints only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import torch

from flexmdm.bench.budgets import Checkpoint
from flexmdm.bench.fair import PLATEAU, budget_points, fair_comparison
from flexmdm.bench.reasoning_report import TABLE, claims, decoding_methods, plot, summarize
from flexmdm.bench.seeds import train_seeds
from flexmdm.bench.skeleton import BenchRun, bench_main, choose, format_rows
from flexmdm.bench.train_config import Arm, arm_config
from flexmdm.bench.tuning import ONE_PER_CALL, DecoderTrial
from flexmdm.evaluation.gsm8k import GSM8KSet, evaluate_gsm8k
from flexmdm.pipeline import Pipeline
from flexmdm.sampling import Insertion
from flexmdm.tasks.reasoning import ReasoningTask
from flexmdm.tasks.reasoning.inference import infilling_scores

__all__ = ["ReasoningBenchSettings", "main", "run_reasoning_benchmark"]

LAYOUTS = ("flexmdm", "mdm")


def _default_arms() -> dict[str, Arm]:
    return {"flexmdm": Arm(steps=2000, save_every=250, model={"count_cap": 32, "length_conditioning": True},
                           schedules={"insertion": {"name": "power_decay", "power": 4.0}},
                           insertion=Insertion("exact", certainty=0.9)),
            "mdm": Arm(steps=1500, save_every=250)}


@dataclass
class ReasoningBenchSettings:
    """What the benchmark trains and evaluates: the full run by default (three seeds in about 33
    minutes of training on 2 idle cores), ``quick()`` a smoke run; ``num_validation`` (at most 256) and
    ``num_test`` problems of the held-out splits. Both models decode ``reasoning_width + answer_width`` steps unless an
    arm sets ``decode_steps``."""

    num_train: int = 20000
    min_steps: int = 2
    max_steps: int = 6
    max_value: int = 999
    max_operand: int = 99
    operations: str = "extended"
    seeds: int = 3
    num_validation: int = 256
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
    backbone: dict[str, Any] = field(default_factory=lambda: {"d_model": 64, "n_layers": 4, "n_heads": 4})
    train: dict[str, Any] = field(default_factory=lambda: {"batch_size": 48, "lr": 1e-3, "warmup_steps": 100,
        "weight_decay": 0.01, "ema_decay": 0.995, "log_every": 50, "eval_every": 0, "eval_batches": 4})
    arms: dict[str, Arm] = field(default_factory=_default_arms)

    @classmethod
    def quick(cls) -> ReasoningBenchSettings:
        settings = cls(num_train=5000, max_steps=4, seeds=2, num_test=100, med_thresholds=(0.1, 0.2),
                       eb_budgets=(0.1, 0.3), exit_med_thresholds=(0.2,), num_posterior=50)
        settings.arms["flexmdm"].steps, settings.arms["flexmdm"].save_every = 400, 100
        settings.arms["mdm"].steps, settings.arms["mdm"].save_every = 200, 100
        return settings

    def task(self, layout: str, seed: int) -> ReasoningTask:
        return ReasoningTask(num_train=self.num_train, problem_seed=seed, min_steps=self.min_steps,
                             max_steps=self.max_steps, max_value=self.max_value, max_operand=self.max_operand,
                             operations=self.operations, layout=layout)


def run_reasoning_benchmark(out: str | Path, *, quick: bool = False, settings: ReasoningBenchSettings | None = None,
                            seed: int = 0, work_dir: str | Path | None = None, argv: list[str] | None = None,
                            seeds: int | None = None) -> dict[str, Any]:
    """Train both models for each of ``seeds`` (default ``settings.seeds``) training seeds, score the budget
    checkpoints and the decoders, write JSON + PNG and return the record."""
    run = BenchRun.start(out, seed=seed, work_dir=work_dir, argv=argv)
    settings = choose(ReasoningBenchSettings, quick, settings)
    tasks = {layout: settings.task(layout, seed) for layout in LAYOUTS}
    data = {key: getattr(tasks["mdm"], key) for key in ("num_train", "problem_seed", "min_steps", "max_steps",
                                                        "max_value", "max_operand", "operations")}
    configs = lambda s: {name: arm_config(name, arm, backbone=settings.backbone, max_length=tasks[name].max_length,
                                          data={"task": "reasoning", **data}, train=settings.train, seed=s,
                                          output_dir=run.work / f"seed{s}" / name) for name, arm in settings.arms.items()}
    trained, threads = train_seeds(range(settings.seeds if seeds is None else seeds), configs)
    template = tasks["mdm"].template
    sets = {split: GSM8KSet.from_problems(template, tasks["mdm"].held_out(split, count))
            for split, count in (("validation", settings.num_validation), ("test", settings.num_test))}
    decoders = decoding_methods(settings, template)

    @cache
    def decode(model: str, model_dir: Path, decoder: int, split: str, s: int) -> dict[str, Any]:
        """Accuracy, exact traces, calls and reasoning length of ``decoders[decoder]`` on ``split``."""
        arm, (_, _, rule, early_exit, _) = settings.arms[model], decoders[decoder]
        metrics, _ = evaluate_gsm8k(Pipeline.from_pretrained(model_dir), template, sets[split], rule=rule,
                                    steps=arm.decode_steps or template.reasoning_width + template.answer_width,
                                    early_exit=early_exit, insertion=arm.insertion, batch_size=settings.eval_batch,
                                    progress=False, generator=torch.Generator().manual_seed(s))
        return metrics

    def evaluate(model: str, point: Checkpoint, trial: DecoderTrial, split: str, s: int) -> list[dict[str, Any]]:
        return [decode(model, point.model_dir, 0, split, s)]  # the one trial: one token per call

    points = budget_points({s: {m: runs[m].output_dir for m in LAYOUTS} for s, runs in trained.items()}, plateau=True)
    steps = template.reasoning_width + template.answer_width
    trials = {m: [DecoderTrial(ONE_PER_CALL, settings.arms[m].decode_steps or steps, "exact" if m == "flexmdm" else None)]
              for m in LAYOUTS}
    fair = fair_comparison(points, trials, evaluate, metric="accuracy", cost="mean_nfe", by=(),
                           metrics=("accuracy", "trace_exact", "mean_nfe", "mean_reasoning_length", "well_formed"))
    rows = [{"seed": s, "model": m, "split": split, "method": method, "param": param, **extra,
             **decode(m, budgets[PLATEAU][m].model_dir, i, split, s)} for s, budgets in points.items()
            for m in LAYOUTS for split in ("validation", "test") for i, (method, param, _, _, extra) in enumerate(decoders)]
    summary, first = summarize(rows, settings.within), fair["seeds"][0]
    infilling = {"seed": first, "budget": PLATEAU}
    for m in LAYOUTS:
        pipe = Pipeline.from_pretrained(points[first][PLATEAU][m].model_dir)
        infilling[m] = infilling_scores(pipe.kind, pipe.model, template, pipe.schedules,
                                        tasks[m].test_set(min(settings.num_posterior, settings.num_test)),
                                        steps=trials[m][0].steps, insertion=settings.arms[m].insertion,
                                        prefix_fractions=settings.prefix_fractions, seed=first)
    fair["tuning"]["parallel_decoding"] = {
        "split": "validation", "budget": PLATEAU, "seeds": fair["seeds"], "trials": [{"method": d[0], "param": d[1], **d[4]} for d in decoders],
        "criterion": f"per model and method, the fewest validation calls (mean over seeds) within {settings.within} "
                     "of one token per call's validation accuracy; the same grid for both models"}
    plot(rows, fair["budgets"], run.png())
    print(format_rows(fair["budgets"], TABLE))
    return run.write({"config": asdict(settings), "train_configs": configs(first), **fair, "train_threads": threads,
                      "parallel_decoding": {"rows": rows, "summary": summary},
                      "claims": claims(fair["budgets"], summary), "reasoning_as_infilling": infilling,
                      "plot": run.png().name})


main = bench_main(run_reasoning_benchmark, lambda args: {"seeds": args.seeds})
