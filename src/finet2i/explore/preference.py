"""The explorer's human-preference pages: a blind side-by-side vote on the evaluation's image pairs (``/vote``)
and what the votes add up to (``/votes``).

A rater gives a name, then sees one question at a time: the prompt above two images (base and fine-tuned, left or
right by a seeded coin per rater and pair; the image URLs say ``left``/``right``, never which model) and answers
with the keyboard, no script needed: type ``1``, ``2`` or ``=`` in the focused field and press Enter, or press
the buttons' access keys (Alt+1, Alt+2, Alt+= in Chromium and Firefox on Linux and Windows). The form posts;
the vote is appended to ``results/human_votes/votes.jsonl`` (:mod:`finet2i.finetune.votes`: locked, fsync'd)
before the page answers with the next question.

A post is refused (400, nothing written) unless it carries this server's form token and, when the browser sends
them, an ``Origin`` of this server and a ``Sec-Fetch-Site`` of ``same-origin``: a page elsewhere cannot vote
through the rater's browser. Names, pairs, criteria and answers are checked against what the evaluation holds
(:func:`finet2i.finetune.votes.make_vote`); every value shown is escaped by the templates.
"""

from __future__ import annotations

import json
import secrets
import threading
from pathlib import Path
from typing import Any

from finet2i.explore.media import inside
from finet2i.explore.query import ExploreError
from finet2i.finetune import votes

EVALUATE = "evaluate"
MAX_BODY = 4096


class Preference:
    """The evaluation's pairs (``results/evaluate/``) and the votes file; ``None`` from :meth:`open` without one."""

    def __init__(self, root: Path, metrics: dict[str, Any], pairs: list[dict[str, Any]]) -> None:
        self.root = root
        self.metrics = metrics
        self.pairs = {p["pair_id"]: p for p in pairs}
        self.evaluation = votes.evaluation_id(pairs)
        self.votes_path = root / votes.VOTES
        self.token = secrets.token_urlsafe(24)  # this server's form token: a page elsewhere cannot know it
        self._lock = threading.Lock()

    @classmethod
    def open(cls, root: Path) -> Preference | None:
        metrics_path = inside(root, f"{EVALUATE}/metrics.json")
        pairs_path = inside(root, f"{EVALUATE}/pairs.parquet")
        if metrics_path is None or pairs_path is None:
            return None
        import pyarrow.parquet as pq

        pairs = pq.read_table(pairs_path, columns=["pair_id", "prompt", "base_image", "tuned_image", "base_sha256",
                                                   "tuned_sha256"]).to_pylist()
        return cls(root, json.loads(metrics_path.read_text()), pairs)

    # ------------------------------------------------------------------------------------------------------

    def questions(self, rater: str) -> list[tuple[str, str]]:
        """(pair, criterion) in the order this rater answers them."""
        return [(p, c) for p in votes.order(self.evaluation, rater, list(self.pairs)) for c in votes.QUESTIONS]

    def next_question(self, rater: str) -> dict[str, Any]:
        """The first question this rater has not answered (``done`` when none is left)."""
        rater = votes.check_rater(rater)
        answered = {(p, c) for (r, p, c) in votes.current(votes.read(self.votes_path)[0], self.evaluation)
                    if r == rater}
        qs = self.questions(rater)
        for k, (pair, criterion) in enumerate(qs):
            if (pair, criterion) not in answered:
                return {"done": False, "rater": rater, "pair": pair, "criterion": criterion,
                        "question": votes.QUESTIONS[criterion], "prompt": self.pairs[pair]["prompt"],
                        "number": k + 1, "total": len(qs), "answered": len(answered)}
        return {"done": True, "rater": rater, "total": len(qs), "answered": len(answered)}

    def image(self, pair: str, position: str, rater: str) -> Path | None:
        """The file shown at ``position`` (left/right) of ``pair`` for ``rater``."""
        if pair not in self.pairs or position not in ("left", "right"):
            return None
        rater = votes.check_rater(rater)
        tuned = (position == "left") == votes.tuned_left(self.evaluation, rater, pair)
        return inside(self.root, f"{EVALUATE}/{self.pairs[pair]['tuned_image' if tuned else 'base_image']}")

    def vote(self, form: dict[str, str], *, origin: str | None, fetch_site: str | None, host: str) -> str:
        """Check and append one vote from a posted form; returns the rater. :class:`ExploreError` when refused."""
        if fetch_site is not None and fetch_site not in ("same-origin", "none"):
            raise ExploreError("vote refused: it came from another site")
        # The pages' Referrer-Policy (no-referrer) makes a browser send "Origin: null" with its own form posts;
        # Sec-Fetch-Site, which no page can forge, then says where the post came from.
        same = origin == f"http://{host}" or (origin == "null" and fetch_site == "same-origin")
        if origin is not None and not same:
            raise ExploreError(f"vote refused: it came from {origin!r}, not from this page")
        if not secrets.compare_digest(form.get("token", ""), self.token):
            raise ExploreError("vote refused: the page is out of date (the server restarted?); go back and reload it")
        # Enter in the key field submits the form with the first button's value as well: the typed key wins.
        key = (form.get("key") or "").strip()
        choice = key or form.get("choice") or ""
        try:
            vote = votes.make_vote(evaluation=self.evaluation, rater=form.get("rater", ""), pair=form.get("pair", ""),
                                   criterion=form.get("criterion", ""), choice=choice, known_pairs=self.pairs)
        except votes.VoteError as e:
            raise ExploreError(f"vote refused: {e}") from None
        with self._lock:  # one server's threads; votes.append locks the file against other processes too
            votes.append(self.votes_path, vote)
        return vote["rater"]

    def summary(self) -> dict[str, Any]:
        out = votes.summarize(self.votes_path, self.evaluation)
        out["judge"] = self.metrics.get("judge") or {}
        out["pairs"] = len(self.pairs)
        out["demo"] = bool(self.metrics.get("demo"))
        return out


def parse_form(body: bytes, content_type: str | None) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (a repeated key keeps its first value)."""
    from urllib.parse import parse_qsl

    if (content_type or "").split(";", 1)[0].strip().lower() != "application/x-www-form-urlencoded":
        raise ExploreError("a vote is a form post (application/x-www-form-urlencoded)")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ExploreError("a vote's form is not UTF-8") from None
    out: dict[str, str] = {}
    try:
        fields = parse_qsl(text, keep_blank_values=True, max_num_fields=16, strict_parsing=False)
    except ValueError:
        raise ExploreError("a vote's form has too many fields") from None
    for k, v in fields:
        out.setdefault(k, v)
    return out
