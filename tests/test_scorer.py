"""The scorer's probes compare a row's logits from the two model processes within the checks' tolerance."""

import pytest
import torch

from autoresearch_bench.checks.base import logit_tolerance
from autoresearch_bench.scorer import Probes, Violation

VOCAB, MAGNITUDE = 50, 10.0


@pytest.mark.parametrize("low_precision", [False, True], ids=["fp32", "bf16-cuda"])
def test_a_probed_row_may_differ_by_the_checks_logit_tolerance_and_no_more(low_precision):
    probes = Probes(torch.randint(0, VOCAB, (4, 9)), batch=4, device="cpu")
    probes.low_precision = low_precision  # as on CUDA, without a GPU
    row = (0, 0)
    logits = torch.full((len(probes.batches[0][0].positions), VOCAB), MAGNITUDE)
    tol = logit_tolerance(low_precision, MAGNITUDE)
    probes.seen(row, logits)
    probes.seen(row, logits + 0.9 * tol)  # rounding in another batch: passes
    probes.seen(row, logits)
    with pytest.raises(Violation, match="batch independence|causality"):
        probes.seen(row, logits + 1.1 * tol)
