"""``flexmdm eval gsm8k`` and ``flexmdm eval humaneval-infill`` on small fixture files.

The exact-metric tests use real saved models whose token head is a constant (zero weights, one
large bias): an MDM that writes the digit 7 in every masked slot, and an MDM whose tokenizer has
one token per code line and that always writes ``    return a + b``. What such a model outputs is
known, so accuracy, pass@1, exact match, parse rate and network calls are known exactly, and the
whole path runs: loading, encoding, sampling, decoding, answer extraction, execution, scoring.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel

from flexmdm.cli import main
from flexmdm.models import ModelConfig, build_model, save_pretrained
from flexmdm.tasks.reasoning import Problem, ReasoningTask, answers_match, generate_problems
from tests.user_errors import Case, check_user_error

TASK = {"task": "reasoning", "num_train": 50, "problem_seed": 0, "min_steps": 2, "max_steps": 2, "max_value": 9}
REASONING = ReasoningTask(**{k: v for k, v in TASK.items() if k != "task"})
TEMPLATE = REASONING.template
LINE = "    return a + b\n"


def _save(model, directory: Path, task: dict, vocab: dict, max_length: int, tokenizer: Tokenizer | None = None):
    metadata = {"schedules": {"insertion": {"name": "linear"}, "unmasking": {"name": "linear"}}, "vocab": vocab,
                "task": task, "max_length": max_length, "step": 0}
    source = None
    if tokenizer is not None:
        source = directory.parent / f"{directory.name}-tokenizer"
        source.mkdir(parents=True)
        tokenizer.save(str(source / "tokenizer.json"))
    return save_pretrained(model, directory, metadata=metadata, tokenizer_dir=source)


def _constant(kind: str, vocab_size: int, mask_id: int, pad_id: int, token: int):
    """A tiny network whose token head always puts logit 20 on ``token`` (0 elsewhere)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind=kind, vocab_size=vocab_size, mask_id=mask_id, pad_id=pad_id, d_model=16,
                                    n_layers=1, n_heads=2, max_length=64))
    with torch.no_grad():
        model.token_head.weight.zero_()
        model.token_head.bias.zero_()
        model.token_head.bias[token] = 20.0
    return model


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("eval-models")
    vocab = TEMPLATE.vocab
    sevens = _constant("mdm", vocab.size, vocab.mask_id, vocab.pad_id, TEMPLATE.ids["7"])
    torch.manual_seed(1)
    flex = build_model(ModelConfig(kind="flexmdm", vocab_size=vocab.size, mask_id=vocab.mask_id, pad_id=vocab.pad_id,
                                   d_model=16, n_layers=1, n_heads=2, max_length=64))
    line_vocab = {"[UNK]": 0, LINE: 1, "[MASK]": 2, "[PAD]": 3}
    tokenizer = Tokenizer(WordLevel(line_vocab, unk_token="[UNK]"))  # no pre-tokenizer: a line is one token
    tokenizer.add_special_tokens(["[UNK]", "[MASK]", "[PAD]"])
    coder = _constant("mdm", 4, 2, 3, 1)
    return {
        "sevens": _save(sevens, root / "sevens", {**TASK, "layout": "mdm"}, vocab.to_config(), TEMPLATE.canvas_width),
        "flex": _save(flex, root / "flex", {**TASK, "layout": "flexmdm"}, vocab.to_config(), TEMPLATE.canvas_width),
        "coder": _save(coder, root / "coder", {"task": "infill", "max_middle_tokens": 1, "layout": "mdm"},
                       {"size": 4, "mask_id": 2, "pad_id": 3}, 3, tokenizer),
    }


def _problems() -> list[Problem]:
    """Three problems whose answer is 7, five whose answer is not."""
    pool = generate_problems(400, seed=5, min_steps=2, max_steps=2, max_value=9)
    sevens = [p for p in pool if p.answer == 7][:3]
    others = [p for p in pool if p.answer != 7][:5]
    return [others[0], sevens[0], others[1], others[2], sevens[1], others[3], sevens[2], others[4]]


def _write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _run(argv: list[str], capsys) -> tuple[str, dict]:
    assert main(argv) == 0
    out = capsys.readouterr().out
    record = json.loads(Path(argv[argv.index("--out") + 1]).read_text()) if "--out" in argv else {}
    return out, record


