"""`autoresearch-bench compare A B`: the same runs from two results files, B against A, paired by seed."""

from dataclasses import replace

import pytest
from test_storage import record

from autoresearch_bench import cli
from autoresearch_bench.compare import CompareError, compare
from autoresearch_bench.storage import schema

# Seed effects much larger than the machine effect: seed s scores about SEED_EFFECT[s] on any machine.
SEED_EFFECT = {0: 0.640, 1: 0.634, 2: 0.650}


def write(path, runs):
    for r in runs:
        schema.append_results(r, path.with_suffix(".tsv"), path)
    return path


def runs(device, shift, mode="tokens", budget=104857600.0, data_id="d1", steps=200):
    return [
        record(
            task="gpt",
            profile="h100_ref",
            mode=mode,
            budget=budget,
            seed=seed,
            value=value + shift,
            steps=steps,
            extra={"data_id": data_id, "settings": {"device": device}},
        )
        for seed, value in SEED_EFFECT.items()
    ]


def row(comparison, mode):
    return next(r for r in comparison.rows if r["mode"] == mode)


def test_the_same_score_on_other_hardware_is_no_difference_and_pairs_to_almost_zero(tmp_path):
    a = write(tmp_path / "h100.jsonl", runs("H100", 0.0) + runs("H100", 0.0, "time", 60.0, steps=174))
    b = write(tmp_path / "h200.jsonl", runs("H200", 0.0005) + runs("H200", -0.012, "time", 60.0, steps=185))
    comparison = compare(a, b, min_effect=0.004)
    tokens, time = row(comparison, "104,857,600 tokens"), row(comparison, "60 s")
    assert tokens["data"] == "same" and tokens["test"] == "paired t, seeds 0, 1, 2"
    assert (tokens["Δ (B − A)"], tokens["95% CI"]) == ("+0.0005", "[+0.0005, +0.0005]")
    assert tokens["verdict (B vs A)"] == "no difference"  # significant, but below the minimum effect
    # More steps in the same 60 s: pairing by seed removes the seeds' spread, so 3 seeds a side decide it.
    assert (time["Δ (B − A)"], time["verdict (B vs A)"]) == ("-0.0120", "better")
    assert "174 steps" in time["A"] and "185 steps" in time["B"]
    text = comparison.format(a, b)
    assert "A: " + str(a) + " (H100)" in text and "B: " + str(b) + " (H200)" in text


def test_without_shared_seeds_the_runs_are_compared_unpaired(tmp_path):
    a = write(tmp_path / "a.jsonl", runs("H100", 0.0))
    b = write(
        tmp_path / "b.jsonl",
        [
            record(
                task="gpt",
                profile="h100_ref",
                mode="tokens",
                budget=104857600.0,
                seed=seed + 10,
                value=0.628 + seed / 1000,
            )
            for seed in range(3)
        ],
    )
    only = compare(a, b, min_effect=0.004).rows[0]
    assert only["test"] == "Welch" and only["Δ (B − A)"] == "-0.0123"
    assert only["verdict (B vs A)"] == "no difference"  # the seed spread of A (std 0.008) hides it


def test_a_clear_difference_with_enough_seeds_is_judged_by_the_task_direction(tmp_path):
    a = write(tmp_path / "a.jsonl", runs("H100", 0.0))
    b = write(tmp_path / "b.jsonl", runs("H100", 0.05))
    assert compare(a, b, min_effect=0.01).rows[0]["verdict (B vs A)"] == "worse"
    assert compare(b, a, min_effect=0.01).rows[0]["verdict (B vs A)"] == "better"
    assert compare(b, a, min_effect=0.1).rows[0]["verdict (B vs A)"] == "no difference"


def test_runs_scored_on_other_data_are_not_comparable(tmp_path):
    a = write(tmp_path / "a.jsonl", runs("H100", 0.0, data_id="standard"))
    b = write(tmp_path / "b.jsonl", runs("H100", 0.05, data_id="one-file-more"))
    only = compare(a, b).rows[0]
    assert only["verdict (B vs A)"] == "not comparable" and only["data"] == "differ"


def test_records_without_a_data_id_say_the_data_was_not_checked(tmp_path):
    a = write(tmp_path / "a.jsonl", runs("H100", 0.0))
    b = write(
        tmp_path / "b.jsonl",
        [record(task="gpt", profile="h100_ref", mode="tokens", budget=104857600.0, seed=0, value=0.64)],
    )
    assert compare(a, b).rows[0]["data"] == "unknown"


def test_the_profile_min_effect_is_read_from_the_task_folder(tmp_path, tiny_task_dir):
    toml = tiny_task_dir / "task.toml"
    toml.write_text(toml.read_text().replace("[profiles.cpu]\n", "[profiles.cpu]\nmin_effect = 0.02\n"))
    values = {0: 1.0, 1: 1.01, 2: 0.99}
    a = write(tmp_path / "a.jsonl", [record(task="tiny", seed=s, value=v) for s, v in values.items()])
    b = write(tmp_path / "b.jsonl", [record(task="tiny", seed=s, value=v + 0.01) for s, v in values.items()])
    # Half the minimum effect, the same for every seed: significant, yet below what counts.
    assert compare(a, b, tasks_dir=tiny_task_dir.parent).rows[0]["verdict (B vs A)"] == "no difference"
    assert compare(a, b, min_effect=0.0, tasks_dir=tiny_task_dir.parent).rows[0]["verdict (B vs A)"] == "worse"


def test_files_without_matching_runs_or_without_ok_runs_are_refused(tmp_path):
    a = write(tmp_path / "a.jsonl", runs("H100", 0.0))
    other_budget = write(tmp_path / "b.jsonl", runs("H100", 0.0, "time", 60.0))
    crashed = write(tmp_path / "c.jsonl", [record(status="crash", value=None, error="boom")])
    with pytest.raises(CompareError, match="matches one in"):
        compare(a, other_budget)
    with pytest.raises(CompareError, match="no ok runs"):
        compare(a, crashed)


def test_the_command_prints_the_table_or_a_one_line_error(tmp_path, capsys):
    a = write(tmp_path / "a.jsonl", runs("H100", 0.0))
    b = write(tmp_path / "b.jsonl", runs("H200", 0.0))
    assert cli.main(["compare", str(a), str(b), "--format", "github"]) == 0
    assert "| gpt " in capsys.readouterr().out
    assert cli.main(["compare", str(a.with_suffix(".tsv")), str(b)]) == 0  # the records beside results.tsv
    assert "a.tsv (H100)" in capsys.readouterr().out
    assert cli.main(["compare", str(a), str(tmp_path / "missing.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert "missing.jsonl: no such results file" in err and "\n" not in err


def test_two_candidates_of_one_file_compare_with_each_other(tmp_path, capsys):
    both = write(
        tmp_path / "results.jsonl", runs("H100", 0.0) + [replace(r, candidate="idea") for r in runs("H100", -0.005)]
    )
    only = compare(both, both, min_effect=0.004, candidates=("train", "idea")).rows[0]
    assert only["candidate"] == "train → idea" and only["verdict (B vs A)"] == "better"
    assert only["test"] == "paired t, seeds 0, 1, 2" and only["Δ (B − A)"] == "-0.0050"
    with pytest.raises(CompareError, match="no ok runs of candidate nope"):
        compare(both, both, candidates=("train", "nope"))
    assert cli.main(["compare", str(both), str(both), "--candidates", "train", "idea"]) == 0
    assert "train → idea" in capsys.readouterr().out
