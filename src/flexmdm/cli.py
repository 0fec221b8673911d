"""The ``flexmdm`` command.

    flexmdm train CONFIG [--set KEY=VALUE ...]
    flexmdm sample MODEL_DIR [--num N] [--steps S] [--policy P] [--param X] ...
    flexmdm view TRACE.jsonl [--out page.html] [--tokenizer DIR] [--sequence I] [--lengths-png PNG]
    flexmdm bench NAME [--quick] --out FILE.json
    flexmdm eval gsm8k|humaneval-infill --model DIR [--data FILE] [--out FILE.json]
    flexmdm plan CONFIG [--world-size N] [--micro-batch B] [--seq-len L] [--json]
    flexmdm --version

``train`` resumes automatically from ``output_dir/checkpoints/latest`` when it exists; run it
under ``torchrun --nproc_per_node N -m flexmdm.cli train CONFIG`` for data parallelism.
``sample`` reads the schedules, vocabulary and maximum length from the model's ``config.json``.

Each subcommand is one ``add_<name>_command(subparsers)`` function that registers its parser
and sets ``run`` to a function ``(args) -> exit code``; list it in :data:`COMMANDS`. User errors
(missing files, bad options, invalid configurations, damaged files) raise :class:`UserError`,
:class:`~flexmdm.training.config.ConfigError`, :class:`FileNotFoundError` or
:class:`~flexmdm.errors.InputFileError`, which :func:`main` prints as one line with exit code 2,
as it does for an :class:`OSError` on a path the user chose (read-only, full, not a folder).
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from flexmdm import __version__
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
    """Train (or resume) the configured run; under torchrun every rank runs this.

    SIGINT or SIGTERM stops it after the current step with a checkpoint; the exit code is then
    128 + the signal's number (130 for Ctrl-C).
    """
    from flexmdm.training import load_config, train
    from flexmdm.training.interrupt import TrainingInterrupted

    config = load_config(args.config, args.overrides)
    reporting = os.environ.get("RANK", "0") == "0"  # torchrun: one report
    try:
        result = train(config)
    except TrainingInterrupted as stop:
        if reporting:
            print(f"stopped after step {stop.step} ({signal.Signals(stop.signum).name}, exit code "
                  f"{stop.exit_code}); checkpoint {stop.checkpoint}: run the same command to resume", file=sys.stderr)
        return stop.exit_code
    if reporting:
        print(_train_report(result, config.train.steps), file=sys.stderr)
    return 0


def _train_report(result: Any, steps: int) -> str:
    """The last line of ``flexmdm train``: what it did, or how to train again when it had nothing to do."""
    if result.start_step == result.steps:
        return (f"{result.output_dir} is already trained to step {result.steps} (train.steps={steps}); model at "
                f"{result.model_dir}. To train again, choose another output directory (--set output_dir=DIR) "
                f"or more steps (--set train.steps=N)")
    return f"trained (last loss {result.loss:.4f}) to step {result.steps} in {result.elapsed_s:.1f}s; model at {result.model_dir}"


# -- sample -------------------------------------------------------------------------------------

POLICIES = ("tau", "top_probability", "margin", "entropy", "left_most", "random", "med", "eb", "confidence")

_WINDOW = ("a sliding-window factor γ1 > 0", lambda value: value > 0)
POLICY_PARAMS: dict[str, tuple[str, Callable[[float], bool]]] = {
    "med": ("an entropy threshold λ >= 0 in nats (default 0.2)", lambda value: value >= 0),
    "eb": ("an entropy budget γ >= 0 in nats (default 0.1)", lambda value: value >= 0),
    "confidence": ("a probability threshold in [0, 1] (default 0.9; 1: one token per step unless certain)",
                   lambda value: 0 <= value <= 1),
    **dict.fromkeys(("top_probability", "margin", "entropy", "left_most", "random"), _WINDOW),
}
"""What ``--param`` is for each policy that takes one, and which values are valid."""


def add_sample_command(commands: argparse._SubParsersAction) -> None:
    """Register ``flexmdm sample MODEL_DIR [options]``."""
    parser = commands.add_parser(
        "sample", help="generate sequences from an exported model",
        description="Policies: tau (τ-leaping, no --param); top_probability, margin, entropy, left_most, "
        "random (adaptive: K ~ Poisson masks per step, the most confident first; --param is the sliding "
        "window factor γ1 > 0); med (--param λ >= 0, default 0.2); eb (--param γ >= 0, default 0.1); "
        "confidence (--param threshold in [0, 1], default 0.9). Samples are written batch by batch to "
        "OUT.partial, renamed to OUT once all are done; Ctrl-C keeps the finished batches there. The "
        "samples depend on --seed and --batch-size.",
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
    parser.add_argument("--suffix", default=None,
                        help="frozen suffix (like --prompt): infill between the prompt (if any) and it; FlexMDM "
                        "inserts only there, MDM fills the canvas of --max-length between them")
    parser.add_argument("--final-fill", choices=("sequential", "parallel", "rule"), default=None,
                        help="masks left at t = 1: one per call (exact), all at once, or by the policy "
                        "(rate-free policies, FlexMDM); default: rule for rate-free policies, else sequential")
    add_insertion_options(parser)
    parser.add_argument("--batch-size", type=int, default=256, help="samples per batch (default 256)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu",
                        help="where the model runs and every sampler tensor lives: cpu (default), cuda, cuda:1, ...")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSONL output, written batch by batch to OUT.partial and renamed to OUT when "
                        "complete (default: stdout)")
    parser.add_argument("--trace", type=Path, default=None,
                        help="write the sampler's events as JSONL (FlexMDM) when sampling ends (on Ctrl-C: those "
                        "of the finished batches, to TRACE.partial); replay them with 'flexmdm view'")
    parser.set_defaults(run=run_sample)


def _model_dir(path: Path) -> Path:
    """``path`` itself or its ``model/`` subdirectory, whichever holds ``config.json``."""
    for candidate in (path, path / "model"):
        if (candidate / "config.json").is_file():
            return candidate
    raise UserError(f"{path} holds no exported model (no config.json in it or in {path / 'model'})")


def _check_param(policy: str, param: float | None) -> None:
    """Reject a ``--param`` that ``--policy`` does not take or that is out of its range."""
    if param is None:
        return
    if policy not in POLICY_PARAMS:
        raise UserError(f"--param is not used by --policy {policy}")
    meaning, valid = POLICY_PARAMS[policy]
    if not (math.isfinite(param) and valid(param)):
        raise UserError(f"--param {param:g}: --policy {policy} takes {meaning}")


def _unmasking_rule(policy: str, param: float | None) -> Any:
    """The :class:`~flexmdm.sampling.UnmaskingRule` of ``--policy`` with ``--param`` (checked by
    :func:`_check_param`)."""
    from flexmdm.sampling import Adaptive, ConfidenceThreshold, EntropyBounded, EntropySum, TauLeaping

    if policy == "tau":
        return TauLeaping()
    if policy == "med":
        return EntropyBounded(0.2 if param is None else param)
    if policy == "eb":
        return EntropySum(0.1 if param is None else param)
    if policy == "confidence":
        return ConfidenceThreshold(0.9 if param is None else param)
    return Adaptive(policy, window_factor=param)


def add_insertion_options(parser: argparse.ArgumentParser) -> None:
    """``--insertion``, ``--certainty`` and ``--refresh`` (read back by :func:`_insertion`)."""
    parser.add_argument("--insertion", choices=("poisson", "binomial", "exact"), default="poisson",
                        help="FlexMDM arrivals: poisson (Algorithm 1), binomial (exact interval probability) "
                        "or exact (one at a time; needs a rate-free policy; --steps is then a call budget)")
    parser.add_argument("--certainty", type=float, default=None, metavar="C",
                        help="FlexMDM: insert at once every gap count at least this probable (a model with a "
                        "count head)")
    parser.add_argument("--refresh", action="store_true",
                        help="FlexMDM grid arrivals: re-estimate the gaps after each step's reveals (one more call)")


def _insertion(args: argparse.Namespace, rule: Any, inserts: bool, config: dict[str, Any]) -> Any:
    """The :class:`~flexmdm.sampling.Insertion` of ``--insertion``, ``--certainty`` and ``--refresh``
    for a model that ``inserts`` (a FlexMDM; None for others)."""
    from flexmdm.sampling import Insertion

    chosen = args.insertion != "poisson" or args.certainty is not None or args.refresh
    if not inserts:
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


def _token_ids(text: str, option: str, pipe: Any) -> list[int]:
    """Token ids of ``--prompt`` or ``--suffix``: text with a tokenizer, else space-separated ids.

    Raises:
        UserError: empty, or naming the words typed (or the ids) that the model lacks or that are
            MASK or PAD.
    """
    prompt: Any = text
    if pipe.tokenizer is None:
        try:
            prompt = [int(word) for word in text.split()]
        except ValueError:
            raise UserError(f"{option} {text!r}: expected space-separated token ids (the model has no tokenizer)") from None
    try:
        ids = pipe.encode(prompt, name=option)
    except ValueError as error:
        raise UserError(str(error)) from None
    if not ids:
        raise UserError(f"{option} is empty")
    return ids


def _check_sample_args(args: argparse.Namespace) -> None:
    """Reject out-of-range numbers and clashing outputs before any model is loaded."""
    for name in ("num", "steps", "batch_size"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.temperature < 0:
        raise UserError(f"--temperature must be >= 0, got {args.temperature}")
    if args.max_length is not None and args.max_length < 1:
        raise UserError(f"--max-length must be >= 1, got {args.max_length}")
    if args.block is not None and args.block < 1:
        raise UserError(f"--block must be >= 1, got {args.block}")
    if args.out is not None and args.trace is not None and args.out.resolve() == args.trace.resolve():
        raise UserError(f"--out and --trace both name {args.out}")
    _check_param(args.policy, args.param)


@dataclass
class _SampleJob:
    """A loaded model and everything ``flexmdm sample`` draws one batch with."""

    args: argparse.Namespace
    pipe: Any
    max_length: int
    prefix: list[int]
    suffix: list[int] | None
    options: Any

    @property
    def vocab(self) -> Any:
        return self.pipe.vocab

    def batch(self, count: int, generator: Any) -> Any:
        """One :class:`~flexmdm.sampling.SampleOutput` of ``count`` samples."""
        from flexmdm.families import Affixes

        affixes = Affixes([self.prefix] * count, None if self.suffix is None else [self.suffix] * count,
                          self.vocab, self.max_length)
        try:
            return self.pipe.sample(affixes, max_length=self.max_length, generator=generator, options=self.options)
        except ValueError as error:
            raise UserError(str(error)) from None

    def rows(self, out: Any) -> list[dict[str, Any]]:
        """The JSON rows of a batch: tokens, length, network calls and, with a tokenizer, text."""
        rows = []
        for sequence, nfe in zip(out.sequences(), out.nfe.tolist()):
            row = {"tokens": sequence, "length": len(sequence), "nfe": nfe}
            if self.pipe.tokenizer is not None:
                row["text"] = self.pipe.decode(sequence)
            rows.append(row)
        return rows

    def trace_metadata(self) -> dict[str, Any]:
        """What the trace file records about the run."""
        args = self.args
        return {"model": str(self.pipe.directory.resolve()), "steps": args.steps, "policy": args.policy,
                "param": args.param, "block": args.block, "temperature": args.temperature, "seed": args.seed,
                "batch_size": args.batch_size}


def _load_sample_job(args: argparse.Namespace) -> _SampleJob:
    """Load the model of ``args.checkpoint`` and check every option against it."""
    from flexmdm.families import SamplingOptions
    from flexmdm.pipeline import Pipeline

    directory = _model_dir(args.checkpoint)
    try:
        pipe = Pipeline.from_pretrained(directory, device=args.device)
    except ValueError as error:
        raise UserError(str(error)) from None
    if args.trace is not None and not pipe.family.inserts:
        raise UserError("--trace is only available for flexmdm models")
    max_length = args.max_length or pipe.max_length
    if max_length > pipe.model_limit:
        raise UserError(f"--max-length {max_length} exceeds the model's max_length {pipe.model_limit}")
    prefix = [] if args.prompt is None else _token_ids(args.prompt, "--prompt", pipe)
    suffix = None if args.suffix is None else _token_ids(args.suffix, "--suffix", pipe)
    given = len(prefix) + len(suffix or [])
    if given >= max_length:
        named = " and ".join(name for name, ids in (("--prompt", prefix), ("--suffix", suffix)) if ids)
        raise UserError(f"{named} hold {given} tokens, not less than --max-length {max_length}: nothing left to generate")
    rule = _unmasking_rule(args.policy, args.param)
    if args.block is not None:
        from flexmdm.sampling import SemiAutoregressive

        rule = SemiAutoregressive(rule, block_size=args.block)
    options = SamplingOptions(steps=args.steps, rule=rule, temperature=args.temperature, final_fill=args.final_fill,
                              insertion=_insertion(args, rule, pipe.family.inserts, pipe.config),
                              trace=args.trace is not None)
    try:
        pipe.family.check(options)
    except ValueError as error:
        raise UserError(f"--final-fill: {error}") from None
    return _SampleJob(args, pipe, max_length, prefix, suffix, options)


@dataclass
class _Written:
    """What has been written so far: rows, their sums, and (when tracing) traces and finals."""

    count: int = 0
    total_length: int = 0
    total_nfe: int = 0
    traces: list[Any] = field(default_factory=list)
    finals: list[list[int]] = field(default_factory=list)

    def add(self, rows: list[dict[str, Any]], trace: Any) -> None:
        """Count one written batch (and keep its trace when there is one)."""
        self.count += len(rows)
        self.total_length += sum(row["length"] for row in rows)
        self.total_nfe += sum(row["nfe"] for row in rows)
        if trace is not None:
            self.traces.append(trace)
            self.finals += [row["tokens"] for row in rows]


def _open_outputs(args: argparse.Namespace) -> tuple[Any, Any]:
    """``(out file or None for stdout, trace file or None)``, created before sampling starts."""
    from flexmdm.output import OutputError, PartialFile

    out = trace = None
    try:
        out = None if args.out is None else PartialFile(args.out, "--out")
        trace = None if args.trace is None else PartialFile(args.trace, "--trace")
    except OutputError as error:
        if out is not None:
            out.discard()
        raise UserError(str(error)) from None
    return out, trace


def _write_rows(rows: list[dict[str, Any]], out: Any) -> None:
    """Append ``rows`` as JSON lines to ``out`` (stdout when None), at once."""
    lines = [json.dumps(row) + "\n" for row in rows]
    if out is None:
        sys.stdout.write("".join(lines))
        sys.stdout.flush()
    else:
        out.write_lines(lines)


def _write_trace(job: _SampleJob, written: _Written, trace: Any) -> None:
    """Write the traces of every written batch into ``trace`` (a :class:`~flexmdm.output.PartialFile`)."""
    from flexmdm.viz.trace_io import trace_lines

    trace.write_lines(trace_lines(written.traces, vocab=job.vocab, final_sequences=written.finals,
                                  metadata=job.trace_metadata()))


def run_sample(args: argparse.Namespace) -> int:
    """Generate ``--num`` sequences batch by batch; each finished batch is written at once.

    A progress bar runs on stderr when it is a terminal. On Ctrl-C the finished batches stay in
    ``OUT.partial`` (and their trace in ``TRACE.partial``), a line says so, and the exit code is
    130; the same ``--seed`` and ``--batch-size`` reproduce them.
    """
    import torch
    from tqdm import tqdm

    from flexmdm.output import OutputError

    _check_sample_args(args)
    job = _load_sample_job(args)
    out, trace = _open_outputs(args)
    generator = torch.Generator(device=job.pipe.device).manual_seed(args.seed)
    written = _Written()
    progress = tqdm(total=args.num, desc="sampling", unit="sample", file=sys.stderr, disable=None, dynamic_ncols=True)
    try:
        for start in range(0, args.num, args.batch_size):
            batch = job.batch(min(args.batch_size, args.num - start), generator)
            rows = job.rows(batch)
            _write_rows(rows, out)
            written.add(rows, batch.trace)
            progress.update(len(rows))
    except KeyboardInterrupt:
        progress.close()
        return _interrupted(job, written, out, trace)
    except OutputError as error:
        progress.close()
        _discard(out, trace)
        raise UserError(str(error)) from None
    progress.close()
    try:
        if out is not None:
            out.finish()
    except OutputError as error:
        _discard(trace)
        raise UserError(str(error)) from None
    print(f"{written.count} samples, mean length {written.total_length / written.count:.2f}, mean NFE "
          f"{written.total_nfe / written.count:.1f}" + (f" -> {args.out}" if args.out else ""), file=sys.stderr)
    return 0 if trace is None else _finish_trace(job, written, trace)


def _discard(*files: Any) -> None:
    """Remove the partial files (None entries are skipped)."""
    for file in files:
        if file is not None:
            file.discard()


def _finish_trace(job: _SampleJob, written: _Written, trace: Any) -> int:
    """Write the trace of a finished run under its final name; the exit code."""
    from flexmdm.output import OutputError

    try:
        _write_trace(job, written, trace)
    except KeyboardInterrupt:
        trace.discard()
        print("flexmdm: interrupted while writing the trace: no trace written (the samples are complete)",
              file=sys.stderr)
        return 130
    except OutputError as error:
        raise UserError(f"{error} (the samples are complete)") from None
    trace.finish()
    return 0


def _interrupted(job: _SampleJob, written: _Written, out: Any, trace: Any) -> int:
    """Keep what Ctrl-C left (every finished batch), say where, and return exit code 130."""
    args = job.args
    if written.count == 0:
        _discard(out, trace)
        print(f"flexmdm: interrupted before the first batch of {args.batch_size} was done; nothing written",
              file=sys.stderr)
        return 130
    where = "stdout" if out is None else out.keep()
    message = (f"flexmdm: interrupted: {written.count} of {args.num} samples written to {where} (partial; "
               f"--seed {args.seed} --batch-size {args.batch_size} gives them again)")
    if trace is not None:
        _write_trace(job, written, trace)
        message += f", their trace in {trace.keep()}"
    print(message, file=sys.stderr)
    return 130


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
    from flexmdm.errors import naming
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
        with naming(out):
            render_page((header, events), out, decode=decode, sequence=args.sequence, title=args.title)
        if args.lengths_png is not None:
            with naming(args.lengths_png):
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


def add_eval_command(commands: argparse._SubParsersAction) -> None:
    from flexmdm.evaluation.commands import add_eval_command as add

    add(commands)


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_train_command, add_sample_command, add_view_command, add_bench_command, add_eval_command,
    add_plan_command,
]
"""Functions registering one subcommand each (in ``--help`` order)."""


def build_parser() -> argparse.ArgumentParser:
    """The ``flexmdm`` parser with every subcommand of :data:`COMMANDS`."""
    parser = _Parser(prog="flexmdm", description="Flexible-length masked diffusion: train, sample, benchmark.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in COMMANDS:
        add_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    The parsed namespace keeps ``argv`` (the list), so that benchmarks record their command. User
    errors (:func:`_user_errors`) and I/O errors on the user's paths (:func:`_path_problem`) are
    printed as one line with exit code 2; Ctrl-C as one line with exit code 130.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        args.argv = argv
        return args.run(args)
    except KeyboardInterrupt:
        print("flexmdm: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except Exception as error:
        message = str(error) if isinstance(error, _user_errors()) else _path_problem(error)
        if message is None:
            raise
        print(f"flexmdm: error: {message}", file=sys.stderr)
        return 2


def _user_errors() -> tuple[type[Exception], ...]:
    """Exceptions reported as one line (imported lazily: ``--help`` must not load torch)."""
    from flexmdm.errors import InputFileError
    from flexmdm.training.config import ConfigError

    return UserError, ConfigError, FileNotFoundError, InputFileError


_PATH_ERRNOS = {
    errno.EACCES: "choose a writable location or fix its permissions",
    errno.EPERM: "choose a writable location or fix its permissions",
    errno.EROFS: "choose a location on a writable file system",
    errno.ENOSPC: "free some space or choose another location",
    errno.EDQUOT: "free some space or choose another location",
    errno.EFBIG: "choose another location",
    errno.EISDIR: "give a file, not a folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.ENAMETOOLONG: "choose a shorter path",
}
"""The I/O errors that are about a path the user chose (not about the program), with what to do."""


def _path_problem(error: Exception) -> str | None:
    """One line for an :class:`OSError` about a user's path (see :data:`_PATH_ERRNOS`), else None."""
    if not isinstance(error, OSError) or error.filename is None or error.errno not in _PATH_ERRNOS:
        return None
    return f"{error.filename}: {error.strerror}; {_PATH_ERRNOS[error.errno]}"


if __name__ == "__main__":  # python -m flexmdm.cli: run the imported module, whose UserError other modules raise
    from flexmdm.cli import main as imported_main

    sys.exit(imported_main())
