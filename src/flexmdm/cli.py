"""The ``flexmdm`` command.

    flexmdm train CONFIG [--set KEY=VALUE ...]
    flexmdm sample MODEL_DIR [--num N] [--steps S] [--policy P] [--param X] ...
    flexmdm view TRACE.jsonl [--out page.html] [--tokenizer DIR] [--sequence I] [--lengths-png PNG]
    flexmdm bench NAME [--quick] --out FILE.json
    flexmdm plan CONFIG [--world-size N] [--micro-batch B] [--seq-len L] [--json]

``train`` resumes automatically from ``output_dir/checkpoints/latest`` when it exists; run it
under ``torchrun --nproc_per_node N -m flexmdm.cli train CONFIG`` for data parallelism.
``sample`` reads the schedules, vocabulary and maximum length from the model's ``config.json``.

Each subcommand is one ``add_<name>_command(subparsers)`` function that registers its parser
and sets ``run`` to a function ``(args) -> exit code``; list it in :data:`COMMANDS`. User errors
(missing files, bad options, invalid configurations) raise :class:`UserError`,
:class:`~flexmdm.training.config.ConfigError` or :class:`FileNotFoundError`, which :func:`main`
prints as one line with exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from flexmdm.planner import add_plan_command

__all__ = ["COMMANDS", "UserError", "build_parser", "main"]


class UserError(Exception):
    """A mistake in the command line or its inputs (printed without a traceback)."""


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors raised as :class:`UserError` (one line, exit code 2)."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{message} (see '{self.prog} --help')")


# -- train --------------------------------------------------------------------------------------


def add_train_command(commands: argparse._SubParsersAction) -> None:
    """Register ``flexmdm train CONFIG [--set KEY=VALUE ...]``."""
    parser = commands.add_parser("train", help="train a FlexMDM or MDM model from a YAML config")
    parser.add_argument("config", type=Path, help="YAML configuration (see configs/toy.yaml)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.lr=1e-3 (repeatable; values are YAML)",
    )
    parser.set_defaults(run=run_train)


def run_train(args: argparse.Namespace) -> int:
    """Train (or resume) the configured run; under torchrun every rank runs this."""
    from flexmdm.training import load_config, train

    result = train(load_config(args.config, args.overrides))
    if os.environ.get("RANK", "0") == "0":  # torchrun: one report
        done = "already trained" if result.loss is None else f"trained (last loss {result.loss:.4f})"
        print(f"{done} to step {result.steps} in {result.elapsed_s:.1f}s; model at {result.model_dir}", file=sys.stderr)
    return 0


# -- sample -------------------------------------------------------------------------------------

POLICIES = ("tau", "top_probability", "margin", "entropy", "left_most", "random", "med", "eb", "confidence")


def add_sample_command(commands: argparse._SubParsersAction) -> None:
    """Register ``flexmdm sample MODEL_DIR [options]``."""
    parser = commands.add_parser(
        "sample", help="generate sequences from an exported model",
        description="Policies: tau (τ-leaping); top_probability, margin, entropy, left_most, random "
        "(adaptive: K ~ Poisson masks per step, the most confident first; --param is the sliding "
        "window factor γ1); med (--param λ, default 0.2); eb (--param γ, default 0.1); confidence "
        "(--param threshold, default 0.9).",
    )
    parser.add_argument("checkpoint", type=Path, help="a model directory (or a run / checkpoint holding model/)")
    parser.add_argument("--num", type=int, default=16, help="number of samples (default 16)")
    parser.add_argument("--steps", type=int, default=100, help="sampling steps (default 100)")
    parser.add_argument("--policy", choices=POLICIES, default="tau", help="unmasking policy (default tau)")
    parser.add_argument("--param", type=float, default=None, help="the policy's λ / γ / threshold")
    parser.add_argument("--block", type=int, default=None, metavar="W",
                        help="semi-autoregressive: the policy chooses only among the masks of the left-most "
                        "block of W slots that still holds any")
    parser.add_argument("--temperature", type=float, default=1.0, help="0 for argmax (default 1)")
    parser.add_argument("--max-length", type=int, default=None,
                        help="longest sample (FlexMDM) or canvas (MDM); default: the task's")
    parser.add_argument("--prompt", default=None,
                        help="frozen prefix: text with a tokenizer, else space-separated token ids")
    parser.add_argument("--final-fill", choices=("sequential", "parallel", "rule"), default=None,
                        help="masks left at t = 1: one per call (exact), all at once, or by the policy "
                        "(rate-free policies); default: rule for rate-free policies, else sequential")
    parser.add_argument("--insertion", choices=("poisson", "binomial", "exact"), default="poisson",
                        help="FlexMDM arrivals: poisson (Algorithm 1), binomial (exact interval probability) "
                        "or exact (one at a time; needs a rate-free policy; --steps is then a call budget)")
    parser.add_argument("--certainty", type=float, default=None, metavar="C",
                        help="FlexMDM: insert at once every gap count at least this probable (a model with a "
                        "count head)")
    parser.add_argument("--refresh", action="store_true",
                        help="FlexMDM grid arrivals: re-estimate the gaps after each step's reveals (one more call)")
    parser.add_argument("--batch-size", type=int, default=256, help="samples per batch (default 256)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="JSONL output (default: stdout)")
    parser.add_argument("--trace", type=Path, default=None,
                        help="write the sampler's events as JSONL (FlexMDM); replay them with 'flexmdm view'")
    parser.set_defaults(run=run_sample)


def _model_dir(path: Path) -> Path:
    """``path`` itself or its ``model/`` subdirectory, whichever holds ``config.json``."""
    for candidate in (path, path / "model"):
        if (candidate / "config.json").is_file():
            return candidate
    raise UserError(f"{path} holds no exported model (no config.json in it or in {path / 'model'})")


def _unmasking_rule(policy: str, param: float | None) -> Any:
    """The :class:`~flexmdm.sampling.UnmaskingRule` of ``--policy`` with ``--param``."""
    from flexmdm.sampling import Adaptive, ConfidenceThreshold, EntropyBounded, EntropySum, TauLeaping

    if policy == "tau":
        if param is not None:
            raise UserError("--param is not used by --policy tau")
        return TauLeaping()
    if policy == "med":
        return EntropyBounded(0.2 if param is None else param)
    if policy == "eb":
        return EntropySum(0.1 if param is None else param)
    if policy == "confidence":
        return ConfidenceThreshold(0.9 if param is None else param)
    try:
        return Adaptive(policy, window_factor=param)
    except ValueError as error:
        raise UserError(f"--param: {error}") from None


def _insertion(args: argparse.Namespace, rule: Any, kind: str, config: dict[str, Any]) -> Any:
    """The :class:`~flexmdm.sampling.Insertion` of ``--insertion``, ``--certainty`` and ``--refresh``."""
    from flexmdm.sampling import Insertion

    chosen = args.insertion != "poisson" or args.certainty is not None or args.refresh
    if kind != "flexmdm":
        if chosen:
            raise UserError("--insertion, --certainty and --refresh are for FlexMDM models")
        return None
    if args.insertion == "exact" and rule.uses_rates:
        raise UserError(f"--insertion exact reveals between arrivals: choose a rate-free --policy "
                        f"(med, eb, confidence), not {args.policy}")
    if args.certainty is not None and not config["model"].get("count_cap"):
        raise UserError("--certainty needs a model with a count head (model.count_cap > 0)")
    try:
        return Insertion(args.insertion, certainty=args.certainty, refresh=args.refresh)
    except ValueError as error:
        raise UserError(f"--insertion: {error}") from None


def _prompt_ids(prompt: str, tokenizer: Any, vocab: Any) -> list[int]:
    """Token ids of ``--prompt`` (text with a tokenizer, else integers); no MASK or PAD."""
    if tokenizer is not None:
        ids = tokenizer.encode(prompt).ids
    else:
        try:
            ids = [int(word) for word in prompt.split()]
        except ValueError:
            raise UserError(f"--prompt {prompt!r}: expected space-separated token ids (the model has no tokenizer)") from None
    bad = [i for i in ids if not 0 <= i < vocab.size or i in (vocab.mask_id, vocab.pad_id)]
    if bad or not ids:
        raise UserError(f"--prompt {prompt!r}: unknown or special tokens {bad}" if bad else "--prompt is empty")
    return ids


def _check_sample_args(args: argparse.Namespace) -> None:
    for name in ("num", "steps", "batch_size"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.temperature < 0:
        raise UserError(f"--temperature must be >= 0, got {args.temperature}")
    if args.max_length is not None and args.max_length < 1:
        raise UserError(f"--max-length must be >= 1, got {args.max_length}")
    if args.block is not None and args.block < 1:
        raise UserError(f"--block must be >= 1, got {args.block}")


def run_sample(args: argparse.Namespace) -> int:
    """Generate ``--num`` sequences in batches and write them (and the trace) as JSONL."""
    import torch

    from flexmdm.constraints import Prompt
    from flexmdm.models import load_pretrained
    from flexmdm.sampling import mdm_canvas, sample_flexmdm, sample_mdm
    from flexmdm.schedules import schedule_from_config
    from flexmdm.vocab import Vocab

    _check_sample_args(args)
    directory = _model_dir(args.checkpoint)
    model, config = load_pretrained(directory)
    model.eval()
    kind = config["model"]["kind"]
    if kind not in ("flexmdm", "mdm") or "schedules" not in config or "vocab" not in config:
        raise UserError(f"{directory} is not a FlexMDM/MDM model exported by 'flexmdm train'")
    if args.trace is not None and kind != "flexmdm":
        raise UserError("--trace is only available for flexmdm models")
    vocab = Vocab(**config["vocab"])
    insertion = schedule_from_config(config["schedules"]["insertion"])
    unmasking = schedule_from_config(config["schedules"]["unmasking"])
    model_limit = int(config["model"]["max_length"])
    max_length = args.max_length or int(config.get("max_length", model_limit))
    if max_length > model_limit:
        raise UserError(f"--max-length {max_length} exceeds the model's max_length {model_limit}")
    tokenizer = None
    if (directory / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    prompt = None if args.prompt is None else _prompt_ids(args.prompt, tokenizer, vocab)
    if prompt is not None and len(prompt) >= max_length:
        raise UserError(f"the prompt has {len(prompt)} tokens, not less than --max-length {max_length}")
    rule = _unmasking_rule(args.policy, args.param)
    if args.block is not None:
        from flexmdm.sampling import SemiAutoregressive

        rule = SemiAutoregressive(rule, block_size=args.block)
    final_fill = args.final_fill or ("sequential" if rule.uses_rates else "rule")
    insertion_options = _insertion(args, rule, kind, config)
    generator = torch.Generator().manual_seed(args.seed)

    rows, traces = [], []
    for start in range(0, args.num, args.batch_size):
        count = min(args.batch_size, args.num - start)
        if kind == "flexmdm":
            out = sample_flexmdm(
                model, vocab=vocab, insertion_schedule=insertion, unmasking_schedule=unmasking,
                steps=args.steps, max_length=max_length,
                prompt=None if prompt is None else Prompt.prefix([prompt] * count, vocab.pad_id),
                batch_size=None if prompt is not None else count, rule=rule, insertion=insertion_options,
                temperature=args.temperature, final_fill=final_fill, generator=generator,
                record_trace=args.trace is not None,
            )
        else:
            canvas, frozen = mdm_canvas([prompt or []] * count, max_length, vocab)
            out = sample_mdm(
                model, vocab=vocab, unmasking_schedule=unmasking, steps=args.steps, canvas=canvas,
                frozen=frozen, rule=rule, temperature=args.temperature, final_fill=final_fill,
                generator=generator,
            )
        for sequence, nfe in zip(out.sequences(), out.nfe.tolist()):
            row = {"tokens": sequence, "length": len(sequence), "nfe": nfe}
            if tokenizer is not None:
                row["text"] = tokenizer.decode(sequence)
            rows.append(row)
        if out.trace is not None:
            traces.append(out.trace)

    _write_jsonl(rows, args.out)
    if args.trace is not None:
        from flexmdm.viz import write_trace_jsonl

        metadata = {"model": str(directory.resolve()), "steps": args.steps, "policy": args.policy,
                    "param": args.param, "block": args.block, "temperature": args.temperature, "seed": args.seed}
        write_trace_jsonl(traces, args.trace, vocab=vocab, final_sequences=[r["tokens"] for r in rows],
                          metadata=metadata)
    mean_length = sum(r["length"] for r in rows) / len(rows)
    mean_nfe = sum(r["nfe"] for r in rows) / len(rows)
    print(f"{len(rows)} samples, mean length {mean_length:.2f}, mean NFE {mean_nfe:.1f}"
          + (f" -> {args.out}" if args.out else ""), file=sys.stderr)
    return 0


def _write_jsonl(rows: Sequence[dict[str, Any]], path: Path | None) -> None:
    """Write ``rows`` as JSON lines to ``path`` (stdout when None)."""
    def dump(handle: TextIO) -> None:
        for row in rows:
            handle.write(json.dumps(row) + "\n")

    if path is None:
        dump(sys.stdout)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        dump(handle)


# -- view -------------------------------------------------------------------------------------


def add_view_command(commands: argparse._SubParsersAction) -> None:
    """Register ``flexmdm view TRACE [--out page.html] [--tokenizer DIR] [--sequence I]``."""
    parser = commands.add_parser(
        "view", help="write an HTML page that replays the generation of one traced sequence",
        description="Reads a trace written by 'flexmdm sample --trace' and writes one self-contained HTML "
        "page (no network needed) with a step slider and a play button.",
    )
    parser.add_argument("trace", type=Path, help="trace file (.jsonl)")
    parser.add_argument("--out", type=Path, default=None,
                        help="the HTML page to write (default: TRACE with the suffix .html)")
    parser.add_argument("--tokenizer", type=Path, default=None, metavar="DIR",
                        help="folder holding an HF tokenizer.json to decode tokens (default: the traced "
                        "model's tokenizer when it has one, else token ids)")
    parser.add_argument("--sequence", type=int, default=0, metavar="I", help="which sequence to show (default 0)")
    parser.add_argument("--title", default=None, help="page title")
    parser.add_argument("--lengths-png", type=Path, default=None, metavar="PNG",
                        help="also draw the length of every traced sequence over time")
    parser.set_defaults(run=run_view)


def run_view(args: argparse.Namespace) -> int:
    """Write the replay page of one sequence of ``args.trace``."""
    from flexmdm.viz import length_over_time, plot_lengths_over_time, read_trace_jsonl, render_page, tokenizer_decoder

    if not args.trace.is_file():
        raise FileNotFoundError(f"no trace file {args.trace}")
    if args.tokenizer is not None and not args.tokenizer.exists():
        raise FileNotFoundError(f"no tokenizer folder {args.tokenizer}")
    try:
        header, events = read_trace_jsonl(args.trace)
        tokenizer = args.tokenizer or header["metadata"].get("model")
        decode = tokenizer_decoder(tokenizer) if tokenizer else None
        if args.tokenizer is not None and decode is None:
            print(f"{args.tokenizer} holds no tokenizer.json: showing token ids", file=sys.stderr)
        out = args.out if args.out is not None else args.trace.with_suffix(".html")
        render_page((header, events), out, decode=decode, sequence=args.sequence, title=args.title)
        if args.lengths_png is not None:
            plot_lengths_over_time(*length_over_time(header, events), args.lengths_png)
    except (ValueError, IndexError) as error:
        raise UserError(f"{args.trace}: {error}") from None
    print(f"wrote {out} (sequence {args.sequence} of {header['num_sequences']}, {len(events)} events)",
          file=sys.stderr)
    return 0


# -- entry point --------------------------------------------------------------------------------

def add_bench_command(commands: argparse._SubParsersAction) -> None:
    from flexmdm.bench.commands import add_bench_command as add

    add(commands)


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_train_command, add_sample_command, add_view_command, add_bench_command, add_plan_command,
]
"""Functions registering one subcommand each (in ``--help`` order)."""


def build_parser() -> argparse.ArgumentParser:
    """The ``flexmdm`` parser with every subcommand of :data:`COMMANDS`."""
    parser = _Parser(prog="flexmdm", description="Flexible-length masked diffusion: train, sample, benchmark.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in COMMANDS:
        add_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    The parsed namespace keeps ``argv`` (the list), so that benchmarks record their command.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        args.argv = argv
        return args.run(args)
    except Exception as error:
        if not isinstance(error, _user_errors()):
            raise
        print(f"flexmdm: error: {error}", file=sys.stderr)
        return 2


def _user_errors() -> tuple[type[Exception], ...]:
    """Exceptions reported as one line (imported lazily: ``--help`` must not load torch)."""
    from flexmdm.training.config import ConfigError

    return UserError, ConfigError, FileNotFoundError


if __name__ == "__main__":
    sys.exit(main())
