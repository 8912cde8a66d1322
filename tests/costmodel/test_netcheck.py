"""`paratrain netcheck`: the network between real worker processes, beside what advise assumes."""

from __future__ import annotations

import json
import os

import pytest

from paratrain.costmodel.calibration import CollectiveFit
from paratrain.costmodel.netcheck import BUCKET_BYTES, NetworkCheck, compare
from tests.conftest import run_cli


def _check(bucket_s: float) -> NetworkCheck:
    fit = CollectiveFit(1e-4, 1e-9, ((2, 1024, 2e-4), (2, BUCKET_BYTES, bucket_s)))
    return NetworkCheck(2, "loopback on this machine", fit, None, 1.0)


def test_compare_says_whether_the_assumed_network_holds():
    assumed = CollectiveFit(1e-4, 8 / 1e9)  # 1 Gbit/s: a 4 MiB all-reduce of 2 ranks takes ~33.8 ms
    assert compare(_check(0.035), assumed, "advise --bandwidth 1gbit")[-1].startswith("agrees")
    slow = compare(_check(0.35), assumed, "advise --bandwidth 1gbit")
    assert slow[-1].startswith("differs: the network is 10x slower") and "--bandwidth" in slow[-1]


@pytest.mark.timeout(120)
def test_netcheck_on_loopback_writes_its_figures(tmp_path):
    out = tmp_path / "net.json"
    done = run_cli("netcheck", "--workers", "2", "--seconds", "10", "--bandwidth", "10gbit", "--json", str(out),
                   timeout=100)
    assert done.returncode == 0, done.stderr
    assert "4 MiB all-reduce among 2: measured" in done.stdout
    result = json.loads(out.read_text())
    assert result["workers"] == 2 and result["bucket_all_reduce_s"] > 0
    assert result["bandwidth_bits_per_s"] > 1e8  # loopback moves far more than 100 Mbit/s
    assert list(result["comparisons"]) == ["advise --bandwidth 10gbit"]


@pytest.mark.timeout(120)
@pytest.mark.skipif(os.geteuid() != 0, reason="emulated links need root (network namespaces)")
def test_netcheck_measures_an_emulated_link_at_its_rate(tmp_path):
    out = tmp_path / "net.json"
    done = run_cli("netcheck", "--link", "100mbit", "--seconds", "20", "--bandwidth", "100mbit", "--json", str(out),
                   timeout=110)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    # tc's token bucket holds the link to 100 Mbit/s: measured 96-108 Mbit/s.
    assert 70e6 < result["bandwidth_bits_per_s"] < 130e6
    assert result["comparisons"]["advise --bandwidth 100mbit"][-1].startswith("agrees")


@pytest.mark.parametrize("args, message", [
    (["--workers", "1"], "workers='1' must be an integer >= 2"),
    (["--latency", "50us"], "--latency describes the network of --bandwidth"),
    (["--seconds", "1"], "seconds=1.0 must be between 2 and 600"),
    (["--bandwidth", "fast"], "bandwidth='fast'"),
])
def test_netcheck_bad_input(args, message):
    done = run_cli("netcheck", *args, timeout=60)
    assert done.returncode != 0 and message in done.stderr, done.stderr
