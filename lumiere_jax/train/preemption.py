"""Preemption: SIGTERM (the notice TPU VMs and Kubernetes send) asks the loop to save and exit cleanly."""

from __future__ import annotations

import logging
import signal
import threading

import jax
from jax.experimental import multihost_utils


class PreemptionWatcher:
    """The loop polls `should_stop(step)` after each step.

    One process: a Python SIGTERM handler records the signal. Several processes: all hosts must stop at the
    same step, so JAX's preemption sync point decides, and no Python handler is installed: JAX's preemption
    sync manager (started by `jax.distributed.initialize`) owns SIGTERM, and a Python handler installed after
    it replaces its handler, so that no host would ever reach the sync point.
    """

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM,)):
        self._requested = threading.Event()
        self._previous = {}
        self._multi_process = jax.process_count() > 1
        if not self._multi_process and threading.current_thread() is threading.main_thread():
            for signum in signals:
                self._previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum, frame):  # the signal handler signature
        logging.warning("received signal %d: finishing this step, saving a checkpoint, then exiting", signum)
        self._requested.set()

    def should_stop(self, step: int) -> bool:
        if self._multi_process:
            stop = multihost_utils.reached_preemption_sync_point(step)
            if stop:
                logging.warning("preemption sync point reached at step %d: saving a checkpoint, then exiting", step)
            return stop
        return self._requested.is_set()

    def close(self) -> None:
        """Restores the previous signal handlers."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
