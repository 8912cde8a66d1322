"""`paratrain launch --emit slurm` on a real Slurm: munged, slurmctld and slurmd from Debian's
packages, started on this machine by scripts/slurm.sh. A job of 2 tasks (2 torchrun agents)
must train to the same parameters as 2 local workers."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from paratrain.errors import ParatrainError
from paratrain.launch.emitted import NodeResources
from paratrain.launch.launch_config import LaunchConfig
from paratrain.launch.slurm import SlurmOptions, slurm_script, submit_sbatch
from tests.conftest import assert_states_close, model_state, run_cli

REPO = Path(__file__).resolve().parents[2]
# --threads 1: both runs alike, and 2 agents on this machine's cores do not oversubscribe them.
FIT = ["fit", "--target", "y", "--strategy", "ddp", "--hidden", "16", "--epochs", "2", "--precision", "fp32",
       "--threads", "1", "--quiet"]


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A one-node Slurm cluster for the session; its daemons are stopped at the end, whatever happens."""
    if os.geteuid() != 0:
        pytest.skip("slurmd must run as root to start jobs (scripts/slurm.sh)")
    if shutil.which("sbatch") is None and shutil.which("apt-get") is None:
        pytest.skip("Slurm is not installed and apt-get is missing to install it")
    folder = tmp_path_factory.mktemp("slurm")
    script = ["bash", str(REPO / "scripts" / "slurm.sh")]
    try:
        started = subprocess.run([*script, "start", str(folder)], capture_output=True, text=True, timeout=600)
        if started.returncode == 2:
            pytest.skip(f"no Slurm here: {started.stderr.strip()}")
        assert started.returncode == 0, f"scripts/slurm.sh start failed:\n{started.stderr[-3000:]}"
        conf = started.stdout.strip().splitlines()[-1].partition("=")[2]
        yield {"SLURM_CONF": conf}
    finally:
        subprocess.run([*script, "stop", str(folder)], capture_output=True, timeout=120)


def test_script_asks_for_what_was_given_and_parses():
    config = LaunchConfig(nnodes="2:4", node_rank=None, master="$MASTER:29500", command=("fit", "--data", "a b.csv"),
                          nproc_per_node=2, interface="ib0", max_restarts=3, rdzv_timeout_s=120)
    options = SlurmOptions(job_name="big", partition="cpu", resources=NodeResources(
        cpus=8, memory="16G", gpus=2, time_limit="1-02:00:00"))
    text = slurm_script(config, options)
    for line in ["#SBATCH --job-name=big", "#SBATCH --nodes=2-4", "#SBATCH --ntasks-per-node=1",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --mem=16G", "#SBATCH --time=1-02:00:00",
                 "#SBATCH --partition=cpu", "#SBATCH --gres=gpu:2", "#SBATCH --output=big-%j.out",
                 "set -euo pipefail", 'MASTER=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)',
                 "export RDZV_PORT=29500", "export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1",
                 "export GLOO_SOCKET_IFNAME=ib0", "--nnodes 2:4",
                 "--nproc-per-node 2", '--rdzv-conf "is_host=$is_host,join_timeout=120"', "--max-restarts 3",
                 "' paratrain-agent fit --data 'a b.csv'"]:
        assert line in text, line
    # Every #SBATCH line comes before the first command, or sbatch ignores it.
    first_command = text.index("set -euo pipefail")
    assert text.rindex("#SBATCH") < first_command
    checked = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr


def test_submit_without_sbatch_says_what_to_do(tmp_path, monkeypatch):
    with monkeypatch.context() as patched:
        patched.setenv("PATH", str(tmp_path))  # no sbatch on it
        with pytest.raises(ParatrainError, match=r"sbatch, which is not on PATH.*sbatch .*job.sh"):
            submit_sbatch(str(tmp_path / "job.sh"))
    done = run_cli("launch", "--emit", "slurm", "--node-rank", "1", "--", "fit", "--demo")
    assert done.returncode != 0 and "--node-rank 1 does not go with --emit slurm" in done.stderr


@pytest.mark.timeout(480)
def test_sbatch_job_of_two_agents_trains_like_two_local_workers(tmp_path, regression_csv, slurm_cluster,
                                                                monkeypatch):
    script = tmp_path / "job.sh"
    with socket.socket() as probe:  # a free port for the rendezvous, not the default one other jobs may hold
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    emitted = run_cli("launch", "--emit", "slurm", "--nnodes", "2", "--nproc-per-node", "1", "--cpus-per-node", "1",
                      "--master", f"$MASTER:{port}",
                      "--job-name", "paratrain-test", "--output", str(script), "--",
                      *FIT, "--data", str(regression_csv), "--out", str(tmp_path / "slurm"))
    assert emitted.returncode == 0, emitted.stderr
    assert script.stat().st_mode & 0o777 == 0o755
    # The job inherits this environment (sbatch --export=ALL): the Python that has paratrain comes first on PATH.
    monkeypatch.setenv("SLURM_CONF", slurm_cluster["SLURM_CONF"])
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    try:
        # One machine here: its 2 tasks are the 2 agents that 2 nodes would run.
        job_id = submit_sbatch(str(script), ("--nodes=1", "--ntasks=2", "--ntasks-per-node=2",
                                             f"--chdir={tmp_path}", "--wait"), timeout_s=400)
    except ParatrainError as error:
        logs = "\n".join(p.read_text()[-3000:] for p in tmp_path.glob("paratrain-test-*.out"))
        pytest.fail(f"{error}\n{logs}")
    log = (tmp_path / f"paratrain-test-{job_id}.out").read_text()
    assert "2 agent(s), rendezvous at" in log, log[-3000:]
    local = run_cli(*FIT, "--data", str(regression_csv), "--workers", "2", "--out", str(tmp_path / "local"),
                    timeout=300)
    assert local.returncode == 0, local.stderr
    assert_states_close(model_state(tmp_path / "slurm"), model_state(tmp_path / "local"), atol=1e-6)

    # --submit writes the script, submits it and prints the job id, which Slurm knows.
    submitted = run_cli("launch", "--emit", "slurm", "--submit", "--output", str(tmp_path / "demo.sh"),
                        "--job-name", "paratrain-submit", "--", "fit", "--demo", "--out", str(tmp_path / "demo"),
                        cwd=tmp_path)
    assert submitted.returncode == 0 and submitted.stdout.strip().isdigit(), submitted.stderr
    job_id = submitted.stdout.strip()
    try:
        shown = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=30)
        assert "JobName=paratrain-submit" in shown.stdout, shown.stdout + shown.stderr
    finally:
        subprocess.run(["scancel", job_id], capture_output=True, timeout=30)
