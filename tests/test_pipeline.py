"""``flexmdm.Pipeline``: load a trained model, generate from text or ids, infill, and fail clearly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from flexmdm import Pipeline, SamplingOptions
from flexmdm.cli import main
from flexmdm.constraints import Prompt
from flexmdm.families import family
from flexmdm.interpolant import FlexInterpolant, MDMInterpolant
from flexmdm.models import load_pretrained
from flexmdm.sampling import EntropyBounded, Insertion, mdm_canvas, sample_flexmdm, sample_mdm
from tests.training.test_training import write_config


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Tiny FlexMDM and MDM toy models (their exported ``model/`` folders)."""
    directory = tmp_path_factory.mktemp("pipeline")
    out = {}
    for kind in ("flexmdm", "mdm"):
        config = write_config(directory, {"model": {"kind": kind}, "train": {"steps": 4, "eval_batches": 0},
                                          "output_dir": str(directory / kind)}, f"{kind}.yaml")
        assert main(["train", str(config)]) == 0
        out[kind] = directory / kind / "model"
    return out


def test_three_lines_from_a_text_prompt(models):
    pipe = Pipeline.from_pretrained(models["flexmdm"])
    generation = pipe.generate("a a", num=5, steps=8, seed=1)
    assert pipe.kind == "flexmdm" and len(generation.ids) == len(generation.texts) == 5
    for ids, text, nfe in zip(generation.ids, generation.texts, generation.nfe):
        assert ids[:2] == [0, 0] and text == " ".join("ab"[i] for i in ids)
        assert len(ids) <= pipe.max_length and nfe >= 1
    assert generation.lengths == [len(ids) for ids in generation.ids]


def test_flexmdm_generation_is_the_sampler_with_the_saved_schedules(models):
    """The pipeline adds no hidden choice: the same call by hand gives the same samples."""
    pipe = Pipeline.from_pretrained(models["flexmdm"])
    rule = EntropyBounded(0.3)
    generation = pipe.generate([0, 1], num=6, steps=7, rule=rule, insertion=Insertion("binomial"),
                               temperature=0.5, seed=3)
    process = FlexInterpolant(pipe.schedules["insertion"], pipe.schedules["unmasking"], pipe.vocab)
    assert type(pipe.process) is FlexInterpolant and vars(pipe.process) == vars(process)
    by_hand = sample_flexmdm(
        pipe.model, process, steps=7, max_length=pipe.max_length,
        prompt=Prompt.prefix([[0, 1]] * 6, pipe.vocab.pad_id), rule=rule, insertion=Insertion("binomial"),
        temperature=0.5, final_fill="rule", generator=torch.Generator().manual_seed(3),
    )
    assert generation.ids == by_hand.sequences() and generation.nfe == by_hand.nfe.tolist()


def test_mdm_generation_fills_the_canvas_by_hand(models):
    pipe = Pipeline.from_pretrained(models["mdm"])
    generation = pipe.generate("b", suffix="a", num=4, steps=5, max_length=9, seed=2)
    canvas, frozen = mdm_canvas([[1]] * 4, 9, pipe.vocab, [[0]] * 4)
    process = MDMInterpolant(pipe.schedules["unmasking"], pipe.vocab)
    assert type(pipe.process) is MDMInterpolant and vars(pipe.process) == vars(process)
    by_hand = sample_mdm(pipe.model, process, steps=5, canvas=canvas, frozen=frozen, generator=torch.Generator().manual_seed(2))
    assert generation.ids == by_hand.sequences()
    assert all(ids[0] == 1 and ids[-1] == 0 and len(ids) <= 9 for ids in generation.ids)


@pytest.mark.parametrize("kind", ["flexmdm", "mdm"])
def test_infilling_keeps_prefix_and_suffix(models, kind):
    generation = Pipeline.from_pretrained(models[kind]).generate("a", suffix="b b", num=6, steps=6, max_length=12)
    assert all(text.startswith("a") and text.endswith("b b") for text in generation.texts)


def test_options_object_and_overrides(models):
    pipe = Pipeline.from_pretrained(models["flexmdm"])
    options = SamplingOptions(steps=6, rule=EntropyBounded(0.2), trace=True)
    assert options.fill == "rule" and SamplingOptions().fill == "sequential"
    generation = pipe.generate(num=3, options=options, seed=0)
    assert generation.output.trace is not None
    assert pipe.generate(num=3, options=options, trace=False, seed=0).ids == generation.ids


@pytest.mark.parametrize("call, fragment", [
    (lambda p: p.generate("a c z"), "'c', 'z' not in the model's vocabulary"),
    (lambda p: p.generate([0, 7]), "token id 7 is not a real token"),
    (lambda p: p.generate([0, 3]), "token id 3 is not a real token"),  # PAD
    (lambda p: p.generate(max_length=999), "max_length must be in [1, 16]"),
    (lambda p: p.generate("a a a", max_length=3), "not less than max_length 3"),
    (lambda p: p.generate(num=0), "num must be >= 1"),
    (lambda p: p.generate(steps=0), "steps must be >= 1"),
])
def test_errors_name_what_is_wrong(models, call, fragment):
    with pytest.raises(ValueError) as error:
        call(Pipeline.from_pretrained(models["flexmdm"]))
    assert fragment in str(error.value)


def test_family_errors(models):
    with pytest.raises(ValueError, match="for FlexMDM models"):
        Pipeline.from_pretrained(models["mdm"]).generate(insertion=Insertion("binomial"))
    with pytest.raises(ValueError, match="known kinds"):
        family("gpt")
    with pytest.raises(ValueError, match="score text"):
        family("autoregressive").generate(None, schedules={}, vocab=None, max_length=1, conditioning=None,
                                          options=SamplingOptions(), generator=None)


def test_from_model_generates_as_the_folder_does(models):
    """A model already in memory and its saved config make the same pipeline as the folder."""
    folder = Pipeline.from_pretrained(models["flexmdm"])
    model, config = load_pretrained(models["flexmdm"])
    memory = Pipeline.from_model(model, config)
    assert memory.directory is None and memory.tokenizer is None and memory.max_length == folder.max_length
    assert memory.generate(num=3, seed=5, steps=8).ids == folder.generate(num=3, seed=5, steps=8).ids
    with pytest.raises(ValueError, match="this model is not a FlexMDM or MDM model"):
        Pipeline.from_model(model, {key: value for key, value in config.items() if key != "schedules"})
