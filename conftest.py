"""Fixtures shared by the project's own tests (tests/); the plugin itself lives in autoresearch_bench."""

pytest_plugins = ["pytester"]
