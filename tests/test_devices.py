"""Device placement: samplers create every tensor on the model's device, and the trainer's steps and
collectives run on it.

On a CPU-only machine a tensor created without ``device=`` would silently land on the right device.
The sampler tests therefore run under ``torch.device("meta")`` as the default device: a stray
``torch.zeros(n)`` then lands on meta, and a :class:`TorchDispatchMode` recorder sees it (or the
sampler fails on mixing meta and CPU tensors). Either way the test fails. A training step runs whole
with the model on the meta device, which no host-side tensor can be mixed with.
"""

from __future__ import annotations

import collections
import json

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from flexmdm.cli import main
from flexmdm.constraints import Prompt
from flexmdm.interpolant import FlexInterpolant, MDMInterpolant
from flexmdm.models import ModelConfig, build_model, save_pretrained
from flexmdm.pipeline import Pipeline, usable_device
from flexmdm.sampling import (
    ConfidenceThreshold,
    EntropyBounded,
    Insertion,
    SemiAutoregressive,
    TauLeaping,
    mdm_canvas,
    sample_flexmdm,
    sample_mdm,
)
from flexmdm.schedules import LinearSchedule
from flexmdm.tasks.reasoning.inference import AnswerEntropyExit
from flexmdm.training.config import config_from_dict
from flexmdm.training.distributed import DistributedContext
from flexmdm.training.trainer import _Run
from flexmdm.vocab import Vocab
from tests.training.test_training import TINY

VOCAB = Vocab(size=6, mask_id=4, pad_id=5)
SIZES = {"vocab_size": 6, "mask_id": 4, "pad_id": 5, "d_model": 16, "n_layers": 1, "n_heads": 2, "max_length": 24}


