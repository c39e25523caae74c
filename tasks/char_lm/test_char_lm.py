"""char_lm: what every candidate must satisfy before its timed run counts.

Each test runs once per candidate (train.py, candidates/*.py, --ar-candidate), in an isolated child
process; `pytest --autoresearch` then trains and scores the candidates that passed.
"""
import pytest


def test_source_imports_only_allowed_modules(ar_check):
    ar_check("source_policy")


def test_logits_have_shape_batch_time_vocab(ar_check):
    ar_check("logits_shape")


def test_logits_are_finite(ar_check):
    ar_check("finite")


def test_initial_loss_is_near_ln_vocab(ar_check):
    ar_check("initial_loss")


def test_future_tokens_do_not_change_past_logits(ar_check):
    ar_check("causality", examples=10)


def test_rows_of_a_batch_are_independent(ar_check):
    ar_check("batch_independence")


def test_eval_mode_computes_what_train_mode_trains(ar_check):
    # dropout is allowed (train mode random, eval mode its noise-free version); branching on self.training is not
    ar_check("eval_train_consistency")


def test_eval_is_deterministic(ar_check):
    ar_check("deterministic_eval")


def test_loss_falls_on_one_repeated_batch(ar_check):
    ar_check("overfit_batch")


def test_parameter_count_within_limit(ar_check):
    ar_check("param_limit")


@pytest.mark.autoresearch
def test_benchmark(ar_benchmark):
    ar_benchmark()
