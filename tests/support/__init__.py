"""Helpers and shared fixtures of the tests (tests/conftest.py registers the fixtures)."""
