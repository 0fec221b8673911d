"""The fair-comparison pieces benches share: seeds (mean ± stderr), equal budgets, equal tuning on
validation only, reports on test."""

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from flexmdm.bench.budgets import Checkpoint, budget_checkpoints, budget_rows
from flexmdm.bench.fair import fair_comparison
from flexmdm.bench.seeds import mean_stderr, plus_minus, seed_summary
from flexmdm.bench.tuning import DecoderTrial, tune
from flexmdm.sampling import Adaptive, ConfidenceThreshold, Insertion, TauLeaping
from flexmdm.training.checkpoint import STATE_FILE, checkpoint_path


def test_mean_stderr_is_the_sample_standard_error_of_the_finite_values():
    assert mean_stderr([0.5, 0.7, 0.9]) == pytest.approx((0.7, 0.2 / math.sqrt(3)))
    assert mean_stderr([1.0, float("nan"), 3.0]) == pytest.approx((2.0, math.sqrt(2) / math.sqrt(2)))
    assert mean_stderr([0.4]) == (0.4, None)
    mean, error = mean_stderr([float("nan")])
    assert math.isnan(mean) and error is None


def test_seed_summary_groups_rows_in_first_seen_order():
    rows = [{"seed": s, "model": m, "K": k, "score": s + (10 if m == "b" else 0) + k}
            for s in (0, 1, 2) for m in ("a", "b") for k in (2, 7)]
    summary = seed_summary(rows, ("model", "K"), ("score",))
    assert [(r["model"], r["K"]) for r in summary] == [("a", 2), ("a", 7), ("b", 2), ("b", 7)]
    assert [r["score"] for r in summary] == [3.0, 8.0, 13.0, 18.0]
    assert all(r["score_stderr"] == pytest.approx(1 / math.sqrt(3)) and r["seeds"] == [0, 1, 2] for r in summary)
    assert plus_minus("score")(summary[0]) == "3.000 ± 0.577"
    assert plus_minus("score", 1)({"score": 0.25, "score_stderr": None}) == "0.2"


def test_decoder_trial_options_per_family():
    exact = DecoderTrial("one_per_call", 64, "exact").options(inserts=True, temperature=0.0, trace=True)
    assert exact.rule == ConfidenceThreshold(1.0) and exact.final_fill == "rule" and exact.insertion == Insertion("exact")
    assert exact.trace and exact.steps == 64 and exact.temperature == 0.0
    mdm = DecoderTrial("one_per_call", 32).options(inserts=False, temperature=0.0, trace=True)
    assert mdm.final_fill is None and mdm.insertion is None and not mdm.trace  # an MDM records no trace
    grid = DecoderTrial("margin", 16, "poisson").options(inserts=True, temperature=1.0)
    assert grid.rule == Adaptive("margin") and grid.final_fill == "parallel" and grid.insertion == Insertion("poisson")
    tau = DecoderTrial("tau_leaping", 128, "poisson").options(inserts=True, temperature=1.0)
    assert tau.rule == TauLeaping() and tau.final_fill == "parallel" and tau.insertion == Insertion("poisson")
    assert DecoderTrial("tau_leaping", 128).options(inserts=False, temperature=1.0).rule == TauLeaping()
    with pytest.raises(ValueError, match="insertion must be set exactly for a model that inserts"):
        DecoderTrial("margin", 16).options(inserts=True, temperature=0.0)
    with pytest.raises(ValueError, match="insertion must be set exactly"):
        DecoderTrial("margin", 16, "exact").options(inserts=False, temperature=0.0)


TRIALS = {"flexmdm": [DecoderTrial("one_per_call", 8, "exact"), DecoderTrial("top_probability", 8, "poisson"),
                      DecoderTrial("margin", 8, "poisson")],
          "mdm": [DecoderTrial("one_per_call", 8), DecoderTrial("top_probability", 8), DecoderTrial("margin", 8)]}


