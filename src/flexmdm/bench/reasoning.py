"""``flexmdm bench reasoning``: FlexMDM against MDM on GSM8K-shaped word problems, accuracy and parallel
decoding (entropy-bounded MED, EB, early exit; second paper), under the fair rules (:mod:`flexmdm.bench.fair`).

The problems (:mod:`flexmdm.tasks.reasoning`, ``operations: extended``) take 2–4 steps on quantities
up to 99 (operands up to 9; ``max_steps``, ``max_value`` and ``max_operand`` raise them), in thirteen
phrasings of the four operations, so that traces vary from 11 to 30 tokens. For each training seed
(the problems fixed by ``--seed``) a FlexMDM and an MDM, same backbone and optimiser, train side by side
(:mod:`flexmdm.bench.seeds`), each with its own recipe (an :class:`~flexmdm.bench.train_config.Arm`
of :class:`~flexmdm.bench.reasoning_settings.ReasoningBenchSettings`; the FlexMDM's is
``configs/reasoning.yaml``'s: front-loaded insertion, a count head, the length embedding), both for
the same number of steps. Only the checkpoints at equal optimizer steps, equal training CPU time and
each model's last (its plateau) are decoded.

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

from dataclasses import asdict
from functools import cache, partial
from pathlib import Path
from typing import Any

import torch

from flexmdm.bench.budgets import Checkpoint
from flexmdm.bench.fair import PLATEAU, budget_points, fair_comparison
from flexmdm.bench.reasoning_report import TABLE, claims, decoding_methods, parallel_tuning, plot, summarize
from flexmdm.bench.reasoning_settings import ReasoningBenchSettings
from flexmdm.bench.seeds import train_seeds
from flexmdm.bench.skeleton import BenchRun, bench_main, choose, format_rows
from flexmdm.bench.tuning import ONE_PER_CALL, DecoderTrial
from flexmdm.evaluation.gsm8k import GSM8KSet, evaluate_gsm8k
from flexmdm.pipeline import Pipeline
from flexmdm.tasks.reasoning.inference import infilling_scores

__all__ = ["ReasoningBenchSettings", "main", "run_reasoning_benchmark"]

LAYOUTS = ("flexmdm", "mdm")


def run_reasoning_benchmark(out: str | Path, *, quick: bool = False, settings: ReasoningBenchSettings | None = None,
                            seed: int = 0, work_dir: str | Path | None = None, argv: list[str] | None = None,
                            seeds: int | None = None) -> dict[str, Any]:
    """Train both models for each of ``seeds`` (default ``settings.seeds``) training seeds, score the budget
    checkpoints and the decoders, write JSON + PNG and return the record."""
    run = BenchRun.start(out, seed=seed, work_dir=work_dir, argv=argv)
    settings = choose(ReasoningBenchSettings, quick, settings)
    configs = partial(settings.train_configs, problem_seed=seed, work=run.work)
    trained, threads = train_seeds(range(settings.seeds if seeds is None else seeds), configs)
    task = settings.task("mdm", seed)  # both layouts share the problems and the template
    template = task.template
    sets = {split: GSM8KSet.from_problems(template, task.held_out(split, count))
            for split, count in (("validation", settings.num_validation), ("test", settings.num_test))}
    decoders, pipe = decoding_methods(settings, template), cache(Pipeline.from_pretrained)

    @cache
    def decode(model: str, model_dir: Path, decoder: int, split: str, s: int) -> dict[str, Any]:
        """Accuracy, exact traces, calls and reasoning length of ``decoders[decoder]`` on ``split``."""
        _, _, rule, early_exit, _ = decoders[decoder]
        metrics, _ = evaluate_gsm8k(pipe(model_dir), template, sets[split], rule=rule,
                                    steps=settings.decode_steps(model, template), early_exit=early_exit,
                                    insertion=settings.arms[model].insertion, batch_size=settings.eval_batch,
                                    progress=False, generator=torch.Generator().manual_seed(s))
        return metrics

    def evaluate(model: str, point: Checkpoint, trial: DecoderTrial, split: str, s: int) -> list[dict[str, Any]]:
        return [decode(model, point.model_dir, 0, split, s)]  # the one trial: one token per call

    points = budget_points({s: {m: runs[m].output_dir for m in LAYOUTS} for s, runs in trained.items()}, plateau=True)
    trials = {m: [DecoderTrial(ONE_PER_CALL, settings.decode_steps(m, template),
                               getattr(settings.arms[m].insertion, "arrivals", None))] for m in LAYOUTS}
    fair = fair_comparison(points, trials, evaluate, metric="accuracy", cost="mean_nfe", by=(),
                           metrics=("accuracy", "trace_exact", "mean_nfe", "mean_reasoning_length", "well_formed"))
    rows = [{"seed": s, "model": m, "split": split, "method": method, "param": param, **extra,
             **decode(m, budgets[PLATEAU][m].model_dir, i, split, s)}
            for s, budgets in points.items() for m in LAYOUTS for split in ("validation", "test")
            for i, (method, param, _, _, extra) in enumerate(decoders)]
    summary, first = summarize(rows, settings.within), fair["seeds"][0]
    infilling = {"seed": first, "budget": PLATEAU}
    for m in LAYOUTS:
        model_pipe = pipe(points[first][PLATEAU][m].model_dir)
        infilling[m] = infilling_scores(model_pipe.kind, model_pipe.model, template, model_pipe.schedules,
                                        task.test_set(min(settings.num_posterior, settings.num_test)),
                                        steps=settings.decode_steps(m, template), insertion=settings.arms[m].insertion,
                                        prefix_fractions=settings.prefix_fractions, seed=first)
    fair["tuning"]["parallel_decoding"] = parallel_tuning(decoders, settings.within, fair["seeds"])
    plot(rows, fair["budgets"], run.png())
    print(format_rows(fair["budgets"], TABLE))
    return run.write({"config": asdict(settings), "train_configs": configs(first), **fair, "train_threads": threads,
                      "parallel_decoding": {"rows": rows, "summary": summary},
                      "claims": claims(fair["budgets"], summary), "reasoning_as_infilling": infilling,
                      "plot": run.png().name})


main = bench_main(run_reasoning_benchmark, lambda args: {"seeds": args.seeds})
