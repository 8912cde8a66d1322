"""Looking at real processes through /proc: children, liveness, listening sockets, run directories."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from paratrain.train.checkpoint import load_torch

HAS_PROC = Path("/proc/self/task").exists()


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def argument(pid: int, flag: str) -> str | None:
    """The value after ``flag`` on a process's command line."""
    args = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    return args[args.index(flag) + 1] if flag in args else None


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper that never comes counts as gone: it runs nothing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def kill_group(proc: subprocess.Popen) -> None:
    """Whatever happened, leave no process of a test behind (``proc`` leads its own session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def wait_until(condition, timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def listening_addresses(pid: int) -> list[str]:
    """'address:port' of every TCP socket that ``pid`` listens on (IPv4 and IPv6)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    found = []
    for table, width in (("tcp", 8), ("tcp6", 32)):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                address, port = fields[1].split(":")
                found.append(f"{_address(address, width)}:{int(port, 16)}")
    return found


def _address(hex_address: str, width: int) -> str:
    raw = bytes.fromhex(hex_address)
    # /proc prints each 32-bit word in host (little-endian) order.
    words = [raw[i : i + 4][::-1] for i in range(0, len(raw), 4)]
    packed = b"".join(words)
    if width == 8:
        return ".".join(str(b) for b in packed)
    if packed[:12] == b"\0" * 10 + b"\xff\xff":
        return ".".join(str(b) for b in packed[12:])  # IPv4 mapped into IPv6
    import ipaddress

    return str(ipaddress.IPv6Address(packed))


def start_fit(data: Path, out: Path, *flags: str, env: dict | None = None) -> subprocess.Popen:
    """`paratrain fit` in a session (and process group) of its own, as a shell job would be."""
    command = [sys.executable, "-m", "paratrain", "fit", "--data", str(data), "--target", "y", "--quiet",
               "--out", str(out), *flags]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})))


def wait_for_file(proc: subprocess.Popen, path: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)


def metrics_epochs(run_dir: Path) -> list[int]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line)["epoch"] for line in path.read_text().splitlines() if line.strip()]


def checkpoint_epoch(run_dir: Path) -> int:
    return load_torch(Path(run_dir) / "checkpoint.pt")["state"]["epoch"]