def test_tune_scores_validation_only_and_breaks_ties_by_cost_then_order():
    validation = {"one_per_call": (0.5, 10.0), "top_probability": (0.8, 9.0), "margin": (0.8, 7.0)}

    def score(model, trial, split):
        if split != "validation":
            raise AssertionError(f"tuning read the {split} split")
        value, calls = validation[trial.rule]
        return {"success_rate": value if model == "flexmdm" else 1 - value, "mean_nfe": calls}

    tuning = tune(TRIALS, score, "success_rate", "mean_nfe")
    assert tuning["split"] == "validation"
    assert tuning["choice"] == {"flexmdm": {"rule": "margin", "steps": 8, "insertion": "poisson"},
                                "mdm": {"rule": "one_per_call", "steps": 8, "insertion": None}}
    assert [t["success_rate"] for t in tuning["trials"]["flexmdm"]] == [0.5, 0.8, 0.8]
    tied = tune(TRIALS, lambda model, trial, split: {"success_rate": 1.0, "mean_nfe": 1.0}, "success_rate", "mean_nfe")
    assert tied["choice"]["mdm"]["rule"] == "one_per_call"  # all equal: the first listed
    with pytest.raises(ValueError, match="same number of trials"):
        tune({"flexmdm": TRIALS["flexmdm"], "mdm": TRIALS["mdm"][:2]}, score, "success_rate", "mean_nfe")


def test_tune_lowest_metric_among_the_trials_the_guard_admits():
    """The lowest W1 wins unless its perplexity is more than 15 % above the model's lowest; a trial
    without a perplexity is never admitted unless none has one."""
    validation = {"flexmdm": {"one_per_call": (0.5, 40.0), "top_probability": (0.9, 34.0), "margin": (1.2, 30.0)},
                  "mdm": {"one_per_call": (2.0, None), "top_probability": (3.0, 30.0), "margin": (2.5, 34.4)}}

    def score(model, trial, split):
        assert split == "validation"
        w1, ppl = validation[model][trial.rule]
        return {"length_w1": w1, "mean_nfe": 1.0, "gen_ppl": ppl}

    tuning = tune(TRIALS, score, "length_w1", "mean_nfe", lower_is_better=True, guard=("gen_ppl", 0.15))
    assert {model: choice["rule"] for model, choice in tuning["choice"].items()} == {
        "flexmdm": "top_probability", "mdm": "margin"}  # 34 and 34.4 ≤ 1.15 × 30; 40 and None are not
    assert tuning["criterion"] == ("lowest validation length_w1 among the trials with gen_ppl within 15% of the "
                                   "model's lowest; ties: lower mean_nfe, then first listed")
    unguarded = tune(TRIALS, score, "length_w1", "mean_nfe", lower_is_better=True)
    assert {model: choice["rule"] for model, choice in unguarded["choice"].items()} == {
        "flexmdm": "one_per_call", "mdm": "one_per_call"}
    no_ppl = tune(TRIALS, lambda model, trial, split: {**score(model, trial, split), "gen_ppl": None}, "length_w1",
                  "mean_nfe", lower_is_better=True, guard=("gen_ppl", 0.15))
    assert no_ppl["choice"]["mdm"]["rule"] == "one_per_call"  # no trial has a perplexity: all admitted


def _points():
    """Two seeds; FlexMDM saved at steps 2, 4, 6 (1 s a step), the MDM at 2, 4 (2 s a step)."""
    def run(model, steps, seconds):
        return [Checkpoint(s, s * seconds, Path(f"{model}/step_{s}")) for s in steps]

    points = {}
    for seed in (0, 1):
        flex, mdm = run("flexmdm", (2, 4, 6), 1.0), run("mdm", (2, 4), 2.0)
        points[seed] = {"equal_steps": {"flexmdm": flex[1], "mdm": mdm[1]},
                        "equal_cpu": {"flexmdm": flex[2], "mdm": mdm[1]}}
    return points


