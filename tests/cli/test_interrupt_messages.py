"""What the CLI says after Ctrl-C or SIGTERM: the command that continues the work."""

from __future__ import annotations

import signal

from paratrain.cli import _interrupted_message
from paratrain.train.interrupts import Interrupted


def _interrupted(signum: int, run_dir=None) -> Interrupted:
    exc = Interrupted(signum)
    if run_dir is not None:
        exc.run_dir = run_dir
    return exc


def test_a_fit_with_a_checkpoint_names_the_resume_command(tmp_path):
    run = tmp_path / "my run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"")
    message = _interrupted_message(_interrupted(signal.SIGTERM, run), "fit")
    assert message == f"paratrain: interrupted by SIGTERM; continue with: paratrain fit --resume '{run}'"


def test_a_fit_without_a_checkpoint_says_how_to_start_again(tmp_path):
    (tmp_path / "config.yaml").write_text("{}")
    message = _interrupted_message(_interrupted(signal.SIGINT, tmp_path), "fit")
    assert "nothing to resume" in message and f"--out {tmp_path}" in message
    gone = _interrupted_message(_interrupted(signal.SIGINT, tmp_path / "removed"), "fit")
    assert gone.endswith("nothing to resume")


def test_a_search_says_the_same_command_continues_it():
    assert "running the same command again" in _interrupted_message(_interrupted(signal.SIGINT), "tune")
    assert _interrupted_message(_interrupted(signal.SIGTERM), "curvefit") == "paratrain: interrupted by SIGTERM"
