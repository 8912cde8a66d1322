"""The resource planner fits P trials x W workers onto the cores and GPUs present."""

from __future__ import annotations

import pytest

from paratrain.errors import ConfigError
from paratrain.tune.planner import plan_resources


def test_two_trials_on_two_cores_get_a_core_and_a_thread_each():
    plan = plan_resources(2, 1, cpus=(0, 1))
    assert plan.parallel == 2 and plan.threads == 1
    assert [slot.cpus for slot in plan.slots] == [(0,), (1,)]
    assert plan.environment(plan.slots[0])["OMP_NUM_THREADS"] == "1"
    assert not plan.notes


def test_too_many_trials_are_cut_to_the_cores_with_a_note():
    plan = plan_resources(4, 2, cpus=tuple(range(4)))
    assert plan.parallel == 2 and plan.threads == 1
    assert [slot.cpus for slot in plan.slots] == [(0, 1), (2, 3)]
    assert "does not fit 4 cores" in plan.notes[0]
    assert "2 trial(s) at once x 2 worker(s)" in plan.describe()


def test_one_trial_gets_every_core_as_threads():
    plan = plan_resources(1, 1, cpus=tuple(range(8)))
    assert plan.threads == 8 and plan.slots[0].cpus == tuple(range(8))
    assert "cores 0-7" in plan.describe()


def test_gpus_are_split_between_trials():
    plan = plan_resources(4, 1, cpus=tuple(range(16)), gpus=("0", "1"))
    assert plan.parallel == 2
    assert [slot.gpus for slot in plan.slots] == [("0",), ("1",)]
    assert plan.environment(plan.slots[1])["CUDA_VISIBLE_DEVICES"] == "1"
    assert plan.threads == 8
    with pytest.raises(ConfigError, match="workers_per_trial=4 needs a GPU per worker, but 2"):
        plan_resources(1, 4, cpus=tuple(range(16)), gpus=("0", "1"))


def test_bad_numbers_are_errors():
    with pytest.raises(ConfigError, match="parallel=0 must be an integer >= 1"):
        plan_resources(0)


def test_no_more_slots_than_trials():
    plan = plan_resources(2, 1, cpus=(0, 1), trials=1)
    assert (plan.parallel, plan.threads, [slot.cpus for slot in plan.slots]) == (1, 2, [(0, 1)])
    assert any("more than the 1 trial(s) to run" in note for note in plan.notes)
    assert plan_resources(2, 1, cpus=(0, 1), trials=5).parallel == 2
