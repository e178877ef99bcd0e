"""Preemption: SIGTERM (the notice TPU VMs and Kubernetes send) asks the loop to save and exit cleanly."""

from __future__ import annotations

import logging
import signal
import threading

import jax
from jax.experimental import multihost_utils


class PreemptionWatcher:
    """Records termination signals; the loop polls `should_stop(step)` after each step.

    On a multi-host job all hosts must stop at the same step, so JAX's preemption sync point (set up by
    `jax.distributed.initialize`) is consulted as well.
    """

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM,)):
        self._requested = threading.Event()
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            for signum in signals:
                self._previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum, frame):  # noqa: ARG002 -- signal handler signature
        logging.warning("received signal %d: finishing this step, saving a checkpoint, then exiting", signum)
        self._requested.set()

    def should_stop(self, step: int) -> bool:
        if jax.process_count() > 1:
            # Every host must agree on the step; a local flag alone could stop one host and hang the others.
            try:
                return multihost_utils.reached_preemption_sync_point(step)
            except RuntimeError:  # no preemption sync manager (non-TPU multi-process): local signal only
                pass
        return self._requested.is_set()

    def close(self) -> None:
        """Restores the previous signal handlers."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
