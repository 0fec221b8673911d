"""``flexmdm bench reasoning``: entropy-based parallel decoding and early exit (second paper).

FlexMDM and MDM are trained side by side (:mod:`flexmdm.bench.side_by_side`) with the same
backbone, optimiser and number of steps on generated arithmetic word problems
(:mod:`flexmdm.tasks.reasoning`) in the question / reasoning / answer template. On held-out
problems each model decodes (temperature 0) with

* ``confidence_1`` — one token per network call, the most confident one;
* ``med`` — every mask with entropy below λ (at least the lowest), several λ;
* ``eb`` — EB-sampler, the largest entropy-sorted prefix with sum − max ≤ γ, several γ;
* ``med_exit`` — MED plus early exit once the answer's entropy (max or mean) is below γ_exit,
  after which the answer is filled from that same posterior.

Rows report accuracy, mean network calls per problem (``mean_nfe``, counted per sample by the
samplers) and mean reasoning length. For FlexMDM the insertion grid has ``flexmdm_grid_steps``
calls; rate-free rules keep unmasking at t = 1 until no mask is left. Two extra measurements
use the inference helpers: posterior sampling of reasoning given the gold answer (the answer
never changes; how often the sampled trace is the gold one) and the model's log-probability of
the gold answer given growing prefixes of the gold reasoning.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from tqdm import tqdm

from flexmdm.bench.record import Stopwatch, command_line, machine_info, write_json
from flexmdm.bench.side_by_side import train_side_by_side
from flexmdm.pipeline import Pipeline
from flexmdm.sampling import ConfidenceThreshold, EntropyBounded, EntropySum, UnmaskingRule
from flexmdm.tasks.reasoning import ReasoningTask, answers_match
from flexmdm.tasks.reasoning.inference import AnswerEntropyExit, answer_log_probability, generate

__all__ = ["ReasoningBenchSettings", "decoding_methods", "main", "run_reasoning_benchmark"]

MODELS = ("flexmdm", "mdm")


@dataclass
class ReasoningBenchSettings:
    """What the benchmark trains and evaluates (the default is the committed result)."""

    num_train: int = 20000
    min_steps: int = 2
    max_steps: int = 5
    max_value: int = 9
    num_eval: int = 300
    eval_batch: int = 300
    flexmdm_grid_steps: int = 8
    med_thresholds: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4)
    eb_budgets: tuple[float, ...] = (0.05, 0.1, 0.3, 1.0)
    exit_med_thresholds: tuple[float, ...] = (0.1, 0.2, 0.4)
    exit_threshold: float = 0.1
    exit_reduces: tuple[str, ...] = ("max",)
    num_posterior: int = 100
    prefix_fractions: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    model: dict[str, Any] = field(default_factory=lambda: {"d_model": 128, "n_layers": 4, "n_heads": 4})
    train: dict[str, Any] = field(default_factory=lambda: {
        "steps": 2000, "batch_size": 48, "lr": 1e-3, "warmup_steps": 100, "weight_decay": 0.01,
        "ema_decay": 0.995, "log_every": 50, "eval_every": 0, "eval_batches": 4, "save_every": 500,
    })

    @classmethod
    def quick(cls) -> ReasoningBenchSettings:
        settings = cls(num_eval=100, med_thresholds=(0.1, 0.2), eb_budgets=(0.1, 0.3), exit_med_thresholds=(0.2,),
                       exit_reduces=("max", "mean"), num_posterior=50)
        settings.train.update(steps=400)
        return settings


def decoding_methods(settings: ReasoningBenchSettings, template) -> list[tuple[str, Any, UnmaskingRule, Any, dict]]:
    """``(method, param, rule, early_exit, extra row fields)`` for every evaluated decoder."""
    out: list[tuple[str, Any, UnmaskingRule, Any, dict]] = [
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


def _train_config(settings: ReasoningBenchSettings, layout: str, output_dir: Path, seed: int) -> dict[str, Any]:
    task = {"task": "reasoning", "num_train": settings.num_train, "problem_seed": seed,
            "min_steps": settings.min_steps, "max_steps": settings.max_steps, "max_value": settings.max_value,
            "layout": layout}
    return {
        "model": {"kind": layout, **settings.model, "max_length": 64},
        "data": task,
        "train": {**settings.train, "seed": seed},
        "output_dir": str(output_dir / layout),
    }


def _evaluate_method(kind, model, schedules, task, data, rule, early_exit, settings, seed) -> dict[str, Any]:
    template = task.template
    steps = settings.flexmdm_grid_steps if kind == "flexmdm" else template.reasoning_width + template.answer_width
    correct, nfe, lengths = 0, 0, 0
    generator = torch.Generator().manual_seed(seed)
    for start in range(0, len(data), settings.eval_batch):
        stop = min(start + settings.eval_batch, len(data))
        out = generate(kind, model, template, schedules, data.questions[start:stop], rule=rule, steps=steps,
                       early_exit=early_exit, generator=generator)
        for row, (seq, problem) in enumerate(zip(out.sequences(), data.problems[start:stop])):
            decoded = template.decode(seq, out.frozen[row, : len(seq)].tolist())
            correct += answers_match(decoded.answer, str(problem.answer))
            lengths += decoded.reasoning_length
        nfe += int(out.nfe.sum())
    n = len(data)
    return {"accuracy": correct / n, "mean_nfe": nfe / n, "mean_reasoning_length": lengths / n, "n": n}


def _posterior_and_scores(kind, model, schedules, task, data, settings, seed) -> dict[str, Any]:
    """Posterior reasoning given the gold answer; log p(gold answer | reasoning prefixes)."""
    template = task.template
    count = min(settings.num_posterior, len(data))
    questions, answers, reasonings = data.questions[:count], data.answers[:count], data.reasonings[:count]
    steps = settings.flexmdm_grid_steps if kind == "flexmdm" else template.reasoning_width
    out = generate(kind, model, template, schedules, questions, answers=answers, rule=EntropyBounded(0.2),
                   steps=steps, generator=torch.Generator().manual_seed(seed))
    kept = gold = 0
    for row, seq in enumerate(out.sequences()):
        decoded = template.decode(seq, out.frozen[row, : len(seq)].tolist())
        kept += decoded.answer == "".join(template.symbols[i] for i in answers[row])
        gold += decoded.reasoning == " ".join(template.symbols[i] for i in reasonings[row])
    scores = {}
    for fraction in settings.prefix_fractions:
        prefixes = [r[: round(fraction * len(r))] for r in reasonings]
        logp = answer_log_probability(kind, model, template, schedules["unmasking"], questions, prefixes, answers)
        scores[str(fraction)] = float(logp.mean())
    return {"n": count, "answer_unchanged": kept / count, "gold_reasoning": gold / count,
            "mean_nfe": float(out.nfe.float().mean()), "mean_log_p_gold_answer_by_prefix": scores}


def _plot(results: list[dict[str, Any]], out_png: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    markers = {"confidence_1": "s", "med": "o", "eb": "^", "med_exit": "*"}
    colors = {"flexmdm": "tab:blue", "mdm": "tab:orange"}
    for model in MODELS:
        for method, marker in markers.items():
            rows = sorted((r for r in results if r["model"] == model and r["method"] == method),
                          key=lambda r: r["mean_nfe"])
            if rows:
                ax.plot([r["mean_nfe"] for r in rows], [100 * r["accuracy"] for r in rows], marker=marker,
                        color=colors[model], ls="-" if method in ("med", "eb") else "none",
                        ms=9 if marker == "*" else 6, label=f"{model} {method}")
    ax.set_xlabel("mean network calls per problem")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Arithmetic word problems: accuracy vs network calls")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)


def run_reasoning_benchmark(out: str | Path, *, quick: bool = False, seed: int = 0, work_dir: str | Path | None = None,
                            argv: list[str] | None = None) -> dict[str, Any]:
    """Train both models, evaluate every decoding method, write JSON + PNG and return the record."""
    watch = Stopwatch()
    out = Path(out)
    settings = ReasoningBenchSettings.quick() if quick else ReasoningBenchSettings()
    work = Path(work_dir) if work_dir is not None else out.with_suffix("")
    trained, threads = train_side_by_side({layout: _train_config(settings, layout, work, seed) for layout in MODELS})

    results, extras = [], {}
    for kind in MODELS:
        task = ReasoningTask(num_train=settings.num_train, problem_seed=seed, min_steps=settings.min_steps,
                             max_steps=settings.max_steps, max_value=settings.max_value, layout=kind)
        data = task.test_set(settings.num_eval)
        pipe = Pipeline.from_pretrained(trained[kind].model_dir)
        model, schedules = pipe.model, pipe.schedules
        methods = decoding_methods(settings, task.template)
        for method, param, rule, criterion, extra in tqdm(methods, desc=f"decode {kind}"):
            metrics = _evaluate_method(kind, model, schedules, task, data, rule, criterion, settings, seed)
            results.append({"model": kind, "method": method, "param": param, **extra, **metrics})
            print(format_row(results[-1]), flush=True)
        extras[kind] = _posterior_and_scores(kind, model, schedules, task, data, settings, seed)
        extras[kind].update(train_seconds=trained[kind].train_seconds, train_steps=trained[kind].steps,
                            train_threads=threads)

    png = out.with_suffix(".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    _plot(results, png)
    record = {
        "command": command_line(argv),
        "seed": seed,
        "wall_seconds": watch.seconds,
        "config": asdict(settings),
        "machine": machine_info(),
        "results": results,
        "summary": summarize(results),
        "reasoning_as_infilling": extras,
        "plot": png.name,
    }
    write_json(record, out)
    print(format_table(results))
    return record


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per model: best accuracy, and the speed-ups of MED / MED + exit over one token per call.

    ``med_within_1pt``: the MED row with the fewest calls whose accuracy is at most 1 point
    below ``confidence_1``; likewise ``med_exit_within_1pt``.
    """
    summary = {}
    for model in MODELS:
        rows = [r for r in results if r["model"] == model]
        base = next((r for r in rows if r["method"] == "confidence_1"), None)
        if base is None:
            continue
        entry: dict[str, Any] = {"best_accuracy": max(r["accuracy"] for r in rows),
                                 "confidence_1_accuracy": base["accuracy"], "confidence_1_nfe": base["mean_nfe"]}
        for method in ("med", "med_exit", "eb"):
            ok = [r for r in rows if r["method"] == method and r["accuracy"] >= base["accuracy"] - 0.01]
            if ok:
                best = min(ok, key=lambda r: r["mean_nfe"])
                entry[f"{method}_within_1pt"] = {
                    "param": best["param"], **{k: best[k] for k in ("exit_reduce",) if k in best},
                    "accuracy": best["accuracy"], "mean_nfe": best["mean_nfe"],
                    "speedup": base["mean_nfe"] / best["mean_nfe"]}
            else:
                entry[f"{method}_within_1pt"] = None
        summary[model] = entry
    return summary


def format_row(row: dict[str, Any]) -> str:
    extra = f" {row['exit_reduce']}" if "exit_reduce" in row else ""
    return (f"{row['model']:<8} {row['method']:<13} {str(row['param']) + extra:<10} {row['accuracy']:>8.3f} "
            f"{row['mean_nfe']:>9.2f} {row['mean_reasoning_length']:>8.2f} {row['n']:>5}")


def format_table(results: list[dict[str, Any]]) -> str:
    """The results as text."""
    header = f"{'model':<8} {'method':<13} {'param':<10} {'accuracy':>8} {'mean_nfe':>9} {'len':>8} {'n':>5}"
    return "\n".join([header, *(format_row(r) for r in results)])


def main(args: argparse.Namespace) -> int:
    """``flexmdm bench reasoning``."""
    run_reasoning_benchmark(args.out, quick=args.quick, seed=args.seed, work_dir=args.work_dir, argv=args.argv)
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0
