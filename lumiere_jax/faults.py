"""Fault injection for resumption tests: the process kills itself (SIGKILL, no clean-up) at a named point.

`LUMIERE_FAULT=<point>@<step>[@<process>]`, e.g. `async_save@8` (right after an asynchronous save of step 8
started, while Orbax writes in the background), `snapshot_commit@4` (input snapshot files uploaded, commit
marker not yet written), `step@10` (after train step 10). Unset in normal runs: then `maybe_kill` does nothing.
"""

from __future__ import annotations

import os
import signal

ENV = "LUMIERE_FAULT"
POINTS = ("step", "async_save", "snapshot_commit")


def maybe_kill(point: str, step: int | None = None, process_index: int | None = None) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    name, _, rest = spec.partition("@")
    if name not in POINTS:
        raise ValueError(f"{ENV}={spec!r}: unknown point {name!r}; choose one of {POINTS}")
    wanted_step, _, wanted_process = rest.partition("@")
    if name != point or (wanted_step and step is not None and int(wanted_step) != step):
        return
    if wanted_process and process_index is not None and int(wanted_process) != process_index:
        return
    os.kill(os.getpid(), signal.SIGKILL)
