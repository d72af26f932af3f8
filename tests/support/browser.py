"""Debian's chromium driven by Playwright (never a downloaded browser), for the tests that look at a page: the
report, the explorer and the vote page. Screenshots go under ``$FINET2I_TEST_ARTIFACTS/<name>`` when set (CI keeps
them), else under the pytest temp folder."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def require_chromium() -> None:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium); "
                    f"scripts/setup-env.sh does it")


@contextmanager
def chromium(tmp_path_factory: pytest.TempPathFactory, viewport: dict[str, int]) -> Iterator[Any]:
    """A browser context on a fresh profile (--user-data-dir) with the window size ``viewport``."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_FLAGS, viewport=viewport)
        try:
            yield context
        finally:
            context.close()


def screenshots_dir(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    where = os.environ.get("FINET2I_TEST_ARTIFACTS")
    out = Path(where) / name if where else tmp_path_factory.mktemp(name)
    out.mkdir(parents=True, exist_ok=True)
    return out
