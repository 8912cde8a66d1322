"""`paratrain launch --emit slurm`: an sbatch script that runs the job under Slurm.

Slurm starts one task per node (``srun``); each task runs one torchrun agent, which
starts ``--nproc-per-node`` paratrain workers on its node. The agents meet at torchrun's
c10d rendezvous, hosted by task 0 on the first node of ``SLURM_JOB_NODELIST``: paratrain
adds no rendezvous of its own. The number of agents is ``SLURM_NTASKS``, so the same
script also runs with ``sbatch --nodes=1 --ntasks=2`` (two agents on one machine).
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass

from paratrain.errors import ConfigError, ParatrainError
from paratrain.launch.emitted import (
    SCHEDULED_MASTER_HOST,
    NodeResources,
    write_emitted,
)
from paratrain.launch.launch_config import LaunchConfig, rdzv_conf


@dataclass(frozen=True)
class SlurmOptions:
    """What the sbatch script asks Slurm for, beyond the LaunchConfig.

    Example:
        >>> SlurmOptions(job_name="fit-a", resources=NodeResources(cpus=4), partition="cpu").log_file
        'fit-a-%j.out'
    """

    job_name: str
    """The job's name in squeue (and in its log file's name)."""
    resources: NodeResources
    """Cores, memory, GPUs and time for each node."""
    partition: str | None = None
    """The partition to queue in; None: the cluster's default."""
    output: str | None = None
    """Slurm's log file (--output, %j is the job id); None: JOB_NAME-%j.out in the submit folder."""
    python: str = "python"
    """The Python that has paratrain installed, as the nodes find it (the job inherits the submitter's PATH)."""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.+-]+", self.job_name):
            raise ConfigError(f"--job-name {self.job_name!r} may hold only letters, digits, '.', '_', '+' and '-'")
        if not re.fullmatch(r"[A-Za-z0-9_./+-]+", self.python):
            raise ConfigError(f"python={self.python!r} must be a command name or path without spaces or quotes")

    @property
    def log_file(self) -> str:
        return self.output or f"{self.job_name}-%j.out"


def slurm_script(config: LaunchConfig, options: SlurmOptions) -> str:
    """The sbatch script for CONFIG: one torchrun agent per Slurm task, c10d rendezvous on the first node.

    Example:
        >>> cfg = LaunchConfig(nnodes="2", node_rank=None, master="$MASTER:29400", command=("fit", "--demo"))
        >>> text = slurm_script(cfg, SlurmOptions(job_name="demo", resources=NodeResources(cpus=2)))
        >>> "#SBATCH --nodes=2" in text and "-m paratrain \\"$@\\"" in text
        True
    """
    res = options.resources
    nproc = config.nproc_per_node
    elastic = config.min_nodes != config.max_nodes
    directives = [
        f"--job-name={options.job_name}",
        # A MIN-MAX range lets Slurm start the job with as few as MIN nodes.
        f"--nodes={config.min_nodes}-{config.max_nodes}" if elastic else f"--nodes={config.max_nodes}",
        "--ntasks-per-node=1",
        f"--cpus-per-task={res.cpus}",
    ]
    if res.memory:
        directives.append(f"--mem={res.memory}")
    if res.time_limit:
        directives.append(f"--time={res.time_limit}")
    if options.partition:
        directives.append(f"--partition={options.partition}")
    if res.gpus:
        directives.append(f"--gres=gpu:{res.gpus}")
    directives.append(f"--output={options.log_file}")

    if config.master_host == SCHEDULED_MASTER_HOST:
        master = ('# The rendezvous lives on the first node of the allocation; every agent connects to it there.\n'
                  'MASTER=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)')
    else:
        master = ("# The rendezvous host given with --master; every agent connects to it there.\n"
                  f"MASTER={shlex.quote(config.master_host)}")
    # Fixed size: one agent per task. Elastic: the range, so the job goes on when a node is gone.
    nnodes = f"{config.min_nodes}:{config.max_nodes}" if elastic else '"$SLURM_NTASKS"'
    interface = ""
    if config.interface:
        interface = ("\n# gloo binds the workers' sockets to this interface (the one the nodes reach each other on).\n"
                     f"export GLOO_SOCKET_IFNAME={shlex.quote(config.interface)}\n")
    conf = rdzv_conf("$is_host", config.rdzv_timeout_s)
    command = shlex.join(config.command)

    return f"""#!/bin/bash
# Slurm batch script written by `paratrain launch --emit slurm`. Submit it with: sbatch THIS_FILE
#
# Slurm gives the job {config.nnodes} node(s) and runs one task on each. Every task starts one torchrun
# agent; the agent starts {nproc} paratrain worker(s) on its node. The agents meet at torchrun's c10d
# rendezvous on the first node and number the workers 0..N-1 across the job.
#
# What Slurm is asked for, per node (the #SBATCH lines; sbatch options on the command line win):
{chr(10).join(f"#SBATCH {line}" for line in directives)}

# Stop at the first failing command, unset variable or failing pipe stage.
set -euo pipefail

{master}
export MASTER
export RDZV_PORT={config.master_port}

# On a restart, torchrun must give the new group a fresh store: without this, gloo fails with
# "connectFullMesh failed" and --max-restarts cannot bring the group back.
export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1
# Each worker gets its share of the task's cores: more threads than cores slow every worker down.
OMP_NUM_THREADS=$(( ${{SLURM_CPUS_PER_TASK:-{res.cpus}}} / {nproc} ))
export OMP_NUM_THREADS=$(( OMP_NUM_THREADS > 0 ? OMP_NUM_THREADS : 1 ))
# Logs arrive as they are written, not when a buffer fills.
export PYTHONUNBUFFERED=1
{interface}
echo "paratrain: job $SLURM_JOB_ID, $SLURM_NTASKS agent(s), rendezvous at $MASTER:$RDZV_PORT" >&2

# srun starts the tasks ($SLURM_NTASKS of them, one per node) and waits for all of them.
# --kill-on-bad-exit: when one agent gives up, stop the others instead of leaving them waiting.
# The agent's command is written once, in single quotes; each task fills in its own $SLURM_PROCID.
# The paratrain command follows as arguments ("$@"), so its quoting is kept as written.
srun --kill-on-bad-exit=1 ${{SLURM_CPUS_PER_TASK:+--cpus-per-task=$SLURM_CPUS_PER_TASK}} bash -c '
  # Task 0 hosts the rendezvous store; the other agents are its clients.
  if [ "$SLURM_PROCID" = 0 ]; then is_host=true; else is_host=false; fi
  exec {options.python} -m torch.distributed.run \\
    --nnodes {nnodes} \\
    --nproc-per-node {nproc} \\
    --node-rank "$SLURM_PROCID" \\
    --rdzv-backend c10d \\
    --rdzv-endpoint "$MASTER:$RDZV_PORT" \\
    --rdzv-id "$SLURM_JOB_ID" \\
    --rdzv-conf "{conf}" \\
    --max-restarts {config.max_restarts} \\
    -m paratrain "$@"
' paratrain-agent {command}
"""


