"""The demo's fake photo APIs (rules/demo.smk): started or joined by a run's onstart, handed back by its onsuccess /
onerror, and gone once no run holds them: a finished demo leaves no process and no port behind (issue 23)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from finet2i.demo.fake_apis import _healthy, ensure_demo_server, release_demo_server

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Whether a server could listen on it again (as servers do: connections left in TIME_WAIT do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


@pytest.mark.timeout(120)
def test_the_demo_server_stops_when_the_last_run_hands_it_back_and_frees_its_port():
    port = free_port()
    first = ensure_demo_server(port)
    second = ensure_demo_server(port)  # a second demo joins the running server
    assert _healthy(port) and first != second
    assert release_demo_server(first, port, wait_s=2) is False  # the other run still holds it
    assert _healthy(port)
    assert release_demo_server(second, port) is True
    assert not _healthy(port) and port_is_free(port)


def test_the_demo_rules_hand_the_server_back_however_the_run_ends():
    text = (ROOT / "rules" / "demo.smk").read_text()
    for handler in ("onsuccess:", "onerror:"):
        block = text[text.index(handler):].split("\n\n")[0]
        assert "stop_demo_sources()" in block, handler
    assert "def stop_demo_sources" in text and "release_demo_server" in text
