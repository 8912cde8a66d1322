"""SIGINT and SIGTERM raise one exception, held back while a checkpoint and its metrics line are written."""

from __future__ import annotations

import os
import signal

import pytest

from paratrain.train import interrupts


@pytest.fixture
def handled():
    with interrupts.handled():
        yield


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_raises_interrupted_with_its_number(handled, signum):
    with pytest.raises(interrupts.Interrupted) as caught:
        os.kill(os.getpid(), signum)
        for _ in range(1000):  # the handler runs at the next bytecode
            pass
    assert caught.value.signum == signum
    assert interrupts.exit_status(caught.value) == 128 + signum
    assert isinstance(caught.value, KeyboardInterrupt)  # code that stops on Ctrl-C stops on SIGTERM too


def test_a_signal_inside_a_deferred_block_is_raised_at_its_end(handled):
    done = []
    with pytest.raises(interrupts.Interrupted) as caught:
        with interrupts.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):
                pass
            done.append("checkpoint")
            done.append("metrics")
    assert done == ["checkpoint", "metrics"]
    assert caught.value.signum == signal.SIGTERM


def test_a_failure_inside_a_deferred_block_after_a_signal_reports_the_signal(handled):
    with pytest.raises(interrupts.Interrupted) as caught:
        with interrupts.deferred():
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass
            raise RuntimeError("a peer closed the connection")
    assert isinstance(caught.value.__cause__, RuntimeError)


def test_only_the_first_signal_raises(handled):
    with pytest.raises(interrupts.Interrupted):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):
            pass
    os.kill(os.getpid(), signal.SIGTERM)  # a second one must not break the clean-up of the first
    for _ in range(1000):
        pass


def test_handlers_are_put_back_and_a_programs_own_are_kept():
    before = signal.getsignal(signal.SIGTERM)
    with interrupts.handled():
        assert signal.getsignal(signal.SIGTERM) is interrupts.raise_interrupted
    assert signal.getsignal(signal.SIGTERM) == before

    def own(signum, frame):
        pass

    signal.signal(signal.SIGTERM, own)
    try:
        with interrupts.handled():
            assert signal.getsignal(signal.SIGTERM) is own
    finally:
        signal.signal(signal.SIGTERM, before)
