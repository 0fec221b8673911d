"""Word problems in GSM8K format, the GSM8K loader and scorer, the template and the task."""

import json
import statistics

import pytest
import torch

from flexmdm.constraints import allowed_gaps
from flexmdm.tasks.reasoning import (
    Problem,
    ReasoningTask,
    ReasoningTemplate,
    accuracy,
    answers_match,
    calculator_annotations,
    extract_answer,
    OPERATION_SETS,
    OPERATIONS,
    generate_problems,
    load_gsm8k,
    parse_question,
    normalize_number,
    template_parts,
)
from flexmdm.tasks.base import get_task_class

GSM8K_FIXTURE = [
    {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                 "How many clips did Natalia sell altogether in April and May?",
     "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
               "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"},
    {"question": "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
                 "How much did she earn?",
     "answer": "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\n"
               "Working 50 minutes, she earned 0.2 x 50 = $<<0.2*50=10>>10.\n#### 10"},
    {"question": "A house costs a lot.", "answer": "It costs 1,200 + 300 = <<1200+300=1500>>1500.\n#### 1,500"},
]


def test_hand_made_problem_renders_in_gsm8k_format():
    problem = Problem(7, (("buys", 5), ("gives", 3), ("doubles", 2)), "Ann", "apples")
    assert problem.values() == [12, 9, 18] and problem.answer == 18
    assert problem.equations() == ["7+5=12", "12-3=9", "9*2=18"]
    assert problem.compact_question() == "has 7 buys 5 gives 3 doubles 2 ?"
    assert problem.question.startswith("Ann has 7 apples. Ann buys 5 more apples.")
    assert problem.rationale.endswith("\n#### 18")
    assert "<<12-3=9>>9" in problem.rationale
    assert extract_answer(problem.rationale) == "18"
    assert calculator_annotations(problem.rationale) == problem.equations()


def test_generated_problems_are_consistent_and_vary_in_length():
    problems = generate_problems(500, seed=3, min_steps=2, max_steps=5)
    assert {len(p.steps) for p in problems} == {2, 3, 4, 5}
    for p in problems:
        assert all(0 <= v <= 99 for v in p.values())
        for equation in p.equations():
            left, result = equation.split("=")
            assert eval(left) == int(result)  # noqa: S307 - our own arithmetic strings
        assert extract_answer(p.to_gsm8k()["answer"]) == str(p.answer)
    single = generate_problems(300, seed=5, max_value=9)
    assert all(0 <= v <= 9 for p in single for v in p.values())
    assert {k for p in single for k, _ in p.steps} == {"buys", "finds", "gives", "loses", "doubles", "triples"}
    assert ReasoningTask(max_value=9).template.reasoning_width == 5 * 6 - 1  # "a op k = c ;" per step
    assert generate_problems(20, seed=3) == generate_problems(20, seed=3)
    assert generate_problems(20, seed=3) != generate_problems(20, seed=4)
    with pytest.raises(ValueError, match="min_steps"):
        generate_problems(1, 0, min_steps=3, max_steps=2)


def test_basic_problems_are_the_original_ones():
    """The default operation set and operand range draw exactly the problems drawn before they existed."""
    assert [p.compact_question() for p in generate_problems(3, 0)] == [
        "has 8 buys 5 loses 7 gives 4 gives 1 doubles 2 ?", "has 3 doubles 2 gives 5 triples 3 ?",
        "has 3 triples 3 gives 8 ?"]
    assert [p.compact_question() for p in generate_problems(1, 0, max_value=9)] == [
        "has 8 buys 1 loses 7 gives 2 doubles 2 finds 9 ?"]
    assert ReasoningTask().template.vocab.size == 30 and ReasoningTask(operations="extended").template.vocab.size == 37


