"""A writer thread for the concurrency tests: it keeps rewriting an array that a call is reading."""
import threading

import numpy as np


class Rewriter:
    """Keeps writing `garbage` into arr until the with-block ends. garbage: a value, or a callable taking a
    NumPy Generator. restore=True writes the original back after each write and at the end (the array stays
    valid between writes)."""

    def __init__(self, arr, garbage, restore=False):
        self.arr, self.garbage, self.restore = arr, garbage, restore
        self.orig = arr.copy() if restore else None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop)
        self.writes = 0

    def _loop(self):
        rng = np.random.default_rng(0)
        while not self.stop.is_set():
            self.arr[...] = self.garbage(rng) if callable(self.garbage) else self.garbage
            if self.restore:
                self.arr[...] = self.orig
            self.writes += 1

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        if self.restore:
            self.arr[...] = self.orig
