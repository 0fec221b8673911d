"""Infilling task: function extraction, module split, spans, metrics, layouts and the corpus cache."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap

import pytest
import torch

from flexmdm.interpolant import FlexInterpolant
from flexmdm.schedules import schedule_from_config
from flexmdm.tasks.infill import (
    InfillTask,
    candidate_spans,
    cut,
    exact_match,
    extract_functions,
    infill_metrics,
    length_abs_error,
    parse_rate,
    parses,
    split_by_module,
    stdlib_functions,
)
from flexmdm.tasks.infill.functions import module_name
from flexmdm.tasks.base import get_task_class
from tests.infill_fixtures import write_modules

SOURCE = textwrap.dedent('''\
    """Module docstring."""
    import functools


    @functools.lru_cache
    def outer(x,   y = 2):
        """Docstring removed."""
        def inner(z):
            return z * 2  # comment dropped
        return inner(x) + y


    class Thing:
        def method(self):
            """Only a docstring."""

        async def later(self):
            await self.method()
    ''')


def test_extract_functions_removes_docstrings_and_decorators_and_canonicalises():
    functions = extract_functions(SOURCE, "pkg.mod")
    assert [f.name for f in functions] == ["outer", "outer.inner", "Thing.method", "Thing.later"]
    assert {f.module for f in functions} == {"pkg.mod"}
    assert functions[0].source == ("def outer(x, y=2):\n\n    def inner(z):\n        return z * 2\n"
                                   "    return inner(x) + y\n")
    assert functions[1].source == "def inner(z):\n    return z * 2\n"
    assert functions[2].source == "def method(self):\n    pass\n"
    assert functions[3].source == "async def later(self):\n    await self.method()\n"
    for function in functions:
        ast.parse(function.source)
        assert "Docstring" not in function.source and "#" not in function.source


def test_extract_functions_of_a_real_stdlib_module_parse_and_round_trip():
    source = inspect.getsource(textwrap)
    functions = extract_functions(source, "textwrap")
    names = {f.name for f in functions}
    assert {"dedent", "indent", "TextWrapper.wrap", "TextWrapper.fill", "indent.predicate"} <= names
    for function in functions:
        tree = ast.parse(function.source)
        assert ast.unparse(tree) + "\n" == function.source  # already canonical


def test_stdlib_functions_walks_a_folder_skips_tests_and_broken_files_and_deduplicates(tmp_path):
    root = write_modules(tmp_path)
    functions = stdlib_functions(root)
    modules = {f.module for f in functions}
    assert modules == {f"pkg.mod{i}" for i in range(12)}
    assert len({f.source for f in functions}) == len(functions)
    # Box.__init__ is identical in every module: kept once, from the first module in path order
    inits = [f for f in functions if f.name.endswith("__init__")]
    assert len(inits) == 1 and inits[0].module == "pkg.mod0"
    assert module_name(root / "pkg" / "__init__.py", root) == "pkg"
    with pytest.raises(FileNotFoundError):
        stdlib_functions(tmp_path / "missing")


def test_split_by_module_keeps_modules_whole_and_is_deterministic(tmp_path):
    functions = stdlib_functions(write_modules(tmp_path))
    train, held_out = split_by_module(functions, 0.3, seed=0)
    assert len(train) + len(held_out) == len(functions) and train and held_out
    assert not {f.module for f in train} & {f.module for f in held_out}
    assert split_by_module(list(reversed(functions)), 0.3, seed=0)[1] == list(reversed(held_out))
    assert split_by_module(functions, 0.0)[1] == []
    with pytest.raises(ValueError, match="held_out_fraction"):
        split_by_module(functions, 1.0)


def test_candidate_spans_exact_lists():
    counts = [5, 3, 10, 2, 4]  # line 0 is the def line and never part of a span
    assert candidate_spans(counts, "single_line", max_middle_tokens=9) == [(1, 1), (3, 1), (4, 1)]
    assert candidate_spans(counts, "multi_line", max_lines=3, max_middle_tokens=13) == [
        (1, 2), (2, 2), (3, 2)]  # (1, 3) = 15 and (2, 3) = 16 tokens exceed 13
    assert candidate_spans(counts, "multi_line", max_lines=4, max_middle_tokens=100) == [
        (1, 2), (1, 3), (1, 4), (2, 2), (2, 3), (3, 2)]
    assert candidate_spans([4], "single_line") == []
    with pytest.raises(ValueError, match="kind"):
        candidate_spans(counts, "whole")
    with pytest.raises(ValueError, match="max_lines"):
        candidate_spans(counts, "multi_line", max_lines=1)


def test_cut_reassembles_the_function():
    lines = ["def f(x):\n", "    y = x\n", "    return y\n"]
    ids = [[1, 2], [3], [4, 5, 6]]
    example = cut(lines, ids, (1, 1), "single_line", "m:f")
    assert (example.prefix_text, example.middle_text, example.suffix_text) == (lines[0], lines[1], lines[2])
    assert (example.prefix, example.middle, example.suffix) == ((1, 2), (3,), (4, 5, 6))
    assert example.source == "".join(lines)
    tail = cut(lines, ids, (1, 2), "multi_line")
    assert tail.suffix == () and tail.suffix_text == "" and tail.middle == (3, 4, 5, 6)
    for bad in ((0, 1), (2, 2), (1, 0)):
        with pytest.raises(ValueError, match="span"):
            cut(lines, ids, bad, "single_line")


def test_metrics_exact_values():
    assert parses("def f():\n    return 1\n") and not parses("def f(:\n")
    assert exact_match(["a\n", "b\n", "c"], ["a\n", "x\n", "c\n"]) == pytest.approx(1 / 3)
    prefixes, suffixes = ["def f():\n", "def g():\n"], ["", "    return 2\n"]
    assert parse_rate(prefixes, ["    return 1\n", "    x = (\n"], suffixes) == 0.5
    assert length_abs_error([3, 5, 0], [4, 5, 2]) == 1.0
    row = infill_metrics(prefixes, ["    return 1\n", "    pass\n"], suffixes,
                         ["    return 1\n", "    y = 0\n"], [3, 2], [3, 4])
    assert row == {"exact_match": 0.5, "parse_rate": 1.0, "length_abs_error": 1.0, "n": 2}
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        exact_match(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no example"):
        length_abs_error([], [])


@pytest.fixture
def tasks(tmp_path):
    root = write_modules(tmp_path / "src")
    options = dict(source=str(root), vocab_size=300, max_function_tokens=80, max_middle_tokens=24,
                   held_out_fraction=0.3, cache_dir=str(tmp_path / "cache"))
    return InfillTask(layout="flexmdm", **options), InfillTask(layout="mdm", **options)


def test_task_is_registered_and_validates_options(tmp_path):
    assert get_task_class("infill") is InfillTask
    with pytest.raises(ValueError, match="layout"):
        InfillTask(layout="causal")
    with pytest.raises(ValueError, match="folder"):
        InfillTask(source=str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="single_line_fraction"):
        InfillTask(single_line_fraction=1.5)


def test_corpus_splits_by_module_and_round_trips_through_the_cache(tasks):
    flex, mdm = tasks
    corpus = flex.corpus
    assert not {f.module for f in corpus.functions["train"]} & {f.module for f in corpus.functions["validation"]}
    for split in ("train", "validation"):
        for function, lines in zip(corpus.functions[split], corpus.line_ids[split]):
            assert [flex.decode(ids) for ids in lines] == function.lines  # each line decodes to itself
            assert len(lines) >= 2 and sum(map(len, lines)) <= flex.max_function_tokens
    assert (flex.cache_path / "corpus.npz").is_file() and mdm.cache_path == flex.cache_path
    cached = mdm.corpus  # the layout does not change the corpus: read from the cache
    assert cached.functions == corpus.functions and cached.line_ids == corpus.line_ids
    assert mdm.vocab == flex.vocab and flex.vocab.size == 300


def test_flexmdm_layout_freezes_prefix_and_suffix_and_opens_only_the_middle(tasks):
    flex, _ = tasks
    batch = flex.sample_batch(32, torch.Generator().manual_seed(0))
    sources = {f.source for f in flex.corpus.functions["train"]}
    assert batch.x1.shape == (32, flex.max_length)
    for b in range(32):
        n = int(batch.lengths[b])
        assert flex.decode(batch.x1[b, :n].tolist()) in sources
        assert bool((batch.x1[b, n:] == flex.vocab.pad_id).all()) and not bool(batch.frozen[b, n:].any())
        generated = (~batch.frozen[b, :n]).nonzero().squeeze(1)
        prefix = int(generated[0])
        assert generated.tolist() == list(range(prefix, prefix + len(generated)))  # one contiguous middle
        assert 1 <= len(generated) <= flex.max_middle_tokens
        assert batch.allowed_regions[b].nonzero().squeeze(1).tolist() == [prefix]
    interpolant = FlexInterpolant(schedule_from_config("linear"), schedule_from_config("linear"), flex.vocab)
    states = interpolant.sample(batch.x1, batch.lengths, torch.full((32,), 0.5), frozen=batch.frozen,
                                allowed_regions=batch.allowed_regions, generator=torch.Generator().manual_seed(1))
    assert bool((states.lengths >= batch.frozen.sum(1)).all())


def test_mdm_layout_pads_the_middle_to_the_budget(tasks):
    _, mdm = tasks
    batch = mdm.sample_batch(64, torch.Generator().manual_seed(0))
    budget, pad = mdm.max_middle_tokens, mdm.vocab.pad_id
    sources = {f.source for f in mdm.corpus.functions["train"]}
    assert batch.x1.shape == (64, mdm.max_length) and bool((batch.lengths == mdm.max_length).all())
    padded = 0
    for b in range(64):
        open_slots = (~batch.frozen[b]).nonzero().squeeze(1)
        start = int(open_slots[0])
        assert open_slots.tolist() == list(range(start, start + budget))  # always the whole budget
        middle = batch.x1[b, open_slots]
        real = int((middle != pad).sum())
        assert 1 <= real and bool((middle[:real] != pad).all()) and bool((middle[real:] == pad).all())
        padded += real < budget
        assert mdm.decode(batch.x1[b].tolist()) in sources  # PAD removed, the function is whole
    assert padded > 0  # middles shorter than the budget are padded, the PADs are targets


def test_evaluation_examples_are_deterministic_held_out_and_of_the_asked_kind(tasks):
    flex, _ = tasks
    held_out = {f.source for f in flex.corpus.functions["validation"]}
    for part in ("validation", "test"):
        for kind, sizes in (("single_line", {1}), ("multi_line", {2, 3})):
            examples = flex.evaluation_examples(kind, 5, part, seed=3)
            assert examples == flex.evaluation_examples(kind, 5, part, seed=3) and 0 < len(examples) <= 5
            for e in examples:
                assert e.kind == kind and e.source in held_out
                assert e.middle_text.count("\n") in sizes and 1 <= len(e.middle) <= flex.max_middle_tokens
                assert flex.decode(list(e.middle)) == e.middle_text
    with pytest.raises(ValueError, match="kind"):
        flex.evaluation_examples("block", 3)
    with pytest.raises(ValueError, match=r"part must be one of \['validation', 'test'\], got 'train'"):
        flex.evaluation_examples("single_line", 3, "train")


def test_validation_and_test_parts_halve_the_held_out_modules(tasks):
    """Every held-out function lies in exactly one part, no module in both, the same in another task."""
    flex, mdm = tasks
    parts, held_out = flex.evaluation_functions, flex.corpus.functions["validation"]
    assert sorted(parts["validation"] + parts["test"]) == list(range(len(held_out)))
    modules = {part: {held_out[i].module for i in indices} for part, indices in parts.items()}
    assert modules["validation"] and modules["test"] and not modules["validation"] & modules["test"]
    assert mdm.evaluation_functions == parts  # deterministic: from the module names and split_seed alone
    for kind in ("single_line", "multi_line"):
        names = {part: {e.name for e in flex.evaluation_examples(kind, 100, part)} for part in parts}
        assert names["validation"] and names["test"] and not names["validation"] & names["test"]
        assert {name.split(":")[0] for name in names["test"]} <= modules["test"]


