"""The scorer: its probes compare a row's logits from the two model processes within the checks' tolerance;
it counts the weights file the trainer wrote, and only that file."""

import pytest
import torch

from autoresearch_bench.checks.base import logit_tolerance
from autoresearch_bench.scorer import Probes, Violation, count_weights

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


def test_the_weights_are_read_from_the_file_the_trainer_wrote_never_through_a_link(tmp_path):
    # the scorer is root: a link to a file only root may read would put a line of it in the record
    weights = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(3, 4)}, weights)
    assert count_weights(str(weights), max_params=100)[0] == 12
    secret = tmp_path / "root-only"
    secret.write_text("x" * 64)
    (tmp_path / "link.pt").symlink_to(secret)
    with pytest.raises(Violation, match="model.pt is a symbolic link"):
        count_weights(str(tmp_path / "link.pt"), max_params=100)