def test_fair_comparison_never_lets_the_test_split_choose():
    """Validation prefers each model's second trial, test its third: the choice and its test rows
    follow validation, and no test result is read before the choice is made."""
    calls = []

    def evaluate(model, point, trial, split, seed):
        calls.append((split, model, trial.rule, point.model_dir))
        index = TRIALS[model].index(trial)
        good = 1 if split == "validation" else 2  # the test split is poisoned: it favours another trial
        return [{"K": k, "success_rate": (0.9 if index == good else 0.1) + seed / 100, "mean_nfe": 5.0 + k}
                for k in (2, 7)]

    fair = fair_comparison(_points(), TRIALS, evaluate, metric="success_rate", cost="mean_nfe", by=("K",),
                           metrics=("success_rate", "mean_nfe"))
    assert {model: choice["rule"] for model, choice in fair["tuning"]["choice"].items()} == {
        "flexmdm": "top_probability", "mdm": "top_probability"}
    first_test = next(i for i, call in enumerate(calls) if call[0] == "test")
    assert all(call[0] == "validation" for call in calls[:first_test])
    assert all(call[0] == "test" and call[2] == "top_probability" for call in calls[first_test:])
    # tuning scored the headline (equal-steps) checkpoints only; test scored both budgets' and no other
    assert {call[3] for call in calls[:first_test]} == {Path("flexmdm/step_4"), Path("mdm/step_4")}
    assert {call[3] for call in calls[first_test:]} == {Path("flexmdm/step_4"), Path("flexmdm/step_6"),
                                                        Path("mdm/step_4")}
    assert fair["split"] == "test" and fair["seeds"] == [0, 1] and fair["headline_budget"] == "equal_steps"
    assert fair["tuning"]["budget"] == "equal_steps" and fair["tuning"]["seeds"] == [0, 1]
    assert fair["tuning"]["trials"]["mdm"][1]["success_rate"] == pytest.approx(0.905)  # mean over seeds and K
    row = next(r for r in fair["budgets"] if (r["budget"], r["model"], r["K"]) == ("equal_cpu", "flexmdm", 7))
    assert row["step"] == 6 and row["train_seconds"] == 6.0 and row["mean_nfe"] == 12.0
    assert row["success_rate"] == pytest.approx(0.105) and row["success_rate_stderr"] == pytest.approx(0.005)
    assert fair["results"] == [r for r in fair["budgets"] if r["budget"] == "equal_steps"] and len(fair["results"]) == 4
    assert len(fair["per_seed"]) == 2 * 2 * 2 * 2  # seeds × budgets × models × K


def test_fair_comparison_tunes_a_lower_is_better_metric_under_a_guard_on_validation_only():
    """Validation: each model's first trial has the lowest W1 but a perplexity 50 % too high, so the
    second is chosen; test is poisoned to favour the third. Rows without a perplexity are averaged out."""
    calls = []

    def evaluate(model, point, trial, split, seed):
        calls.append(split)
        index = TRIALS[model].index(trial)
        if split == "validation":
            w1, ppl = [(0.5, 45.0), (1.0, 30.0), (2.0, 31.0)][index]
        else:
            w1, ppl = [(3.0, 30.0), (3.0, 30.0), (0.1, 30.0)][index]
        return [{"length_w1": w1 + seed, "gen_ppl": ppl, "mean_nfe": 4.0}, {"length_w1": w1 + seed, "gen_ppl": None,
                                                                              "mean_nfe": 4.0}]

    fair = fair_comparison(_points(), TRIALS, evaluate, metric="length_w1", cost="mean_nfe", by=(),
                           metrics=("length_w1", "gen_ppl"), lower_is_better=True, guard=("gen_ppl", 0.15))
    assert {model: choice["rule"] for model, choice in fair["tuning"]["choice"].items()} == {
        "flexmdm": "top_probability", "mdm": "top_probability"}
    assert fair["tuning"]["trials"]["flexmdm"][0] == {"rule": "one_per_call", "steps": 8, "insertion": "exact",
                                                      "length_w1": 1.0, "mean_nfe": 4.0, "gen_ppl": 45.0}
    first_test = calls.index("test")
    assert set(calls[:first_test]) == {"validation"} and set(calls[first_test:]) == {"test"}
    row = next(r for r in fair["results"] if r["model"] == "mdm")
    assert row["length_w1"] == pytest.approx(3.5) and row["gen_ppl"] == 30.0 and row["gen_ppl_stderr"] == 0.0


def test_budget_rows_read_equal_steps_equal_cpu_and_plateau():
    curves = {"flexmdm": [{"step": s, "train_seconds": s * 1.0, "score": s / 10} for s in (2, 4, 6)],
              "mdm": [{"step": s, "train_seconds": s * 2.0, "score": s / 20} for s in (2, 4)]}
    rows = {(r["budget"], r["model"]): r for r in budget_rows(curves, "score")}
    assert rows["equal_steps", "flexmdm"]["step"] == 4 and rows["equal_steps", "mdm"]["step"] == 4
    assert rows["equal_cpu", "flexmdm"]["step"] == 6 and rows["equal_cpu", "mdm"]["step"] == 2  # 6 s: FlexMDM in all
    assert rows["plateau", "flexmdm"]["gain_over_previous"] == pytest.approx(0.2)


