"""The human votes file and its summary, the judge's answer, and the statistics they are summed up with."""

from __future__ import annotations

import json
import multiprocessing
import random

import pytest

from finet2i.finetune import judge, stats, votes

PAIRS = [f"p{i:05d}-s0" for i in range(6)]
EVAL = "e1"


def test_wilson_interval_matches_published_values():
    # Newcombe (1998), Table I: 81/263 -> 0.2553 to 0.3662; 15/148 -> 0.0624 to 0.1605
    lo, hi = stats.wilson(81, 263)
    assert (round(lo, 4), round(hi, 4)) == (0.2553, 0.3662)
    lo, hi = stats.wilson(15, 148)
    assert (round(lo, 4), round(hi, 4)) == (0.0624, 0.1605)
    assert stats.wilson(0, 10)[0] == 0.0 and stats.wilson(10, 10)[1] == pytest.approx(1.0)
    assert stats.wilson(0, 0) is None


def test_win_rate_leaves_ties_out_and_says_how_many():
    w = stats.win_rate(["tuned"] * 6 + ["base"] * 2 + ["tie"] * 2)
    assert (w["tuned"], w["base"], w["tie"], w["win_rate"], w["tie_rate"]) == (6, 2, 2, 0.75, 0.2)
    assert w["ci95"] == list(stats.wilson(6, 8))
    with pytest.raises(ValueError, match="tuned, base or tie"):
        stats.win_rate(["left"])


def test_paired_bootstrap_interval_brackets_the_difference_and_is_seeded():
    rng = random.Random(0)
    base = [rng.gauss(5, 1) for _ in range(200)]
    tuned = [b + 0.3 + rng.gauss(0, 0.2) for b in base]
    r = stats.paired_difference(base, tuned, resamples=1000, seed=1)
    assert r["ci95"][0] < r["difference"] < r["ci95"][1]
    assert 0.25 < r["ci95"][0] and r["ci95"][1] < 0.35  # the paired spread is 0.2 / sqrt(200)
    assert stats.paired_difference(base, tuned, resamples=1000, seed=1) == r
    assert stats.paired_difference([1.0], [2.0])["ci95"] is None


def test_cohen_kappa_of_a_textbook_example():
    # 50 items: both yes 20, both no 15, a yes b no 5, a no b yes 10 -> po 0.7, pe 0.5, kappa 0.4
    a = ["y"] * 20 + ["n"] * 15 + ["y"] * 5 + ["n"] * 10
    b = ["y"] * 20 + ["n"] * 15 + ["n"] * 5 + ["y"] * 10
    assert stats.cohen_kappa(a, b) == pytest.approx(0.4)
    assert stats.cohen_kappa(["y", "y"], ["y", "y"]) is None


def test_the_judge_answer_is_read_and_mapped_back_to_the_models():
    answer = 'the left one is sharper</think>\n\n{"alignment": "2", "visual_quality": "1"}'
    import re

    assert re.fullmatch(judge.verdict_regex(100), answer)
    assert judge.parse(answer) == {"alignment": "2", "visual_quality": "1"}
    for bad in ("no think block", '</think>{"alignment": "3", "visual_quality": "1"}', "</think> nothing", None):
        assert judge.parse(bad) is None
    assert judge.outcome("1", tuned_left=True) == "tuned" and judge.outcome("1", tuned_left=False) == "base"
    assert judge.outcome("2", tuned_left=False) == "tuned" and judge.outcome("tie", tuned_left=True) == "tie"
    assert set(judge.CRITERIA) == set(votes.QUESTIONS)  # people answer the judge's questions


@pytest.mark.parametrize("name", ["", " ", "<script>alert(1)</script>", "a" * 41, "bob\nEve", "../x", "-x",
                                  "bob\x00", "名前"])
