"""Worker processes against the machine's cores and memory, decided from given figures."""

from __future__ import annotations

import pytest

from paratrain.errors import ConfigError
from paratrain.launch.resources import available_memory_bytes, check_worker_resources, usable_cores


def test_workers_beyond_the_cores_warn_and_beyond_memory_are_refused():
    gib = 2**30
    assert check_worker_resources(2, cores=2, available_bytes=64 * gib) is None
    warning = check_worker_resources(4, cores=2, available_bytes=64 * gib)
    assert "workers=4" in warning and "2 cores" in warning and "slower" in warning and "--workers 2" in warning
    # The case users met: 64 workers took 16.7 GB.
    with pytest.raises(ConfigError, match=r"workers=64 would need about 16\.\d GiB .*per worker.* but 8\.0 GiB is "
                                          r"available; use --workers 2 or fewer"):
        check_worker_resources(64, cores=2, available_bytes=8 * gib)
    assert check_worker_resources(64, cores=64, available_bytes=17 * gib) is None
    with pytest.raises(ConfigError, match="use --workers 4 or fewer"):
        check_worker_resources(8, cores=16, available_bytes=int(1.5 * gib), data_bytes=10 * 2**20)
    assert check_worker_resources(8, cores=16, available_bytes=None) is None  # unknown memory: no refusal


def test_the_machine_figures_are_read():
    assert usable_cores() >= 1
    available = available_memory_bytes()
    assert available is None or available > 0
