"""Invariants of the samplers under an adversarial (random, MASK/PAD-loving) denoiser."""

import pytest
import torch

from flexmdm.constraints import Prompt
from flexmdm.interpolant import FlexInterpolant, MDMInterpolant
from flexmdm.sampling import (
    Adaptive,
    ConfidenceThreshold,
    EntropyBounded,
    EntropySum,
    SemiAutoregressive,
    TauLeaping,
    mdm_canvas,
    sample_flexmdm,
    sample_mdm,
)
from flexmdm.sampling.ragged import compact, insert_masks, thin_counts
from flexmdm.sampling.trace import apply_step
from flexmdm.schedules import LinearSchedule
from flexmdm.vocab import Vocab

VOCAB = Vocab(size=7, mask_id=5, pad_id=6)
LINEAR = LinearSchedule()
PROCESS = FlexInterpolant(LINEAR, LINEAR, VOCAB)
MDM_PROCESS = MDMInterpolant(LINEAR, VOCAB)
RULES = [
    TauLeaping(),
    Adaptive("margin"),
    Adaptive("random", window_factor=2.0, window_max=3),
    EntropyBounded(0.5),
    EntropySum(0.3),
    ConfidenceThreshold(0.5),
]


def hostile_flex(x, t, lengths, frozen):
    """Random logits that favour MASK and PAD; big insertion expectations."""
    g = torch.Generator().manual_seed(int(x.sum()) + x.shape[1])
    logits = torch.randn(*x.shape, VOCAB.size, generator=g)
    logits[..., VOCAB.mask_id] += 50.0
    logits[..., VOCAB.pad_id] += 50.0
    gaps = 3.0 * torch.rand(x.shape[0], x.shape[1] + 1, generator=g)
    return logits, gaps


def flex_run(rule, seed, prompt, max_length):
    return sample_flexmdm(
        hostile_flex, PROCESS, steps=30,
        max_length=max_length, prompt=prompt, rule=rule, generator=torch.Generator().manual_seed(seed),
        record_trace=True,
    )


@pytest.mark.parametrize("rule", RULES, ids=str)
def test_flexmdm_invariants(rule):
    prefixes = [[0, 1], [2], [3, 3, 3], [4]]
    prompt = Prompt.infill(prefixes, [[1], [], [0], [2, 2]], VOCAB.pad_id)
    max_length = torch.tensor([6, 9, 12, 20])
    out = flex_run(rule, 0, prompt, max_length)
    assert not bool(((out.tokens == VOCAB.mask_id) | (out.tokens == VOCAB.pad_id))[
        torch.arange(out.tokens.shape[1]) < out.lengths[:, None]].any())
    assert bool((out.lengths <= max_length).all())
    assert out.lengths.tolist()[:1] == [6]  # large gaps fill the cap exactly
    assert int(out.dropped_insertions.sum()) > 0
    for row, (prefix, suffix) in enumerate(zip(prefixes, [[1], [], [0], [2, 2]])):
        seq = out.sequences()[row]
        assert seq[: len(prefix)] == prefix and seq[len(seq) - len(suffix):] == suffix
        assert out.frozen[row].sum() == len(prefix) + len(suffix)
    assert out.trace.replay() == out.sequences()
    again = flex_run(rule, 0, prompt, max_length)
    assert torch.equal(again.tokens, out.tokens) and torch.equal(again.nfe, out.nfe)
    other = flex_run(rule, 1, prompt, max_length)
    assert not torch.equal(other.tokens, out.tokens)


BLOCK_RULES = [TauLeaping(), Adaptive("top_probability"), EntropyBounded(0.5)]


def left_most_block(state: list[int], width: int) -> int:
    """The block of ``width`` slots holding the first MASK of ``state``."""
    return state.index(VOCAB.mask_id) // width


