"""People's votes on the evaluation's image pairs (``finet2i explore``'s blind side-by-side page) and what they add
up to: the fine-tuned model's win rate per criterion with its Wilson 95% interval, ties, votes per rater and
agreement between raters where they rated the same pairs (Cohen's kappa).

**The file.** ``results/human_votes/votes.jsonl``, one JSON object per vote, append-only: a vote is one line
written with a single ``write`` under an exclusive lock (``flock``) and ``fsync``\\ ed before the page answers,
so a killed server loses no vote it acknowledged and two raters (or two servers) never interleave lines. No rule
writes or deletes it (a rerun of ``evaluate`` leaves it alone); each vote names the evaluation it was cast on
(:func:`evaluation_id`: a digest of every pair's images), and the summary counts only the current evaluation's
votes, saying how many earlier ones it left out. A rater who votes twice on one question keeps the last vote.
A line that cannot be read (a disk that filled mid-write) is skipped and counted.

**What a vote holds.** The rater's name (:data:`RATER`: letters, digits, space, ``. _ -``; anything else is
refused), the pair, the criterion, the side clicked, which side showed the fine-tuned image (decided by the
server, never taken from the request) and so the outcome: ``tuned``, ``base`` or ``tie``.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from finet2i.finetune import stats

VOTES = "human_votes/votes.jsonl"  # under the results folder
# Asked in this order for each pair; the ids are the judge's (finet2i.finetune.judge.CRITERIA).
QUESTIONS: dict[str, str] = {
    "alignment": "Which image follows the prompt better?",
    "visual_quality": "Which image looks better?",
}
CHOICES = ("left", "right", "tie")
KEYS = {"1": "left", "2": "right", "=": "tie"}  # the keyboard's answers
RATER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,39}$")
PAIR = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class VoteError(ValueError):
    """A vote that is refused; nothing was written."""


def evaluation_id(pairs: Iterable[dict[str, Any]]) -> str:
    """A digest of every comparison and its two images: votes cast on other images never count for these."""
    import hashlib

    h = hashlib.sha256()
    for p in sorted(pairs, key=lambda r: r["pair_id"]):
        h.update(f"{p['pair_id']} {p['base_sha256']} {p['tuned_sha256']}\n".encode())
    return h.hexdigest()[:16]


def tuned_left(evaluation: str, rater: str, pair: str) -> bool:
    """Where this rater sees the fine-tuned image of this pair: a seeded coin per (evaluation, rater, pair), the
    same on every reload, independent between raters."""
    return random.Random(f"{evaluation}\x1f{rater}\x1f{pair}").random() < 0.5


def order(evaluation: str, rater: str, pairs: Sequence[str]) -> list[str]:
    """The order in which this rater sees the pairs (seeded per rater: two raters do not share a position bias)."""
    out = sorted(pairs)
    random.Random(f"{evaluation}\x1f{rater}\x1forder").shuffle(out)
    return out


def check_rater(name: str | None) -> str:
    name = (name or "").strip()
    if not RATER.fullmatch(name):
        raise VoteError("a rater name is 1-40 letters, digits, spaces, dots, dashes or underscores, starting with a "
                        "letter or digit")
    return name


def make_vote(*, evaluation: str, rater: str, pair: str, criterion: str, choice: str,
              known_pairs: Iterable[str]) -> dict[str, Any]:
    """A checked vote, ready to append; :class:`VoteError` names what is wrong."""
    rater = check_rater(rater)
    if not PAIR.fullmatch(pair or "") or pair not in set(known_pairs):
        raise VoteError("no such pair in this evaluation")
    if criterion not in QUESTIONS:
        raise VoteError(f"criterion must be one of {', '.join(QUESTIONS)}")
    choice = KEYS.get(choice, choice)
    if choice not in CHOICES:
        raise VoteError("the answer must be 1 (left), 2 (right) or = (tie)")
    left = tuned_left(evaluation, rater, pair)
    outcome = "tie" if choice == "tie" else ("tuned" if (choice == "left") == left else "base")
    return {"v": 1, "time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "evaluation": evaluation,
            "rater": rater, "pair": pair, "criterion": criterion, "choice": choice, "tuned_left": left,
            "outcome": outcome}


def append(path: str | os.PathLike[str], vote: dict[str, Any]) -> None:
    """Append one vote: one ``write`` of one line under ``flock``, then ``fsync`` (file and, when new, folder)."""
    import fcntl

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(vote, ensure_ascii=True, sort_keys=True) + "\n").encode("ascii")
    new = not p.exists()
    fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(f"{p}: wrote {written} of {len(line)} bytes of a vote")
            os.fsync(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    if new:
        dfd = os.open(p.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def read(path: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], int]:
    """(every readable vote in file order, lines that could not be read)."""
    p = Path(path)
    if not p.is_file():
        return [], 0
    votes, bad = [], 0
    for line in p.read_bytes().splitlines():
        try:
            v = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if not (isinstance(v, dict) and {"evaluation", "rater", "pair", "criterion", "outcome"} <= set(v)):
            bad += 1
            continue
        votes.append(v)
    return votes, bad


def current(votes: Iterable[dict[str, Any]], evaluation: str) -> dict[tuple[str, str, str], dict[str, Any]]:
    """{(rater, pair, criterion): the rater's last vote} over the votes of this evaluation."""
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    for v in votes:
        if v["evaluation"] == evaluation:
            out[(v["rater"], v["pair"], v["criterion"])] = v
    return out


def summarize(path: str | os.PathLike[str], evaluation: str) -> dict[str, Any]:
    """Win rate per criterion (Wilson 95%), ties, votes per rater, and agreement between each two raters."""
    votes, bad = read(path)
    last = current(votes, evaluation)
    others = sum(v["evaluation"] != evaluation for v in votes)
    criteria: dict[str, Any] = {}
    for c in QUESTIONS:
        criteria[c] = stats.win_rate([v["outcome"] for (_, _, crit), v in last.items() if crit == c])
    raters = Counter(r for (r, _, _) in last)
    by_rater: dict[str, dict[tuple[str, str], str]] = defaultdict(dict)
    for (r, pair, c), v in last.items():
        by_rater[r][(pair, c)] = v["outcome"]
    agreement = []
    names = sorted(by_rater)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            both = sorted(set(by_rater[a]) & set(by_rater[b]))
            if not both:
                continue
            la, lb = [by_rater[a][k] for k in both], [by_rater[b][k] for k in both]
            agreement.append({"raters": [a, b], "questions": len(both),
                              "agreement": sum(x == y for x, y in zip(la, lb, strict=True)) / len(both),
                              "kappa": stats.cohen_kappa(la, lb)})
    return {"evaluation": evaluation, "votes": len(last), "raters": dict(sorted(raters.items())),
            "criteria": criteria, "agreement": agreement, "earlier_evaluations": others, "unreadable_lines": bad,
            "repeated": sum(v["evaluation"] == evaluation for v in votes) - len(last)}