class DeviceRecorder(TorchDispatchMode):
    """Counts ``(op, device)`` of every tensor every dispatched op returns."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: collections.Counter[tuple[str, str]] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor):
                self.seen[(str(func), str(value.device))] += 1
        return out

    def devices(self) -> set[str]:
        return {device for _, device in self.seen}

    def elsewhere(self, device: str) -> list[str]:
        return sorted({op for op, where in self.seen if where != device})


def on_the_model_device(run) -> DeviceRecorder:
    """Run ``run()`` with meta as the default device under a recorder; the recorder."""
    recorder = DeviceRecorder()
    with torch.device("meta"), recorder:
        run()
    return recorder


def network(kind: str, **options) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(kind=kind, **SIZES, **options)).eval()


def test_the_recorder_catches_a_tensor_created_without_a_device():
    tokens = torch.zeros(2, 3, dtype=torch.long)
    recorder = on_the_model_device(lambda: tokens + torch.arange(3, device=tokens.device))
    assert recorder.devices() == {"cpu"} and len(recorder.seen) >= 2
    recorder = DeviceRecorder()
    with pytest.raises(RuntimeError, match="meta"), torch.device("meta"), recorder:
        tokens + torch.arange(3)
    assert "meta" in recorder.devices()


FLEX_OPTIONS = [  # the count head is used by Insertion(certainty=...) and by binomial arrivals
    {},
    {"insertion": Insertion("binomial", certainty=0.5, refresh=True), "temperature": 0.7},
    {"insertion": Insertion("binomial"), "count_cap": 0},
    {"insertion": Insertion("exact"), "rule": EntropyBounded(0.3), "final_fill": "rule"},
    {"rule": ConfidenceThreshold(0.5), "final_fill": "parallel", "record_trace": True},
    {"rule": SemiAutoregressive(TauLeaping(), block_size=3), "temperature": 0.0},
    {"early_exit": AnswerEntropyExit(open_id=0, close_id=1, mask_id=4, threshold=2.0), "record_trace": True},
]


@pytest.mark.parametrize("options", FLEX_OPTIONS, ids=range(len(FLEX_OPTIONS)))
def test_flexmdm_sampling_keeps_every_tensor_on_the_model_device(options):
    options = dict(options)
    model = network("flexmdm", count_cap=options.pop("count_cap", 3))
    prompt = Prompt.infill([[0, 2], [1]], [[3], [0, 0]], VOCAB.pad_id)
    generator = torch.Generator().manual_seed(1)
    limit = torch.tensor([12, 9])
    outputs = []

    def run():
        outputs.append(sample_flexmdm(model, FlexInterpolant(LinearSchedule(), LinearSchedule(), VOCAB), steps=6,
                                      max_length=limit, prompt=prompt, generator=generator, **options))

    recorder = on_the_model_device(run)
    assert recorder.elsewhere("cpu") == [] and len(recorder.seen) > 50
    out = outputs[0]
    assert {t.device.type for t in (out.tokens, out.lengths, out.frozen, out.nfe)} == {"cpu"}
    assert (out.lengths <= limit).all()


@pytest.mark.parametrize("options", [{}, {"rule": EntropyBounded(0.3), "final_fill": "parallel"},
                                     {"early_exit": AnswerEntropyExit(open_id=0, close_id=1, mask_id=4)}])
def test_mdm_sampling_keeps_every_tensor_on_the_model_device(options):
    model = network("mdm")
    canvas, frozen = mdm_canvas([[0, 2], [1]], 10, VOCAB, [[3], [0, 0]])
    generator = torch.Generator().manual_seed(1)
    recorder = on_the_model_device(lambda: sample_mdm(model, MDMInterpolant(LinearSchedule(), VOCAB),
                                                      steps=5, canvas=canvas, frozen=frozen, generator=generator,
                                                      **options))
    assert recorder.elsewhere("cpu") == [] and len(recorder.seen) > 20


@pytest.mark.parametrize("name, fragment", [("gpu", "device 'gpu' is not a device name"),
                                            ("meta", "device 'meta' holds no weights"),
                                            ("cuda:99", "device 'cuda:99' is not available here")])
def test_unusable_devices_are_one_line_errors(name, fragment):
    with pytest.raises(ValueError) as error:
        usable_device(name)
    assert fragment in str(error.value) and "\n" not in str(error.value)
    assert usable_device("cpu") == torch.device("cpu")


def test_sample_device_option_reaches_the_pipeline(tmp_path, monkeypatch, capsys):
    """``flexmdm sample --device D`` loads the model onto D and draws from D's generator."""
    model = network("flexmdm")
    save_pretrained(model, tmp_path / "model", metadata={
        "schedules": {"insertion": {"name": "linear"}, "unmasking": {"name": "linear"}},
        "vocab": {"size": 6, "mask_id": 4, "pad_id": 5}, "max_length": 12})
    devices = []
    loader = Pipeline.from_pretrained.__func__

    def recording(cls, directory, *, device="cpu"):
        devices.append(device)
        return loader(cls, directory, device=device)

    monkeypatch.setattr(Pipeline, "from_pretrained", classmethod(recording))
    assert main(["sample", str(tmp_path / "model"), "--num", "3", "--steps", "4", "--device", "cpu:0"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert devices == ["cpu:0"] and len(rows) == 3 and all(row["length"] <= 12 for row in rows)
    assert main(["sample", str(tmp_path / "model"), "--num", "3", "--steps", "4", "--device", "gpu"]) == 2
    assert "device 'gpu' is not a device name" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["flexmdm", "mdm"])
def test_a_training_step_and_its_collectives_stay_on_the_model_device(tmp_path, monkeypatch, kind):
    """A whole optimizer step (two micro-batches, EMA) with the model on meta: any CPU tensor the step
    created and mixed in would fail, and every tensor given to a collective must be on meta too."""
    collected = []

    def recording(self, tensor):
        collected.append(tensor.device)
        return tensor

    monkeypatch.setattr(DistributedContext, "all_reduce_sum", recording)
    config = config_from_dict({**TINY, "model": {**TINY["model"], "kind": kind},
                               "train": {**TINY["train"], "grad_accum": 2, "micro_batch_size": None},
                               "output_dir": str(tmp_path)})
    run = _Run(config, DistributedContext(rank=0, world_size=1, device=torch.device("meta")))
    sums, grad_norm, _ = run.train_step()
    assert collected == [torch.device("meta")]  # the loss normaliser
    assert sums.device.type == grad_norm.device.type == "meta"
    assert {p.device.type for p in [*run.model.parameters(), *run.ema.shadow.values()]} == {"meta"}
    assert run.step == 1 and run.accum == 2