def _save_fake_runs(root: Path, runs: dict[str, list[tuple[int, float]]], save_every: int | None = None
                    ) -> dict[str, Path]:
    """Training folders holding only what :func:`saved_checkpoints` reads: each checkpoint's step and
    seconds (and, given ``save_every``, the run's checkpoint interval)."""
    for model, saved in runs.items():
        for step, seconds in saved:
            path = checkpoint_path(root / model, step)
            path.mkdir(parents=True)
            config = {} if save_every is None else {"config": {"train": {"save_every": save_every}}}
            torch.save({"step": step, "train_seconds": seconds, **config}, path / STATE_FILE)
    return {model: root / model for model in runs}


def test_budget_checkpoints_pick_equal_steps_equal_cpu_and_the_plateau_with_its_predecessor(tmp_path):
    dirs = _save_fake_runs(tmp_path, {"flexmdm": [(2, 2.0), (4, 4.0), (6, 6.0)], "mdm": [(2, 4.0), (4, 8.0)]})
    points = budget_checkpoints(dirs, plateau=True)
    assert {b: {m: p.step for m, p in by.items()} for b, by in points.items()} == {
        "equal_steps": {"flexmdm": 4, "mdm": 4}, "equal_cpu": {"flexmdm": 6, "mdm": 2},
        "plateau": {"flexmdm": 6, "mdm": 4}}
    assert points["plateau"]["flexmdm"].previous.step == 4 and points["plateau"]["mdm"].previous.step == 2
    assert points["plateau"]["mdm"].model_dir == checkpoint_path(dirs["mdm"], 4) / "model"
    assert "plateau" not in budget_checkpoints(dirs)


def test_the_plateau_gain_is_measured_from_the_last_scheduled_checkpoint_not_an_interrupted_one(tmp_path):
    """A run stopped by a signal at step 5 and resumed (checkpoints every 2 steps) has 2, 4, 5, 6: the
    plateau's predecessor is 4; a run that ends on its interruption checkpoint keeps it as the plateau."""
    dirs = _save_fake_runs(tmp_path, {"flexmdm": [(2, 2.0), (4, 4.0), (5, 5.0), (6, 6.0)],
                                      "mdm": [(2, 4.0), (4, 8.0), (5, 9.0)]}, save_every=2)
    plateau = budget_checkpoints(dirs, plateau=True)["plateau"]
    assert (plateau["flexmdm"].step, plateau["flexmdm"].previous.step) == (6, 4)
    assert (plateau["mdm"].step, plateau["mdm"].previous.step) == (5, 4)


def test_fair_comparison_at_the_plateau_reports_test_rows_and_the_validation_gain():
    points = _points()
    for seed, budgets in points.items():
        flex, mdm = budgets["equal_cpu"]["flexmdm"], budgets["equal_steps"]["mdm"]
        budgets["plateau"] = {"flexmdm": replace(flex, previous=budgets["equal_steps"]["flexmdm"]),
                              "mdm": replace(mdm, previous=None)}
    calls = []

    def evaluate(model, point, trial, split, seed):
        calls.append((split, point.model_dir, trial.rule))
        good = TRIALS[model].index(trial) == 1
        return [{"K": 2, "success_rate": point.step / 10 + (0.3 if good else 0.0) + (0.05 if split == "test" else 0.0),
                 "mean_nfe": 1.0}]

    fair = fair_comparison(points, TRIALS, evaluate, metric="success_rate", cost="mean_nfe", by=("K",),
                           metrics=("success_rate",))
    plateau = {r["model"]: r for r in fair["budgets"] if r["budget"] == "plateau"}
    assert plateau["flexmdm"]["step"] == 6 and plateau["flexmdm"]["success_rate"] == pytest.approx(0.95)
    assert plateau["mdm"]["step"] == 4
    gains = {(r["seed"], r["model"]): r for r in fair["plateau_gain"]}
    assert gains[0, "flexmdm"]["previous_step"] == 4 and gains[0, "flexmdm"]["gain"] == pytest.approx(0.2)
    assert gains[0, "flexmdm"]["validation_success_rate"] == pytest.approx(0.9)  # the chosen trial, on validation
    assert gains[1, "mdm"]["previous_step"] is None and gains[1, "mdm"]["gain"] is None
    assert {split for split, _, rule in calls if rule != "top_probability"} == {"validation"}  # only tuning tried others
    assert "plateau_gain" not in fair_comparison(_points(), TRIALS, evaluate, metric="success_rate", cost="mean_nfe",
                                                 by=("K",), metrics=("success_rate",))