def test_gsm8k_accuracy_and_calls_are_exact_with_a_known_model(models, tmp_path, capsys):
    problems = _problems()
    records = [p.to_gsm8k() for p in problems]
    records[3] = {"question": problems[3].compact_question(), "answer": f"#### {problems[3].answer}"}  # compact form
    data = _write_jsonl(tmp_path / "test.jsonl", records)
    out = tmp_path / "one.json"
    printed, record = _run(["eval", "gsm8k", "--model", str(models["sevens"]), "--data", str(data), "--policy", "one",
                            "--out", str(out), "--rows"], capsys)
    slots = TEMPLATE.reasoning_width + TEMPLATE.answer_width  # one reveal per call
    assert record["metrics"] == {"accuracy": 3 / 8, "mean_nfe": slots,
                                 "mean_reasoning_length": TEMPLATE.reasoning_width, "well_formed": 1.0, "n": 8}
    assert "accuracy 0.375 (3/8)" in printed and f"mean NFE {slots:.2f}" in printed
    assert [r["correct"] for r in record["rows"]] == [p.answer == 7 for p in problems]
    assert [r["prediction"] for r in record["rows"]] == ["7"] * 8
    assert [r["reference"] for r in record["rows"]] == [str(p.answer) for p in problems]
    assert record["rows"][0]["question"] == problems[0].compact_question()
    for key in ("command", "seed", "wall_seconds", "machine", "model", "data", "settings"):
        assert key in record
    assert record["command"].startswith("flexmdm eval gsm8k --model")
    assert record["model"]["kind"] == "mdm" and record["data"] == str(data.resolve())
    assert record["settings"]["policy"] == "one" and record["settings"]["steps"] == slots

    # every posterior is certain: MED reveals everything at once; early exit stops after one call
    _, med = _run(["eval", "gsm8k", "--model", str(models["sevens"]), "--data", str(data), "--policy", "med",
                   "--num", "5", "--out", str(tmp_path / "med.json")], capsys)
    assert med["metrics"]["mean_nfe"] == 1 and med["metrics"]["accuracy"] == 2 / 5 and "rows" not in med
    _, exit_ = _run(["eval", "gsm8k", "--model", str(models["sevens"]), "--data", str(data), "--policy", "one",
                     "--early-exit", "0.1", "--out", str(tmp_path / "exit.json")], capsys)
    assert exit_["metrics"]["mean_nfe"] == 1 and exit_["metrics"]["accuracy"] == 3 / 8
    assert exit_["settings"]["early_exit"] == 0.1 and exit_["settings"]["exit_reduce"] == "max"


def test_write_held_out_then_evaluate(models, tmp_path, capsys):
    held = tmp_path / "held.jsonl"
    printed, _ = _run(["eval", "gsm8k", "--model", str(models["sevens"]), "--write-held-out", str(held), "--num", "40"],
                      capsys)
    assert "wrote 40 held-out problems" in printed
    problems = REASONING.test_set(40).problems
    assert [json.loads(line) for line in held.read_text().splitlines()] == [p.to_gsm8k() for p in problems]
    _, record = _run(["eval", "gsm8k", "--model", str(models["sevens"]), "--data", str(held), "--out",
                      str(tmp_path / "r.json")], capsys)
    assert record["metrics"]["accuracy"] == sum(p.answer == 7 for p in problems) / 40


def test_gsm8k_with_a_flexmdm_model_is_scored_from_its_rows_and_deterministic(models, tmp_path, capsys):
    data = _write_jsonl(tmp_path / "test.jsonl", [p.to_gsm8k() for p in _problems()])
    argv = ["eval", "gsm8k", "--model", str(models["flex"]), "--data", str(data), "--temperature", "1", "--seed", "3",
            "--rows", "--batch-size", "3"]
    _, first = _run([*argv, "--out", str(tmp_path / "a.json")], capsys)
    _, second = _run([*argv, "--out", str(tmp_path / "b.json"), "--device", "cpu:0"], capsys)
    assert first["rows"] == second["rows"] and first["metrics"] == second["metrics"]
    rows = first["rows"]
    assert len(rows) == 8 and first["model"]["kind"] == "flexmdm"
    assert first["metrics"]["accuracy"] == sum(answers_match(r["prediction"], r["reference"]) for r in rows) / 8
    assert first["metrics"]["mean_nfe"] == sum(r["nfe"] for r in rows) / 8
    assert first["metrics"]["well_formed"] == sum(r["prediction"] is not None and r["reasoning"] is not None
                                                  for r in rows) / 8


HUMANEVAL = [
    # the constant line is the answer: passes, exact
    {"task_id": "T/0", "prompt": 'def add(a, b):\n    """Sum."""\n', "canonical_solution": LINE,
     "test": "def check(f):\n    assert f(1, 2) == 3\n", "entry_point": "add"},
    # wrong arithmetic: parses, fails
    {"task_id": "T/1", "prompt": "def sub(a, b):\n", "canonical_solution": "    return a - b\n",
     "test": "def check(f):\n    assert f(3, 1) == 2\n", "entry_point": "sub"},
    # another line than the reference that still passes the tests; its prefix does not fit (3 lines, room 2)
    {"task_id": "T/2", "prompt": "def first(a, b):\n    if a:\n",
     "canonical_solution": "        return a\n    return b\n",
     "test": "def check(f):\n    assert f(0, 5) == 5 and f(2, 3) == 2\n", "entry_point": "first"},
    # the loop body replaced by a dedented line: does not parse
    {"task_id": "T/3", "prompt": "def g(a, b):\n    for x in a:\n", "canonical_solution": "        b += x\n",
     "test": "def check(f):\n    assert f([1], 2) is None\n", "entry_point": "g"},
]


