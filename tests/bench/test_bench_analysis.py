"""Bench's rows and analysis on closed cases: no training, figures made up to the point."""

from __future__ import annotations

import math

import pytest

from paratrain.bench.analysis import INF, Spread, analyse, choose_targets, ties, winner
from paratrain.bench.contenders import BenchRow, build_rows, parse_contenders
from paratrain.bench.measurement import BenchConfig, RunRecord, TrainingBudget
from paratrain.bench.render import bench_table, verdicts
from paratrain.errors import ConfigError


def test_spreads_that_overlap_tie_and_those_apart_do_not():
    a, b, c = Spread(2.0, 1.0, 3.0), Spread(3.5, 3.0, 4.0), Spread(5.0, 4.5, 6.0)
    assert a.overlaps(b) and b.overlaps(a)  # touching at 3.0 counts as overlapping
    assert not a.overlaps(c) and b.overlaps(Spread(4.0, 4.0, 4.0))
    assert ties({"a": a, "b": b, "c": c}) == {"a": ["b"], "b": ["a"], "c": []}
    assert winner({"a": a, "b": b, "c": c}) == ("a", ["b"])  # a has the lowest median, but b's spread reaches it
    assert winner({"a": a, "c": c}) == ("a", [])
    never = Spread(INF, INF, INF)
    assert winner({"x": never, "y": never}) == (None, ["x", "y"])
    assert never.overlaps(Spread(1.0, 1.0, INF)) and not never.overlaps(c)


def _config(**overrides) -> BenchConfig:
    values = {"fit": {"target": "y", "epochs": 2, "batch_size": 10, "evals_per_epoch": 1}, "contenders": ["single", "ddp"],
              "workers": [1, 2], "repeat": 3, **overrides}
    return BenchConfig(**values)


def _records(losses: list[float], seconds: float = 1.0, rate: float = 100.0) -> list[dict]:
    return [{"epoch": i + 1, "val_loss": loss, "train_seconds": seconds, "samples_per_s": rate,
             "peak_memory_bytes": 1000} for i, loss in enumerate(losses)]


def test_a_repetition_that_never_reaches_the_target_counts_as_the_slowest():
    config = _config(target_loss=0.5)
    rows = [BenchRow("single", 1, None), BenchRow("ddp", 2, "loopback")]
    runs = [RunRecord("single@1", rep, _records([0.9, 0.4]), 0.4, 3.0) for rep in range(3)]
    # ddp reaches the target after 1 s twice and never once: not converged, and its max is infinite.
    runs += [RunRecord("ddp@2@loopback", 0, _records([0.4, 0.3]), 0.3, 3.0),
             RunRecord("ddp@2@loopback", 1, _records([0.9, 0.8]), 0.8, 3.0, budget_hit=True),
             RunRecord("ddp@2@loopback", 2, _records([0.45, 0.3]), 0.3, 3.0)]
    targets, source = choose_targets(config, rows, runs)
    assert targets == [0.5] * 3 and source == "given"
    single, ddp = analyse(config, rows, runs, targets)
    assert single.converged and single.time_to_target_s == Spread(2.0, 2.0, 2.0)
    assert not ddp.converged and ddp.reps_time_to_target_s == [1.0, INF, 1.0]
    assert ddp.time_to_target_s == Spread(1.0, 1.0, INF)
    assert ddp.to_dict()["time_to_target_s_per_rep"] == [1.0, None, 1.0]
    assert ddp.to_dict()["time_to_target_s_min_max"] == [1.0, None]
    # Its infinite max reaches single's 2 s: they tie, and the report names no winner.
    assert ddp.ties == ["single@1"] and single.ties == ["ddp@2@loopback"]
    from paratrain.bench.analysis import candidates_by_link

    (line,) = verdicts(candidates_by_link([single, ddp]))
    assert "tie" in line and "ddp x2, loopback" in line and "single x1" in line
    assert single.scaling_efficiency == 1.0 and ddp.scaling_efficiency == pytest.approx(0.5)  # same rate, 2 workers


def test_a_row_that_never_converges_is_slower_than_any_that_does_and_the_budget_shows():
    config = _config(target_loss=0.5, repeat=1, max_seconds_per_run=2.0)
    rows = [BenchRow("single", 1, None), BenchRow("ddp", 2, "loopback")]
    runs = [RunRecord("single@1", 0, _records([0.9, 0.4], seconds=50.0), 0.4, 100.0),
            RunRecord("ddp@2@loopback", 0, _records([0.9, 0.8]), 0.8, 3.0, budget_hit=True)]
    single, ddp = analyse(config, rows, runs, [0.5])
    assert math.isinf(ddp.time_to_target_s.median) and ddp.to_dict()["time_to_target_s"] is None
    assert winner({"single": single.time_to_target_s, "ddp": ddp.time_to_target_s}) == ("single", [])
    cells = {row[0]: row for row in bench_table([single, ddp], 1, 2.0)}
    assert cells["ddp"][4] == ">= 2 (budget)" and cells["ddp"][5] == "no (0/1)"
    assert cells["single"][4] == "100" and cells["single"][5] == "yes (1/1)"


