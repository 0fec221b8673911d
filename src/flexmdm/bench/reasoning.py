"""``flexmdm bench reasoning``: entropy-based parallel decoding and early exit (second paper).

A FlexMDM and an MDM with the same backbone and optimiser are trained side by side
(:mod:`flexmdm.bench.side_by_side`) on generated arithmetic word problems
(:mod:`flexmdm.tasks.reasoning`) in the question / reasoning / answer template, each with its own
recipe (:class:`Arm`: steps, model options, schedules, sampler). The FlexMDM's is that of
``configs/reasoning.yaml``: front-loaded insertion, a count head and the length embedding, sampled
with exact insertion and certain counts inserted at once.

* **Learning curves.** Every saved checkpoint decodes the test problems one token per call; from
  the curves come each model's accuracy at equal steps, equal training CPU time and its last
  checkpoint (:mod:`flexmdm.bench.budgets`).
* **Decoders** of the final models (temperature 0): ``confidence_1`` (one token per call, the most
  confident), ``med`` (every mask with entropy below λ), ``eb`` (EB-sampler, entropy budget γ) and
  ``med_exit`` (MED plus early exit once the answer's entropy is below γ_exit). Each runs on the
  validation and the test problems; the summary picks, on validation, the cheapest decoder within
  ``within`` of one token per call, and reports its test row.
* **Reasoning as infilling:** posterior sampling of the reasoning given the gold answer, and the
  model's log-probability of the gold answer given growing prefixes of the gold reasoning.

Rows report accuracy, ``trace_exact`` (the reasoning equals the gold one), mean network calls per
problem (``mean_nfe``, counted per sample by the samplers) and mean reasoning length.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from flexmdm.bench.budgets import budget_rows, saved_checkpoints
from flexmdm.bench.reasoning_report import format_row, format_table, plot, summarize
from flexmdm.bench.record import Stopwatch, command_line, machine_info, write_json
from flexmdm.bench.side_by_side import train_side_by_side
from flexmdm.families import SamplingOptions
from flexmdm.pipeline import Pipeline
from flexmdm.sampling import ConfidenceThreshold, EntropyBounded, EntropySum, Insertion
from flexmdm.tasks.reasoning import ReasoningTask, answers_match
from flexmdm.tasks.reasoning.inference import AnswerEntropyExit, ReasoningConditioning, answer_log_probability

__all__ = ["Arm", "ReasoningBenchSettings", "decoding_methods", "main", "run_reasoning_benchmark"]


@dataclass
class Arm:
    """How one model is trained and decoded.

    Attributes:
        steps: optimizer steps; a checkpoint every ``save_every`` steps makes its learning curve.
        model: model options added to the shared backbone.
        schedules: the ``schedules`` config section (None: the defaults).
        decode_steps: the sampler's ``steps``; None: one per slot the MDM canvas can generate.
        insertion: FlexMDM arrivals (None: the sampler's default, or none for an MDM).
    """

    steps: int
    save_every: int
    model: dict[str, Any] = field(default_factory=dict)
    schedules: dict[str, Any] | None = None
    decode_steps: int | None = None
    insertion: Insertion | None = None


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
    train: dict[str, Any] = field(default_factory=lambda: {
        "batch_size": 48, "lr": 1e-3, "warmup_steps": 100, "weight_decay": 0.01,
        "ema_decay": 0.995, "log_every": 50, "eval_every": 0, "eval_batches": 4,
    })
    arms: dict[str, Arm] = field(default_factory=_default_arms)

    @classmethod
    def quick(cls) -> ReasoningBenchSettings:
        settings = cls(num_test=100, med_thresholds=(0.1, 0.2), eb_budgets=(0.1, 0.3), exit_med_thresholds=(0.2,),
                       exit_reduces=("max", "mean"), num_posterior=50)
        settings.arms["flexmdm"] = dataclasses.replace(settings.arms["flexmdm"], steps=800, save_every=200)
        settings.arms["mdm"] = dataclasses.replace(settings.arms["mdm"], steps=400, save_every=100)
        return settings

    def task(self, layout: str, seed: int) -> ReasoningTask:
        return ReasoningTask(num_train=self.num_train, problem_seed=seed, min_steps=self.min_steps,
                             max_steps=self.max_steps, max_value=self.max_value, layout=layout)


def decoding_methods(settings: ReasoningBenchSettings, template) -> list[tuple[str, Any, Any, Any, dict]]:
    """``(method, param, rule, early_exit, extra row fields)`` for every evaluated decoder."""
    out: list[tuple[str, Any, Any, Any, dict]] = [
        ("confidence_1", 1, ConfidenceThreshold(threshold=2.0), None, {})  # no top prob reaches 2: one per call
    ]
    out += [("med", lam, EntropyBounded(lam), None, {}) for lam in settings.med_thresholds]
    out += [("eb", gamma, EntropySum(gamma), None, {}) for gamma in settings.eb_budgets]
    for lam in settings.exit_med_thresholds:
        for reduce in settings.exit_reduces:
            criterion = AnswerEntropyExit.for_template(template, threshold=settings.exit_threshold, reduce=reduce)
            out.append(("med_exit", lam, EntropyBounded(lam), criterion,
                        {"exit_threshold": settings.exit_threshold, "exit_reduce": reduce}))
    return out


def _train_config(settings: ReasoningBenchSettings, name: str, arm: Arm, work: Path, seed: int) -> dict[str, Any]:
    task = {"task": "reasoning", "num_train": settings.num_train, "problem_seed": seed, "min_steps": settings.min_steps,
            "max_steps": settings.max_steps, "max_value": settings.max_value}
    train = {**settings.train, "steps": arm.steps, "save_every": arm.save_every,
             "keep_last": arm.steps // arm.save_every + 1, "seed": seed}
    config = {"model": {"kind": name, **settings.backbone, **arm.model, "max_length": 64}, "data": task,
              "train": train, "output_dir": str(work / name)}
    if arm.schedules is not None:
        config["schedules"] = arm.schedules
    return config


def _sample(pipe: Pipeline, arm: Arm, template, questions, rule, *, answers=None, early_exit=None,
            generator: torch.Generator):
    steps = arm.decode_steps or template.reasoning_width + template.answer_width
    options = SamplingOptions(steps=steps, rule=rule, temperature=0.0, insertion=arm.insertion, early_exit=early_exit)
    return pipe.sample(ReasoningConditioning(template, questions, answers), max_length=template.canvas_width,
                       generator=generator, options=options)


def _gold_reasoning(template, ids) -> str:
    return " ".join(template.symbols[i] for i in ids)


def _evaluate(pipe: Pipeline, arm: Arm, template, data, rule, early_exit, settings, seed) -> dict[str, Any]:
    """Accuracy, exact traces, calls and reasoning length of one decoder on ``data``."""
    correct = exact = nfe = lengths = 0
    generator = torch.Generator().manual_seed(seed)
    for start in range(0, len(data), settings.eval_batch):
        stop = min(start + settings.eval_batch, len(data))
        out = _sample(pipe, arm, template, data.questions[start:stop], rule, early_exit=early_exit,
                      generator=generator)
        for row, seq in enumerate(out.sequences()):
            decoded = template.decode(seq, out.frozen[row, : len(seq)].tolist())
            correct += answers_match(decoded.answer, str(data.problems[start + row].answer))
            exact += decoded.reasoning == _gold_reasoning(template, data.reasonings[start + row])
            lengths += decoded.reasoning_length
        nfe += int(out.nfe.sum())
    n = len(data)
    return {"accuracy": correct / n, "trace_exact": exact / n, "mean_nfe": nfe / n,
            "mean_reasoning_length": lengths / n, "n": n}


def _learning_curve(name: str, arm: Arm, output_dir: Path, template, data, settings, seed) -> list[dict[str, Any]]:
    """Every checkpoint's one-token-per-call scores on ``data``."""
    curve = []
    for checkpoint in tqdm(saved_checkpoints(output_dir), desc=f"curve {name}"):
        metrics = _evaluate(Pipeline.from_pretrained(checkpoint.model_dir), arm, template, data,
                            ConfidenceThreshold(threshold=2.0), None, settings, seed)
        curve.append({"step": checkpoint.step, "train_seconds": checkpoint.train_seconds, **metrics})
    return curve


def _infilling(pipe: Pipeline, arm: Arm, template, data, settings, seed) -> dict[str, Any]:
    """Posterior reasoning given the gold answer; log p(gold answer | reasoning prefixes)."""
    count = min(settings.num_posterior, len(data))
    questions, answers, reasonings = data.questions[:count], data.answers[:count], data.reasonings[:count]
    out = _sample(pipe, arm, template, questions, EntropyBounded(0.2), answers=answers,
                  generator=torch.Generator().manual_seed(seed))
    kept = gold = 0
    for row, seq in enumerate(out.sequences()):
        decoded = template.decode(seq, out.frozen[row, : len(seq)].tolist())
        kept += decoded.answer == "".join(template.symbols[i] for i in answers[row])
        gold += decoded.reasoning == _gold_reasoning(template, reasonings[row])
    scores = {}
    for fraction in settings.prefix_fractions:
        prefixes = [r[: round(fraction * len(r))] for r in reasonings]
        logp = answer_log_probability(pipe.kind, pipe.model, template, pipe.schedules["unmasking"], questions,
                                      prefixes, answers)
        scores[str(fraction)] = float(logp.mean())
    return {"n": count, "answer_unchanged": kept / count, "gold_reasoning": gold / count,
            "mean_nfe": float(out.nfe.float().mean()), "mean_log_p_gold_answer_by_prefix": scores}


def run_reasoning_benchmark(out: str | Path, *, settings: ReasoningBenchSettings | None = None, seed: int = 0,
                            work_dir: str | Path | None = None, argv: list[str] | None = None) -> dict[str, Any]:
    """Train both models, score their checkpoints and decoders, write JSON + PNG and return the record."""
    watch = Stopwatch()
    out = Path(out)
    settings = settings or ReasoningBenchSettings()
    work = Path(work_dir) if work_dir is not None else out.with_suffix("")
    configs = {name: _train_config(settings, name, arm, work, seed) for name, arm in settings.arms.items()}
    trained, threads = train_side_by_side(configs)

    results, curves, extras = [], {}, {}
    for name, arm in settings.arms.items():
        task = settings.task(name, seed)
        template, test = task.template, task.test_set(settings.num_test)
        splits = {"validation": task.splits["validation"], "test": test}
        curves[name] = _learning_curve(name, arm, trained[name].output_dir, template, test, settings, seed)
        pipe = Pipeline.from_pretrained(trained[name].model_dir)
        for method, param, rule, criterion, extra in tqdm(decoding_methods(settings, template), desc=f"decode {name}"):
            for split, data in splits.items():
                metrics = _evaluate(pipe, arm, template, data, rule, criterion, settings, seed)
                results.append({"model": name, "split": split, "method": method, "param": param, **extra, **metrics})
                tqdm.write(format_row(results[-1]))
        extras[name] = _infilling(pipe, arm, template, test, settings, seed)
        extras[name].update(train_seconds=trained[name].train_seconds, train_steps=trained[name].steps,
                            train_threads=threads)

    png = out.with_suffix(".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    plot(results, curves, png)
    record = {
        "command": command_line(argv),
        "seed": seed,
        "seeds": [seed],
        "split": "test",
        "tuning": {"selected_on": "validation", "choice": f"the decoder with the fewest calls within "
                   f"{settings.within} of one token per call", "trials": "every decoder in results"},
        "wall_seconds": watch.seconds,
        "config": asdict(settings),
        "machine": machine_info(),
        "train_configs": configs,
        "results": results,
        "curves": curves,
        "budgets": budget_rows(curves, "accuracy"),
        "summary": summarize(results, settings.within),
        "reasoning_as_infilling": extras,
        "plot": png.name,
    }
    write_json(record, out)
    print(format_table(results))
    return record


def main(args: argparse.Namespace) -> int:
    """``flexmdm bench reasoning``."""
    settings = ReasoningBenchSettings.quick() if args.quick else ReasoningBenchSettings()
    run_reasoning_benchmark(args.out, settings=settings, seed=args.seed, work_dir=args.work_dir, argv=args.argv)
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0
