"""Reasoning as infilling: posterior sampling keeps the answer, trace scoring is the chain rule."""

import math

import pytest
import torch

from flexmdm.models import ModelConfig, build_model
from flexmdm.sampling import ConfidenceThreshold, EntropyBounded, EntropySum
from flexmdm.schedules import LinearSchedule
from flexmdm.tasks.reasoning import Problem, ReasoningTemplate, template_parts
from flexmdm.tasks.reasoning.inference import AnswerEntropyExit, answer_log_probability, answer_region, generate

TEMPLATE = ReasoningTemplate(reasoning_width=15, answer_width=2, question_width=7)
V = TEMPLATE.vocab
SCHEDULES = {"insertion": LinearSchedule(), "unmasking": LinearSchedule()}
PROBLEMS = [Problem(7, (("buys", 5), ("gives", 3))), Problem(3, (("triples", 3), ("buys", 6))),
            Problem(9, (("loses", 9), ("finds", 2))), Problem(2, (("doubles", 2), ("doubles", 2)))]


def encoded(problems):
    rows = [TEMPLATE.encode_batch(list(template_parts(p.compact_question(), p.rationale))) for p in problems]
    return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]


def tiny_model(kind, seed=0):
    torch.manual_seed(seed)
    config = ModelConfig(kind=kind, vocab_size=V.size, mask_id=V.mask_id, pad_id=V.pad_id, d_model=16,
                         n_layers=1, n_heads=2, max_length=64)
    return build_model(config).eval()


@pytest.mark.parametrize("kind", ["flexmdm", "mdm"])
@pytest.mark.parametrize("rule", [EntropyBounded(0.5), ConfidenceThreshold(2.0), EntropySum(0.3)], ids=str)
def test_posterior_sampling_never_changes_the_answer(kind, rule):
    questions, _, answers = encoded(PROBLEMS)
    # swap the answers around: the model may disagree, the answer must still stay
    answers = answers[1:] + answers[:1]
    for seed in range(2):
        out = generate(kind, tiny_model(kind, seed), TEMPLATE, SCHEDULES, questions, answers=answers, rule=rule,
                       steps=6, temperature=1.0, generator=torch.Generator().manual_seed(seed))
        assert not bool((out.tokens == V.mask_id).any())
        for row, seq in enumerate(out.sequences()):
            flags = out.frozen[row, : len(seq)].tolist()
            _, answer_ids = TEMPLATE.regions(seq, flags)
            assert [i for i in answer_ids if i != V.pad_id] == answers[row]
            assert seq[: len(questions[row])] == questions[row]
            assert TEMPLATE.decode(seq, flags).answer == TEMPLATE.text(answers[row]).replace(" ", "")


class ChainDenoiser:
    """First answer slot: logit 2 on '1', 1 on '2'. Second: logit 3 on '5' if the first is '1', else on PAD."""

    def __init__(self, flex):
        self.flex, self.times = flex, []

    def __call__(self, x, t, lengths, frozen):
        self.times.append(t.clone())
        logits = torch.zeros(*x.shape, V.size)
        region = answer_region(x, TEMPLATE.ids["<a>"], TEMPLATE.ids["</a>"])
        first = region & ~torch.cat([torch.zeros_like(region[:, :1]), region[:, :-1]], dim=1)
        second = region & ~first
        logits[..., TEMPLATE.ids["1"]] += 2.0 * first
        logits[..., TEMPLATE.ids["2"]] += 1.0 * first
        one_before = torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1) == TEMPLATE.ids["1"]
        logits[..., TEMPLATE.ids["5"]] += 3.0 * (second & one_before)
        logits[..., V.pad_id] += 3.0 * (second & ~one_before)
        if self.flex:
            return logits, torch.zeros(x.shape[0], x.shape[1] + 1)
        return logits