def _replay(problem):
    """Re-evaluate a problem's trace: each annotation applies its operator exactly to the previous
    result; returns the final result and the operands."""
    value, operands = problem.start, []
    for equation, (keyword, operand) in zip(problem.equations(), problem.steps):
        left, result = equation.split("=")
        symbol = OPERATIONS[keyword].symbol
        a, k = (int(x) for x in left.split(symbol))
        assert a == value and k == operand
        expected = {"+": a + k, "-": a - k, "*": a * k, "/": a // k}[symbol]
        assert symbol != "/" or a % k == 0  # division is exact
        assert int(result) == expected
        value = expected
        operands.append(k)
    return value, operands


def test_extended_problems_are_correct_varied_and_spread_in_length():
    problems = generate_problems(3000, seed=7, min_steps=2, max_steps=8, max_value=999, max_operand=99,
                                 operations="extended")
    for p in problems:
        answer, operands = _replay(p)
        assert answer == p.answer and extract_answer(p.rationale) == str(answer)
        assert 2 <= p.start <= 99 and all(0 <= v <= 999 for v in p.values()) and max(operands) <= 99
        assert parse_question(p.question) == p
    keywords = {k for p in problems for k, _ in p.steps}
    assert keywords == set(OPERATION_SETS["extended"]) and len(OPERATION_SETS["extended"]) == 13
    by_symbol = {}
    for keyword in keywords:
        by_symbol.setdefault(OPERATIONS[keyword].symbol, set()).add(keyword)
    assert {s: len(k) for s, k in by_symbol.items()} == {"+": 4, "-": 4, "*": 3, "/": 2}  # phrasings per operation
    assert max(len(str(v)) for p in problems for v in p.values()) == 3  # multi-digit quantities
    task = ReasoningTask(num_train=10, min_steps=2, max_steps=8, max_value=999, max_operand=99, operations="extended")
    lengths = [len(r) for r in task.encode(problems).reasonings]
    assert min(lengths) <= 13 and max(lengths) >= 80 and statistics.pstdev(lengths) >= 15  # traces vary widely
    assert max(lengths) <= task.template.reasoning_width == 11 * 8 - 1
    assert max(len(q) for q in task.encode(problems).questions) <= task.template.question_width == 2 + 2 + 3 * 8
    assert generate_problems(50, 7, 2, 8, 999, 99, "extended") == problems[:50]
    assert generate_problems(50, 8, 2, 8, 999, 99, "extended") != problems[:50]
    with pytest.raises(ValueError, match="max_operand must be in 2..max_value"):
        generate_problems(1, 0, max_value=50, max_operand=99)
    with pytest.raises(ValueError, match="unknown operations 'hard'"):
        ReasoningTask(operations="hard")


def test_gsm8k_loader_on_a_fixture(tmp_path):
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in GSM8K_FIXTURE))
    records = load_gsm8k(path)
    assert records == GSM8K_FIXTURE
    assert [extract_answer(r["answer"]) for r in records] == ["72", "10", "1500"]
    assert calculator_annotations(records[0]["answer"]) == ["48/2=24", "48+24=72"]
    with pytest.raises(FileNotFoundError):
        load_gsm8k(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q"}) + "\n")
    with pytest.raises(ValueError, match="answer"):
        load_gsm8k(bad)
    bad.write_text(json.dumps(GSM8K_FIXTURE[0]) + "\n\n" + '{"question": "q", "answer": 3\n')
    with pytest.raises(ValueError, match="bad.jsonl:3: not JSON"):
        load_gsm8k(bad)


def test_parse_question_inverts_the_english_rendering():
    problems = generate_problems(500, seed=2, min_steps=1, max_steps=6, max_value=99)
    assert all(parse_question(p.question) == p for p in problems)
    assert parse_question(problems[0].question.replace(". ", ".   ")) == problems[0]
    assert parse_question(GSM8K_FIXTURE[0]["question"]) is None
    assert parse_question(problems[0].compact_question()) is None
    assert parse_question(problems[0].question.replace("How many", "How much")) is None


@pytest.mark.parametrize("text, number", [
    ("72", "72"), ("$1,500", "1500"), ("7.0", "7"), ("0.50", "0.5"), ("-3", "-3"), ("007", "7"),
    ("The answer is 12 apples", "12"), ("from 3 to 18", "18"), ("none", None), ("-0.0", "0"), (".5", "0.5"),
])
def test_normalize_number(text, number):
    assert normalize_number(text) == number


def test_answer_scorer_on_known_strings():
    assert extract_answer("blah\n#### 1,234") == "1234" and extract_answer("no final line") is None
    assert answers_match("18", "18.0") and not answers_match("18", "81") and not answers_match(None, "1")
    references = [r["answer"] for r in GSM8K_FIXTURE]
    assert accuracy(["72", "$10.00", "1499"], references) == pytest.approx(2 / 3)
    assert accuracy([None, "10", "1500"], ["72", "10", "1,500"]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="predictions"):
        accuracy(["1"], ["1", "2"])


TEMPLATE = ReasoningTemplate(reasoning_width=15, answer_width=2, question_width=7)


def parts(problem):
    q, r, a = template_parts(problem.compact_question(), problem.rationale)
    return TEMPLATE.encode_batch([q, r, a])


def test_template_parts_and_tokenizer_round_trip():
    problem = Problem(7, (("buys", 5), ("gives", 3)))
    q, r, a = template_parts(problem.compact_question(), problem.rationale)
    assert (q, r, a) == ("has 7 buys 5 gives 3 ?", "7+5=12;12-3=9", "9")
    q_ids, r_ids, a_ids = TEMPLATE.encode_batch([q, r, a])
    assert TEMPLATE.text(r_ids) == "7 + 5 = 1 2 ; 1 2 - 3 = 9" and len(q_ids) == 7
    with pytest.raises(ValueError, match="outside the vocabulary"):
        TEMPLATE.encode("has 7 eats 2 ?")
    with pytest.raises(ValueError, match="####"):
        template_parts("has 1 ?", "no answer")


def test_flexmdm_layout_freezes_question_and_delimiters():
    q, r, a = parts(Problem(7, (("buys", 5), ("gives", 3))))
    ids, frozen, (reasoning_region, answer_region) = TEMPLATE.flexmdm_example(q, r, a)
    assert TEMPLATE.text(ids) == "has 7 buys 5 gives 3 ? <r> 7 + 5 = 1 2 ; 1 2 - 3 = 9 </r> <a> 9 </a>"
    # frozen tokens before each generated token: the question and <r> (8), or also </r> <a> (10)
    frozen_before = [sum(frozen[:i]) for i in range(len(ids)) if not frozen[i]]
    assert set(frozen_before) == {reasoning_region, answer_region} == {8, 10}
    decoded = TEMPLATE.decode(ids, frozen)
    assert (decoded.answer, decoded.reasoning, decoded.reasoning_length) == ("9", "7 + 5 = 1 2 ; 1 2 - 3 = 9", 13)


def test_mdm_layout_and_canvas():
    q, r, a = parts(Problem(7, (("buys", 5), ("gives", 3))))
    canvas, frozen = TEMPLATE.mdm_example(q, r, a)
    assert len(canvas) == TEMPLATE.canvas_width == 7 + 15 + 2 + 4
    assert TEMPLATE.text(canvas).endswith("9 [PAD] [PAD] </r> <a> 9 [PAD] </a>")
    assert sum(not f for f in frozen) == 15 + 2
    start, start_frozen = TEMPLATE.mdm_canvas([q])
    assert start_frozen[0].tolist() == frozen
    assert (start[0] == TEMPLATE.vocab.mask_id).sum() == 17
    given, given_frozen = TEMPLATE.mdm_canvas([q], answers=[a])
    assert TEMPLATE.text(given[0].tolist()).endswith("</r> <a> 9 [PAD] </a>")
    assert (given[0] == TEMPLATE.vocab.mask_id).sum() == 15 and int((~given_frozen).sum()) == 15
    assert TEMPLATE.decode(canvas, frozen).answer == "9"
    with pytest.raises(ValueError, match="exceeds"):
        TEMPLATE.mdm_example(q, r * 2, a)


def test_decode_rejects_malformed_outputs():
    q, r, a = parts(Problem(7, (("buys", 5),)))
    ids, frozen, _ = TEMPLATE.flexmdm_example(q, r, a)
    a_open = TEMPLATE.ids["<a>"]
    garbled = list(ids)
    garbled[len(q) + 1] = TEMPLATE.ids["</a>"]  # a generated </a> inside the reasoning
    assert TEMPLATE.decode(garbled, frozen).answer == "12"  # frozen delimiters still frame the answer
    assert TEMPLATE.decode(garbled).answer is None  # without the flags the first </a> is taken
    no_answer = [i for i in ids if i != a_open]
    assert TEMPLATE.decode(no_answer).answer is None
    with_plus = list(ids)
    with_plus[-2] = TEMPLATE.ids["+"]
    assert TEMPLATE.decode(with_plus).answer is None
    masked = list(ids)
    masked[len(q) + 1] = TEMPLATE.vocab.mask_id
    assert TEMPLATE.decode(masked).reasoning is None


def test_prompts_allow_insertion_only_in_the_regions():
    q, r, a = parts(Problem(7, (("buys", 5), ("gives", 3))))
    prompt = TEMPLATE.flexmdm_prompt([q, q[:3] + [TEMPLATE.ids["?"]]])
    gaps = allowed_gaps(prompt.frozen, prompt.lengths, prompt.allowed_regions)
    for row in range(2):
        n = int(prompt.lengths[row])
        seq = prompt.tokens[row, :n].tolist()
        allowed = gaps[row].nonzero().flatten().tolist()
        # gap slot i sits before slot i: right after <r> and right after <a>
        assert allowed == [seq.index(TEMPLATE.ids["<r>"]) + 1, seq.index(TEMPLATE.ids["<a>"]) + 1]
    given = TEMPLATE.flexmdm_prompt([q], answers=[a])
    allowed = allowed_gaps(given.frozen, given.lengths, given.allowed_regions)[0].nonzero().flatten().tolist()
    assert allowed == [len(q) + 1]
    assert TEMPLATE.text(given.tokens[0].tolist()) == "has 7 buys 5 gives 3 ? <r> </r> <a> 9 </a>"


@pytest.mark.parametrize("layout", ["flexmdm", "mdm"])
def test_task_batches(layout):
    task = get_task_class("reasoning")(num_train=300, layout=layout)
    assert isinstance(task, ReasoningTask)
    batch = task.sample_batch(16, torch.Generator().manual_seed(0))
    again = task.sample_batch(16, torch.Generator().manual_seed(0))
    assert torch.equal(batch.x1, again.x1)
    template = task.template
    for row in range(16):
        n = int(batch.lengths[row])
        ids, frozen = batch.x1[row, :n].tolist(), batch.frozen[row, :n].tolist()
        decoded = template.decode(ids, frozen)
        left = decoded.reasoning.replace(" ", "").split(";")[-1]
        assert decoded.answer == left.split("=")[1]
    if layout == "flexmdm":
        gaps = allowed_gaps(batch.frozen, batch.lengths, batch.allowed_regions)
        assert bool((gaps.sum(dim=1) == 2 + (~batch.frozen & (batch.x1 != template.vocab.pad_id)).sum(dim=1)).all())
    else:
        assert batch.x1.shape[1] == task.max_length == template.canvas_width
        assert bool((batch.lengths == task.max_length).all())


@pytest.mark.parametrize("options", [{}, {"max_value": 999, "max_operand": 99, "operations": "extended"}])
def test_validation_and_test_questions_are_unseen_in_training(options):
    task = ReasoningTask(num_train=3000, **options)
    train = {p.compact_question() for p in task.splits["train"].problems}
    validation = {p.compact_question() for p in task.splits["validation"].problems}
    test = [p.compact_question() for p in task.test_set(500).problems]
    assert not train & set(test) and not train & validation and not validation & set(test)
    assert len(set(test)) == 500 and len(validation) == 256
    assert task.held_out("validation", 3).problems == task.splits["validation"].problems[:3]
    with pytest.raises(ValueError, match="only 256 validation problems, 300 requested"):
        task.held_out("validation", 300)