@pytest.mark.parametrize("final_fill", ["sequential", "parallel"])
@pytest.mark.parametrize("inner", BLOCK_RULES, ids=str)
def test_flexmdm_semi_autoregressive_from_the_empty_string(inner, final_fill):
    """Without a prompt the state starts with no slot; every reveal, the final fill's included,
    lies in the left-most block that holds masks."""
    rule = SemiAutoregressive(inner, block_size=3)
    out = sample_flexmdm(
        hostile_flex, PROCESS, steps=12,
        max_length=14, batch_size=6, rule=rule, final_fill=final_fill,
        generator=torch.Generator().manual_seed(2), record_trace=True,
    )
    assert out.trace.replay() == out.sequences() and bool((out.lengths > 3).any())
    states = [[] for _ in range(6)]
    by_step = {}
    for record in out.trace.to_records():
        by_step.setdefault((record["step"], record["sequence"]), []).append(record)
    for (_, sequence), events in sorted(by_step.items()):
        reveals = [e["position"] for e in events if e["kind"] == "unmask"]
        parallel_fill = final_fill == "parallel" and events[0]["time"] == 1.0  # every mask left at once
        if reveals and not parallel_fill:
            block = left_most_block(states[sequence], 3)
            assert {position // 3 for position in reveals} == {block}, (sequence, events)
        apply_step(states[sequence], events, VOCAB.mask_id)
    assert states == out.sequences()


@pytest.mark.parametrize("inner", BLOCK_RULES, ids=str)
def test_mdm_semi_autoregressive_fills_blocks_left_to_right(inner):
    """Between two network calls the canvas gains tokens only in its left-most block with masks."""
    seen = []

    def recording(x, t, lengths, frozen):
        """Random logits (real tokens' confidence varies across slots)."""
        seen.append(x[0].tolist())
        return 3.0 * torch.randn(*x.shape, VOCAB.size, generator=torch.Generator().manual_seed(int(x.sum())))

    canvas, frozen = mdm_canvas([[0]], 10, VOCAB, suffixes=[[1]])
    out = sample_mdm(recording, MDM_PROCESS, steps=2, canvas=canvas, frozen=frozen,
                     rule=SemiAutoregressive(inner, block_size=4), generator=torch.Generator().manual_seed(1))
    final = out.sequences()[0]
    assert final[0] == 0 and final[-1] == 1 and VOCAB.mask_id not in final
    for before, after in zip(seen, seen[1:]):
        revealed = {i // 4 for i, (a, b) in enumerate(zip(before, after)) if a != b}
        assert revealed <= {left_most_block(before, 4)}
    assert len(seen) >= 3  # three blocks of masks: at least one call each


def test_subgoal_prompt_keeps_order_and_never_inserts_outside():
    prompt = Prompt.subgoals([[0, 1, 2], [3, 4]], VOCAB.pad_id)
    out = flex_run(TauLeaping(), 3, prompt, 16)
    for row, goals in enumerate([[0, 1, 2], [3, 4]]):
        seq, frozen = out.sequences()[row], out.frozen[row, : out.lengths[row]].tolist()
        assert [s for s, f in zip(seq, frozen) if f] == goals
        assert frozen[0] and frozen[-1]  # nothing before the start or after the goal


@pytest.mark.parametrize("rule", RULES, ids=str)
def test_mdm_invariants(rule):
    def hostile_mdm(x, t, lengths, frozen):
        return hostile_flex(x, t, lengths, frozen)[0]

    canvas, frozen = mdm_canvas([[0, 1], [2]], 8, VOCAB, suffixes=[[3], []], middle_lengths=[3, 5])
    out = sample_mdm(hostile_mdm, MDM_PROCESS, steps=10, canvas=canvas,
                     frozen=frozen, rule=rule, generator=torch.Generator().manual_seed(0))
    live = torch.arange(out.tokens.shape[1]) < out.lengths[:, None]
    assert not bool(((out.tokens == VOCAB.mask_id) | (out.tokens == VOCAB.pad_id))[live].any())
    assert out.sequences()[0][:2] == [0, 1] and out.sequences()[0][-1] == 3
    assert bool((out.nfe >= 1).all())


def test_mdm_canvas_layout_and_errors():
    canvas, frozen = mdm_canvas([[0, 1]], 6, VOCAB, suffixes=[[2]], middle_lengths=[2])
    m, p = VOCAB.mask_id, VOCAB.pad_id
    assert canvas.tolist() == [[0, 1, m, m, 2, p]]
    assert frozen.tolist() == [[True, True, False, False, True, True]]
    with pytest.raises(ValueError, match="leave 3 positions, 4 requested"):
        mdm_canvas([[0, 1]], 6, VOCAB, suffixes=[[2]], middle_lengths=[4])


def test_insert_masks_matches_reference():
    g = torch.Generator().manual_seed(0)
    tokens = torch.tensor([[0, 1, 2, 6], [3, 6, 6, 6], [6, 6, 6, 6]])
    lengths = torch.tensor([3, 1, 0])
    frozen = torch.tensor([[True, False, False, False], [False] * 4, [False] * 4])
    counts = torch.randint(0, 3, (3, 5), generator=g) * (torch.arange(5) <= lengths[:, None])
    new, new_lengths, new_frozen = insert_masks(tokens, lengths, frozen, counts, VOCAB.mask_id, VOCAB.pad_id)
    for b in range(3):
        expected, flags = [], []
        for i in range(int(lengths[b]) + 1):
            expected += [VOCAB.mask_id] * int(counts[b, i])
            flags += [False] * int(counts[b, i])
            if i < lengths[b]:
                expected.append(int(tokens[b, i]))
                flags.append(bool(frozen[b, i]))
        assert new[b, : new_lengths[b]].tolist() == expected
        assert new_frozen[b, : new_lengths[b]].tolist() == flags
        assert bool((new[b, new_lengths[b]:] == VOCAB.pad_id).all())


def test_thinning_is_uniform_and_exact():
    counts = torch.tensor([[3, 0, 1]]).expand(40_000, 3)
    allowance = torch.full((40_000,), 2)
    kept = thin_counts(counts, allowance, torch.Generator().manual_seed(0))
    assert bool((kept.sum(dim=1) == 2).all()) and bool((kept <= counts).all())
    # Each of the 4 insertions survives with probability 1/2; gap 0 keeps 2 w.p. C(3,2)/C(4,2)=1/2.
    assert float((kept[:, 0] == 2).double().mean()) == pytest.approx(0.5, abs=0.015)
    assert float(kept[:, 2].double().mean()) == pytest.approx(0.5, abs=0.015)
    untouched = thin_counts(counts[:2], torch.tensor([10, 4]), None)
    assert torch.equal(untouched, counts[:2])


def test_compact():
    tokens = torch.tensor([[1, 6, 2], [6, 6, 6]])
    out, lengths = compact(tokens, tokens != 6, 6)
    assert out.tolist() == [[1, 2], [6, 6]] and lengths.tolist() == [2, 0]


def test_sampler_argument_errors():
    kwargs = dict(process=PROCESS, max_length=5)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        sample_flexmdm(hostile_flex, steps=0, batch_size=2, **kwargs)
    with pytest.raises(ValueError, match="give a prompt or a batch_size"):
        sample_flexmdm(hostile_flex, steps=2, **kwargs)
    with pytest.raises(ValueError, match="temperature"):
        sample_flexmdm(hostile_flex, steps=2, batch_size=2, temperature=-1.0, **kwargs)
    with pytest.raises(ValueError, match="shorter than a prompt"):
        sample_flexmdm(hostile_flex, steps=2, prompt=Prompt.prefix([[0] * 6], VOCAB.pad_id), **kwargs)
    with pytest.raises(ValueError, match="denoiser returned"):
        sample_flexmdm(lambda x, t, l, f: (torch.zeros(1), torch.zeros(1)), steps=2, batch_size=2, **kwargs)
    with pytest.raises(ValueError, match="unknown score"):
        Adaptive("loudest")


def test_temperature_zero_takes_the_argmax_among_real_tokens():
    def peaked(x, t, lengths, frozen):
        logits = torch.zeros(*x.shape, VOCAB.size)
        logits[..., 2] = 5.0
        logits[..., VOCAB.mask_id] = logits[..., VOCAB.pad_id] = 100.0
        return logits, torch.ones(x.shape[0], x.shape[1] + 1)

    out = sample_flexmdm(
        peaked, PROCESS, steps=20,
        max_length=10, batch_size=16, rule=Adaptive("top_probability"), temperature=0.0,
        generator=torch.Generator().manual_seed(5),
    )
    live = torch.arange(out.tokens.shape[1]) < out.lengths[:, None]
    assert bool(out.lengths.gt(0).any())
    assert bool((out.tokens[live] == 2).all())