def test_a_hostile_rater_name_is_refused(name):
    with pytest.raises(votes.VoteError, match="rater name"):
        votes.make_vote(evaluation=EVAL, rater=name, pair=PAIRS[0], criterion="alignment", choice="1",
                        known_pairs=PAIRS)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("pair", "p99999-s0", "no such pair"), ("pair", "../../etc/passwd", "no such pair"),
    ("criterion", "beauty", "criterion"), ("choice", "3", "1 \\(left\\)"), ("choice", "<b>", "1 \\(left\\)"),
])
def test_a_vote_naming_anything_unknown_is_refused(field, value, message):
    vote = {"evaluation": EVAL, "rater": "alice", "pair": PAIRS[0], "criterion": "alignment", "choice": "1"}
    vote[field] = value
    with pytest.raises(votes.VoteError, match=message):
        votes.make_vote(**vote, known_pairs=PAIRS)


def test_the_outcome_follows_the_side_the_server_showed():
    for rater in ("alice", "bob", "carol"):
        for pair in PAIRS:
            left = votes.tuned_left(EVAL, rater, pair)
            v = votes.make_vote(evaluation=EVAL, rater=rater, pair=pair, criterion="alignment", choice="1",
                                known_pairs=PAIRS)
            assert v["tuned_left"] == left and v["outcome"] == ("tuned" if left else "base")
    sides = [votes.tuned_left(EVAL, f"r{i}", p) for i in range(20) for p in PAIRS]
    assert 0.3 < sum(sides) / len(sides) < 0.7  # both sides, about equally
    assert votes.order(EVAL, "alice", PAIRS) != votes.order(EVAL, "bob", PAIRS)


def _append_many(path: str, rater: str, n: int) -> None:
    for i in range(n):
        votes.append(path, votes.make_vote(evaluation=EVAL, rater=rater, pair=PAIRS[i % len(PAIRS)],
                                           criterion="alignment", choice="=", known_pairs=PAIRS))


def test_two_writers_at_once_lose_no_vote_and_never_mix_lines(tmp_path):
    path = str(tmp_path / "human_votes" / "votes.jsonl")
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(path, f"r{k}", 200)) for k in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    lines = (tmp_path / "human_votes" / "votes.jsonl").read_text().splitlines()
    assert len(lines) == 400 and all(json.loads(line)["rater"] in ("r0", "r1") for line in lines)


def test_summary_counts_the_last_answer_of_the_current_evaluation_and_the_raters_agreement(tmp_path):
    path = tmp_path / "votes.jsonl"

    def vote(rater: str, pair: str, criterion: str, outcome: str, evaluation: str = EVAL) -> None:
        left = votes.tuned_left(evaluation, rater, pair)
        choice = "=" if outcome == "tie" else ("1" if (outcome == "tuned") == left else "2")
        votes.append(path, votes.make_vote(evaluation=evaluation, rater=rater, pair=pair, criterion=criterion,
                                           choice=choice, known_pairs=PAIRS))

    for p in PAIRS[:4]:
        vote("alice", p, "alignment", "tuned")
    vote("alice", PAIRS[3], "alignment", "base")  # changed her mind: the last answer counts
    for p, o in zip(PAIRS[:4], ["tuned", "tuned", "base", "tie"], strict=True):
        vote("bob", p, "alignment", o)
    vote("bob", PAIRS[0], "visual_quality", "tie")
    vote("carol", PAIRS[5], "alignment", "tuned", evaluation="older")
    with open(path, "ab") as f:
        f.write(b'{"rater": "torn", "pai')  # a disk that filled mid-line
    s = votes.summarize(path, EVAL)
    assert s["votes"] == 9 and s["raters"] == {"alice": 4, "bob": 5}
    assert s["repeated"] == 1 and s["earlier_evaluations"] == 1 and s["unreadable_lines"] == 1
    a = s["criteria"]["alignment"]
    assert (a["tuned"], a["base"], a["tie"]) == (5, 2, 1) and a["win_rate"] == 5 / 7
    assert s["criteria"]["visual_quality"]["tie"] == 1
    (ag,) = s["agreement"]
    assert ag["raters"] == ["alice", "bob"] and ag["questions"] == 4 and ag["agreement"] == 0.5
    assert ag["kappa"] == pytest.approx(stats.cohen_kappa(["tuned", "tuned", "tuned", "base"],
                                                          ["tuned", "tuned", "base", "tie"]))
