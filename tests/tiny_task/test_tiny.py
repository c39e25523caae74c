"""The tiny task's checks, as a task author writes them."""
import pytest


def test_source_policy(ar_check):
    ar_check("source_policy")


def test_logits_shape(ar_check):
    ar_check("logits_shape")


def test_causality(ar_check):
    ar_check("causality", examples=5)


@pytest.mark.autoresearch
def test_benchmark(ar_benchmark):
    ar_benchmark()
