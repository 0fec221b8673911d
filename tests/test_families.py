"""The family module is the only place that switches on a model kind; families own their objectives."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from flexmdm.families import FAMILIES, LAYOUTS, family, layout_family
from flexmdm.interpolant import FlexInterpolant, MDMInterpolant
from flexmdm.objectives import AutoregressiveObjective, FlexMDMObjective, MDMObjective
from flexmdm.schedules import CosineSchedule, LinearSchedule
from flexmdm.vocab import Vocab

SOURCE = Path(__file__).resolve().parents[1] / "src" / "flexmdm"
KINDS = frozenset(FAMILIES)
NAMES = ("kind", "layout")
PENDING: set[str] = set()
"""Modules being rewritten elsewhere; each must leave this set once ported onto the bench skeleton."""


def _named(node: ast.AST) -> bool:
    """A variable or attribute called ``...kind`` or ``...layout``."""
    name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
    return name.endswith(NAMES)


def _kind_constants(node: ast.AST) -> bool:
    """A kind string, or a tuple / list / set holding one."""
    if isinstance(node, ast.Constant):
        return node.value in KINDS
    return isinstance(node, (ast.Tuple, ast.List, ast.Set)) and any(_kind_constants(e) for e in node.elts)


def kind_switches(source: str) -> list[int]:
    """Lines of ``source`` that compare a model kind or layout, or dispatch on one through a table.

    Flagged: a comparison (==, !=, in, not in) with a kind string (or a collection of them) on
    either side; an (in)equality of a variable named ``kind``/``layout`` with anything but a string
    that is not a kind (``span_kind == "single_line"`` is another kind of kind; membership in a
    named collection, ``kind in MODEL_KINDS``, is validation); a dict literal
    keyed by two or more kinds whose values are names (a dispatch table of classes or functions).
    """
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare) and all(
                isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)) for op in node.ops):
            operands = [node.left, *node.comparators]
            if any(_kind_constants(o) for o in operands):
                lines.append(node.lineno)
            elif any(isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops) and any(_named(o) for o in operands) \
                    and not any(isinstance(o, ast.Constant) and isinstance(o.value, str) for o in operands):
                lines.append(node.lineno)
        elif isinstance(node, ast.Dict):
            keys = [k.value for k in node.keys if isinstance(k, ast.Constant)]
            if len(KINDS.intersection(keys)) >= 2 and all(isinstance(v, (ast.Name, ast.Attribute)) for v in node.values):
                lines.append(node.lineno)
    return sorted(set(lines))


@pytest.mark.parametrize("snippet", [
    'if kind == "mdm": pass',
    'ok = config.kind != "flexmdm"',
    'ok = self.layout not in ("flexmdm", "mdm")',
    'ok = "autoregressive" == model_kind',
    'ok = r["model"] == kind',
    'ok = saved.layout == other.layout',
    'cls = {"flexmdm": FlexMDMModel, "mdm": MDMModel}[config.kind]',
])
def test_the_scanner_flags_kind_switches(snippet):
    assert kind_switches(snippet) == [1]


@pytest.mark.parametrize("snippet", [
    'sizes = (1,) if kind == "single_line" else (2,)',
    'if self.kind not in MODEL_KINDS: raise ValueError',
    'steps = {"flexmdm": 300, "mdm": 150}[kind]',
    'configs = {kind: make(kind) for kind in LAYOUTS}',
    'if family(kind).inserts: pass',
])
def test_the_scanner_passes_what_is_not_a_kind_switch(snippet):
    assert kind_switches(snippet) == []


def test_no_module_outside_the_families_switches_on_a_model_kind():
    found = {}
    for path in sorted(SOURCE.rglob("*.py")):
        relative = path.relative_to(SOURCE).as_posix()
        if relative == "families.py" or relative in PENDING:
            continue
        lines = kind_switches(path.read_text())
        if lines:
            found[relative] = lines
    assert found == {}


def test_the_families_switch_on_kind_and_the_pending_modules_still_do():
    # The scanner sees the one module allowed to switch, and PENDING lists only modules still to port.
    assert kind_switches((SOURCE / "families.py").read_text())
    for relative in PENDING:
        assert kind_switches((SOURCE / relative).read_text()), f"{relative} is ported: drop it from PENDING"


def test_layouts_are_the_generating_families():
    assert LAYOUTS == ("flexmdm", "mdm")
    assert [layout_family(name).kind for name in LAYOUTS] == ["flexmdm", "mdm"]
    assert [family(kind).layout for kind in FAMILIES] == list(FAMILIES)
    with pytest.raises(ValueError, match=r"^layout must be 'flexmdm' or 'mdm', got 'autoregressive'$"):
        layout_family("autoregressive")
    with pytest.raises(ValueError, match=r"unknown model kind 'dit'"):
        family("dit")


def test_each_generating_family_builds_its_process_from_the_saved_schedules():
    vocab = Vocab(10, 8, 9)
    schedules = {"insertion": CosineSchedule(), "unmasking": LinearSchedule()}
    flex, mdm = family("flexmdm").process(schedules, vocab), family("mdm").process(schedules, vocab)
    assert type(flex) is FlexInterpolant and type(mdm) is MDMInterpolant
    assert (flex.insertion_schedule, flex.unmasking_schedule, flex.vocab) == (CosineSchedule(), LinearSchedule(), vocab)
    assert (mdm.unmasking_schedule, mdm.vocab) == (LinearSchedule(), vocab)
    with pytest.raises(ValueError, match="^autoregressive models have no masking process"):
        family("autoregressive").process(schedules, vocab)


def test_each_family_builds_its_own_objective():
    vocab = Vocab(10, 8, 9)
    schedules = {"insertion": LinearSchedule(), "unmasking": LinearSchedule()}
    flex = family("flexmdm").objective(schedules, vocab, 16, packed=True)
    mdm = family("mdm").objective(schedules, vocab, 16)
    causal = family("autoregressive").objective({}, vocab, 16)
    assert type(flex) is FlexMDMObjective and flex.options == {"packed": True}
    assert flex.process.insertion_schedule is schedules["insertion"]
    assert flex.process.unmasking_schedule is schedules["unmasking"]
    assert type(mdm) is MDMObjective and (mdm.width, mdm.pad_id, mdm.options) == (16, 9, {})
    assert mdm.process.unmasking_schedule is schedules["unmasking"]
    assert type(causal) is AutoregressiveObjective and causal.pad_id == 9
    assert [f.label for f in FAMILIES.values()] == ["FlexMDM", "MDM", "autoregressive"]
    assert [f.inserts for f in FAMILIES.values()] == [True, False, False]
