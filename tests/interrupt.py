"""Ctrl-C latency checks shared by the tests: a call interrupted by SIGINT raises KeyboardInterrupt
within LATENCY seconds of the signal.  CCOMP_TEST_SLOWDOWN scales the bound for instrumented builds
(make asan-py sets it: AddressSanitizer runs the same loops several times slower)."""
import os
import signal
import threading
import time

import pytest

LATENCY = 1.5 * float(os.environ.get("CCOMP_TEST_SLOWDOWN", "1"))


def interrupted_after(call, after=0.5):
    """Runs call() and sends SIGINT to this process `after` seconds in; returns the seconds from the
    signal to the KeyboardInterrupt.  Fails if the call finished first (its input is too small)."""
    sent, finished = [], []

    def fire():
        sent.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Timer(after, fire)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            call()
            finished.append(time.monotonic())
            time.sleep(3)  # the signal then lands here; reported below
    finally:
        timer.cancel()
    assert not finished, "the call finished before it was interrupted: the input is too small"
    return time.monotonic() - sent[0]


def assert_interrupted(call, after=0.5):
    """interrupted_after(call) within LATENCY."""
    late = interrupted_after(call, after)
    assert late < LATENCY, f"KeyboardInterrupt came {late:.2f} s after the signal (allowed {LATENCY:.1f} s)"
    return late