def slurm_options(config: LaunchConfig, args: argparse.Namespace) -> SlurmOptions:
    """The SlurmOptions that `paratrain launch --emit slurm` flags describe."""
    resources = NodeResources(cpus=args.cpus_per_node or config.nproc_per_node, memory=args.memory,
                              gpus=args.gpus_per_node or 0, time_limit=args.time_limit)
    return SlurmOptions(job_name=args.job_name or config.run_id, resources=resources, partition=args.partition)


def submit_sbatch(script: str, extra_args: tuple[str, ...] = (), timeout_s: float | None = 60.0) -> str:
    """Submit SCRIPT with sbatch and return the job id.

    Args:
        script: path of the sbatch script.
        extra_args: sbatch options that override the script's #SBATCH lines (e.g. "--ntasks=2").
        timeout_s: how long sbatch may take (None: no limit, e.g. with "--wait").

    Raises:
        ParatrainError: sbatch is missing or refuses the job (its message is quoted).
    """
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise ParatrainError(f"--submit runs sbatch, which is not on PATH here; run `sbatch {script}` on the "
                             "cluster's login node, or leave out --submit")
    done = subprocess.run([sbatch, "--parsable", *extra_args, script], capture_output=True, text=True,
                          timeout=timeout_s)
    if done.returncode != 0:
        raise ParatrainError(f"sbatch refused {script} (exit {done.returncode}): {done.stderr.strip()}")
    # --parsable prints "JOBID" or "JOBID;CLUSTER"; with --wait sbatch prints nothing else on stdout.
    return done.stdout.strip().splitlines()[0].split(";")[0]


def emit_slurm(config: LaunchConfig, args: argparse.Namespace) -> int:
    """Write the sbatch script to --output (0755) or standard output; with --submit, submit it too."""
    options = slurm_options(config, args)
    if args.submit and args.output in (None, "-"):
        raise ConfigError("--submit needs --output FILE: the script sbatch runs (and that you keep)")
    write_emitted(slurm_script(config, options), args.output, mode=0o755)
    if args.submit:
        print(submit_sbatch(args.output))
    return 0