def test_answer_log_probability_is_the_chain_rule_mdm():
    questions, reasonings, _ = encoded(PROBLEMS[:2])
    answers = [TEMPLATE.encode("15"), TEMPLATE.encode("2")]
    denoiser = ChainDenoiser(flex=False)
    scores = answer_log_probability("mdm", denoiser, TEMPLATE, LinearSchedule(), questions, [[], reasonings[1]],
                                    answers)
    others = V.size - 1 - 2  # MASK excluded; two tokens carry a logit
    first_1 = 2 - math.log(math.exp(2) + math.exp(1) + others)
    first_2 = 1 - math.log(math.exp(2) + math.exp(1) + others)
    second = 3 - math.log(math.exp(3) + V.size - 2)
    assert scores.tolist() == pytest.approx([first_1 + second, first_2 + second])
    assert len(denoiser.times) == 2  # one call per answer slot of the canvas
    # t = β⁻¹(clean fraction of the generated slots): 0 without reasoning, 9/17 with it
    assert denoiser.times[0].tolist() == pytest.approx([0.0, len(reasonings[1]) / 17])


def test_answer_log_probability_is_the_chain_rule_flexmdm():
    questions, reasonings, _ = encoded(PROBLEMS[:2])
    answers = [TEMPLATE.encode("15"), TEMPLATE.encode("2")]
    denoiser = ChainDenoiser(flex=True)
    scores = answer_log_probability("flexmdm", denoiser, TEMPLATE, LinearSchedule(), questions,
                                    [reasonings[0][:4], []], answers)
    others = V.size - 2 - 2  # MASK and PAD excluded
    first_1 = 2 - math.log(math.exp(2) + math.exp(1) + others)
    first_2 = 1 - math.log(math.exp(2) + math.exp(1) + others)
    second = 3 - math.log(math.exp(3) + V.size - 3)
    assert scores.tolist() == pytest.approx([first_1 + second, first_2])
    assert len(denoiser.times) == 2


def test_answer_log_probability_checks_its_inputs():
    questions, reasonings, answers = encoded(PROBLEMS[:2])
    with pytest.raises(ValueError, match="answers"):
        answer_log_probability("mdm", ChainDenoiser(False), TEMPLATE, LinearSchedule(), questions, reasonings,
                               answers[:1])
    with pytest.raises(ValueError, match="kind"):
        answer_log_probability("ar", ChainDenoiser(False), TEMPLATE, LinearSchedule(), questions, reasonings, answers)
    with pytest.raises(ValueError, match="exceeds"):
        answer_log_probability("mdm", ChainDenoiser(False), TEMPLATE, LinearSchedule(), questions,
                               [r * 3 for r in reasonings], answers)


def test_exit_criterion_built_from_the_template():
    criterion = AnswerEntropyExit.for_template(TEMPLATE, threshold=0.2, reduce="mean")
    assert (criterion.open_id, criterion.close_id, criterion.mask_id) == (
        TEMPLATE.ids["<a>"], TEMPLATE.ids["</a>"], V.mask_id)
    with pytest.raises(ValueError, match="reduce"):
        AnswerEntropyExit.for_template(TEMPLATE, reduce="median")


@pytest.mark.parametrize("kind", ["flexmdm", "mdm"])
def test_generation_with_exit_never_costs_more_calls(kind):
    questions, _, _ = encoded(PROBLEMS)
    model = tiny_model(kind)
    runs = [generate(kind, model, TEMPLATE, SCHEDULES, questions, rule=EntropyBounded(0.2), steps=6,
                     early_exit=exit_rule, generator=torch.Generator().manual_seed(0))
            for exit_rule in (None, AnswerEntropyExit.for_template(TEMPLATE, threshold=10.0, max_missing=1e9))]
    assert not bool((runs[1].tokens == V.mask_id).any())
    assert bool((runs[1].nfe <= runs[0].nfe).all()) and int(runs[1].nfe.sum()) < int(runs[0].nfe.sum())