def test_humaneval_infill_metrics_are_exact_with_a_known_model(models, tmp_path, capsys):
    data = _write_jsonl(tmp_path / "he.jsonl", HUMANEVAL)
    printed, record = _run(["eval", "humaneval-infill", "--model", str(models["coder"]), "--data", str(data),
                            "--out", str(tmp_path / "he.json"), "--rows"], capsys)
    metrics = record["metrics"]
    assert metrics["pass_at_1"] == 0.5 and metrics["exact_match"] == 0.25 and metrics["parse_rate"] == 0.75
    assert metrics["length_abs_error"] == 0 and metrics["context_truncated"] == 0.25 and metrics["n"] == 4
    assert metrics["timeouts"] == 0
    assert [r["status"] for r in record["rows"]] == ["passed", "failed", "passed", "failed"]
    assert [r["generated"] for r in record["rows"]] == [LINE] * 4
    references = [LINE, "    return a - b\n", "    return b\n", "        b += x\n"]
    assert [r["reference"] for r in record["rows"]] == references
    assert "pass@1 0.500" in printed and record["settings"]["middle_budget"] == 1
    assert record["evaluation"] == "humaneval-infill" and record["data"] == str(data.resolve())


def test_humaneval_infill_reads_the_installed_problems_by_default(models, tmp_path, capsys):
    _, record = _run(["eval", "humaneval-infill", "--model", str(models["coder"]), "--num", "2", "--out",
                      str(tmp_path / "he.json"), "--rows"], capsys)
    assert [r["task_id"] for r in record["rows"]] == ["HumanEval/0", "HumanEval/1"]
    assert record["data"].endswith("HumanEval.jsonl.gz") and record["metrics"]["n"] == 2


def _gsm8k_file(tmp: Path, records) -> None:
    _write_jsonl(tmp / "data.jsonl", records)


GOOD = Problem(7, (("buys", 5), ("gives", 3))).to_gsm8k()
ERRORS = [
    Case("missing data file",
         ["eval", "gsm8k", "--model", "{model}", "--data", "{tmp}/none.jsonl", "--out", "{tmp}/r.json"],
         "none.jsonl", absent=["r.json"]),
    Case("malformed line", ["eval", "gsm8k", "--model", "{model}", "--data", "{tmp}/bad.jsonl"], "bad.jsonl:2: not JSON",
         setup=lambda tmp, model: (tmp / "bad.jsonl").write_text(json.dumps(GOOD) + '\n{"question": "x", \n')),
    Case("real GSM8K question", ["eval", "gsm8k", "--model", "{model}", "--data", "{tmp}/data.jsonl"],
         "cannot read this question",
         setup=lambda tmp, model: _gsm8k_file(tmp, [GOOD, {"question": "Natalia sold clips to 48 friends.",
                                                          "answer": "#### 72"}])),
    Case("no final answer", ["eval", "gsm8k", "--model", "{model}", "--data", "{tmp}/data.jsonl"], "record 1",
         setup=lambda tmp, model: _gsm8k_file(tmp, [{"question": GOOD["question"], "answer": "72"}])),
    Case("neither data nor export", ["eval", "gsm8k", "--model", "{model}"], "--data"),
    Case("policy without param",
         ["eval", "gsm8k", "--model", "{model}", "--data", "{tmp}/data.jsonl", "--policy", "one", "--param", "3"],
         "--param", setup=lambda tmp, model: _gsm8k_file(tmp, [GOOD])),
    Case("out is a directory", ["eval", "gsm8k", "--model", "{model}", "--data", "{tmp}/data.jsonl", "--out", "{tmp}"],
         "is a directory", setup=lambda tmp, model: _gsm8k_file(tmp, [GOOD])),
    Case("unknown device", ["eval", "gsm8k", "--model", "{model}", "--data", "{tmp}/data.jsonl", "--device", "gpu"],
         "device 'gpu' is not a device name", setup=lambda tmp, model: _gsm8k_file(tmp, [GOOD])),
    Case("humaneval on a reasoning model", ["eval", "humaneval-infill", "--model", "{model}", "--num", "1"],
         "'reasoning' task"),
    Case("humaneval malformed", ["eval", "humaneval-infill", "--model", "{model}", "--data", "{tmp}/he.jsonl"],
         "he.jsonl:1: lacks", setup=lambda tmp, model: (tmp / "he.jsonl").write_text('{"task_id": "x"}\n')),
]


@pytest.mark.e2e
@pytest.mark.parametrize("case", ERRORS, ids=str)
def test_bad_input_is_a_one_line_error(case, models, tmp_path):
    check_user_error(case, tmp_path, models["sevens"])


@pytest.mark.e2e
def test_gsm8k_on_an_infill_model_is_a_one_line_error(models, tmp_path):
    case = Case("gsm8k on an infill model", ["eval", "gsm8k", "--model", "{model}", "--data", "{tmp}/data.jsonl"],
                "'infill' task", setup=lambda tmp, model: _gsm8k_file(tmp, [GOOD]))
    check_user_error(case, tmp_path, models["coder"])