def test_compute_is_the_ceiling_rows_step_and_communication_the_rest():
    config = _config(target_loss=0.5, repeat=1, contenders=["single", "ddp"])
    rows = [BenchRow("single", 1, None), BenchRow("ddp", 2, "loopback"), BenchRow("no-comm", 2, None, "ceiling")]
    # 10 rows per worker per step: ddp at 400 samples/s takes 50 ms a step, the ceiling at 1000, 20 ms.
    runs = [RunRecord("single@1", 0, _records([0.4, 0.4], rate=250.0), 0.4, 1.0),
            RunRecord("ddp@2@loopback", 0, _records([0.4, 0.4], rate=400.0), 0.4, 1.0),
            RunRecord("no-comm@2", 0, _records([0.4, 0.4], rate=1000.0), 0.4, 1.0)]
    single, ddp, ceiling = analyse(config, rows, runs, [0.5])
    assert ddp.measured_step_s.median == pytest.approx(0.05)
    assert ddp.compute_s_per_step == pytest.approx(0.02) and ddp.comm_s_per_step == pytest.approx(0.03)
    assert single.compute_s_per_step == pytest.approx(0.04) and single.comm_s_per_step == 0
    assert ceiling.comm_s_per_step == 0 and ddp.scaling_efficiency == pytest.approx(0.8)
    assert ceiling.ties == [] and "no-comm@2" not in ddp.ties  # the ceiling is never a candidate


def test_rows_come_from_the_registry_with_the_ceiling_reference_and_probe():
    specs = parse_contenders(None)
    assert "ddp+topk:0.01" in specs and "stale" not in specs
    rows = build_rows(specs, [1, 2, 4], ["loopback"])
    keys = [row.key for row in rows]
    assert keys[0] == "single@1" and "single@2@loopback" not in keys
    assert {"no-comm@2", "no-comm@4", "torch-ddp@2@loopback", "ddp+powersgd:4@4@loopback"} <= set(keys)
    assert next(r for r in rows if r.spec == "no-comm").fields["strategy"].startswith("localsgd:")
    assert next(r for r in rows if r.spec == "ddp+topk:0.01").fields["compress"] == "topk:0.01"
    probed = build_rows(["single", "stale"], [1, 2], ["loopback", "1gbit"])
    assert [(r.spec, r.kind) for r in probed] == [("single", "strategy"), ("stale:1", "probe"), ("no-comm", "ceiling")]
    assert [r.spec for r in build_rows(["stale:3"], [2], ["loopback"])] == ["stale:3", "no-comm"]  # its own delay
    assert [r.key for r in build_rows(["single", "ddp"], [1, 2], ["loopback", "1gbit"])] == [
        "single@1", "ddp@2@loopback", "torch-ddp@2@loopback", "no-comm@2", "ddp@2@1gbit", "torch-ddp@2@1gbit"]


@pytest.mark.parametrize("overrides, words", [({"contenders": ["ddp", "gossip"]}, "strategies='gossip'"),
                                              ({"workers": [0, 2]}, "workers="), ({"repeat": 0}, "repeat=0"),
                                              ({"max_seconds_per_run": 0}, "max_seconds_per_run=0"),
                                              ({"links": ["0mbit"]}, "link"),
                                              ({"calibration": "/nonexistent.json"}, "calibration=")])
def test_config_errors_name_the_field(overrides, words):
    with pytest.raises(ConfigError, match=words.replace("[", r"\[")):
        _config(**overrides)


def test_the_budget_stops_after_the_epoch_that_passes_it():
    budget = TrainingBudget(2.5)
    assert [budget.on_epoch_end({"train_seconds": 1.0}) for _ in range(3)] == [False, False, True]


def test_no_calibration_means_no_prediction_and_says_why():
    from paratrain.bench.prediction import predicted_step_s

    assert predicted_step_s(None, "ddp", 2, "loopback") == (None, "no --calibration given")


def test_without_the_cost_model_a_calibration_gives_no_prediction_and_a_note(tmp_path):
    import importlib.util

    from paratrain.bench.prediction import predicted_step_s

    calibration = tmp_path / "calibration.json"
    calibration.write_text("{}")
    value, note = predicted_step_s(str(calibration), "ddp", 2, "loopback")
    assert value is None and note
    if importlib.util.find_spec("paratrain.costmodel") is None:
        assert note.startswith("the cost model is not available here")


def test_a_bad_link_is_refused_before_anything_runs():
    with pytest.raises(ConfigError, match="link='0mbit'"):
        _config(links=["loopback", "0mbit"])


def test_the_live_table_prints_plain_lines_off_a_terminal_and_redraws_on_one():
    import io

    from paratrain.bench.live import LiveTable

    rows = [BenchRow("single", 1, None), BenchRow("ddp", 2, "loopback")]
    run = RunRecord("single@1", 0, _records([0.5, 0.4], rate=1234.0), 0.4, 2.0)
    for interactive in (False, True):
        stream = io.StringIO()
        table = LiveTable(stream, interactive=interactive)
        table("start", {"rows": rows, "runs": 2, "repeat": 1})
        table("run", {"row": rows[0], "rep": 0, "index": 0})
        table("done", {"row": rows[0], "rep": 0, "run": run, "index": 1, "runs": 2})
        text = stream.getvalue()
        assert "1,234 samples/s, val_loss 0.4" in text and "ETA" in text
        assert ("\x1b[" in text) is interactive  # cursor movement only on a terminal
        if not interactive:
            assert "[1/2] single x1 rep 1:" in text
