"""The transfer benchmark's data: held-out modules and problems stay out of pretraining and instruction pairs."""

import json

import pytest

from flexmdm.tasks.infill.functions import split_by_module, stdlib_functions
from flexmdm.tasks.reasoning.gsm8k import extract_answer
from flexmdm.tasks.transfer import TransferData, build_transfer_data, math_text
from flexmdm.tasks.transfer.evaluation import window


def write_library(root):
    """Twelve small modules of distinct four-to-six-line functions."""
    for m in range(12):
        functions = []
        for f in range(4):
            body = "".join(f"    v{k} = x * {m * 100 + f * 10 + k} + {k}\n" for k in range(2 + f % 3))
            functions.append(f"def fn_{m}_{f}(x):\n{body}    return v1 - {m}\n")
        (root / f"module{m}.py").write_text("\n\n".join(functions))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("lib")
    write_library(root)
    data = TransferData(vocab_size=300, max_length=96, middle_budget=16, held_out_fraction=0.4, num_train_problems=60,
                        num_validation=20, num_test=30, max_steps=3, num_infill=50, num_humaneval=3,
                        stdlib_root=str(root))
    return data, build_transfer_data(tmp_path_factory.mktemp("work"), data, seed=3)


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_held_out_modules_and_problems_never_in_pretraining_or_pairs(built):
    data, files = built
    train, held = split_by_module(stdlib_functions(data.stdlib_root), data.held_out_fraction, seed=3)
    assert len(held) >= 8 and len(train) >= 8  # both sides exist, so the checks below can fail
    corpus = [row["text"] for row in lines(files.corpus)]
    pairs = ["".join((row["prompt"], row["response"], row["suffix"])) for row in lines(files.ift)]
    seen = "\x00".join(corpus + pairs)
    evaluation = files.evaluation()
    for function in held:
        assert function.source not in seen and f"def {function.name}(" not in seen
    for problem in evaluation["math"]["validation"] + evaluation["math"]["test"]:
        assert problem["question"] not in seen
    assert {f.source for f in train} <= set(corpus)  # every train function is pretrained on
    # held-out infills come from held-out modules only, and are whole functions cut at one line
    held_sources = {f.source for f in held}
    assert evaluation["infill"] and all(e["prompt"] + e["response"] + e["suffix"] in held_sources
                                        for e in evaluation["infill"])
    assert not {p["question"] for p in evaluation["math"]["validation"]} & {p["question"] for p in evaluation["math"]["test"]}


def test_pairs_and_corpus_shapes(built):
    data, files = built
    rows = lines(files.ift)
    math = [row for row in rows if row["suffix"] == ""]
    code = [row for row in rows if row["suffix"] != ""]
    assert len(math) == files.meta["ift"]["math"] > 0 and len(code) == files.meta["ift"]["code"] > 0
    assert all(extract_answer(row["response"]) is not None for row in math)
    assert all(row["response"].count("\n") == 1 and row["response"].endswith("\n") for row in code)
    corpus = [row["text"] for row in lines(files.corpus)]
    assert math_text({"question": math[0]["prompt"], "answer": math[0]["response"]}) in corpus
    assert files.meta["corpus"]["documents"] == len(corpus) and files.meta["evaluation"]["humaneval"] == 3
    # the same options and seed reuse the folder; another seed builds another one
    again = build_transfer_data(files.folder.parent, data, seed=3)
    assert again.folder == files.folder and again.ift.read_text() == files.ift.read_text()
    assert build_transfer_data(files.folder.parent, data, seed=4).folder != files.folder


def test_window_keeps_the_end_of_the_prefix_and_the_start_of_the_suffix():
    prefix, suffix = list(range(100)), list(range(200, 240))
    kept_prefix, kept_suffix = window(prefix, suffix, 64, 16)
    assert kept_suffix == list(range(200, 216))  # a quarter of the window
    assert kept_prefix == list(range(68, 100)) and len(kept_prefix) + 16 + len(kept_suffix) == 64
    assert window([1, 2], [3], 64, 16) == ([1, 2], [3])
