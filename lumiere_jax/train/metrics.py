"""Metric writers (TensorBoard via clu), the progress line, and achieved FLOP/s from XLA's cost analysis."""

from __future__ import annotations

import datetime
import time
from typing import Any

import jax
import numpy as np
from clu import metric_writers


def create_writer(model_dir: str) -> metric_writers.MetricWriter:
    """TensorBoard event files in MODEL_DIR (process 0 only; other hosts just log)."""
    return metric_writers.create_default_writer(model_dir, just_logging=jax.process_index() > 0, asynchronous=True)


def compiled_flops(compiled: Any) -> float | None:
    """FLOPs of one call of a compiled (per-device SPMD) program, from XLA's cost analysis; None if unknown.

    Pallas kernels are under-counted by the cost model (docs: DEPENDENCIES.md); treat the value as a floor.
    """
    try:
        analysis = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 -- some backends have no cost model
        return None
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    flops = (analysis or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


class Throughput:
    """Steps/s, examples/s, TFLOP/s per device and ETA over the steps since the last report."""

    def __init__(self, start_step: int, num_train_steps: int, global_batch_size: int,
                 flops_per_device_step: float | None):
        self.num_train_steps = num_train_steps
        self.global_batch_size = global_batch_size
        self.flops_per_device_step = flops_per_device_step
        self._last_step = start_step
        self._last_time = time.perf_counter()

    def restart(self, step: int) -> None:
        """Starts a new measurement window (after evaluation or sampling, which are not training time)."""
        self._last_step, self._last_time = step, time.perf_counter()

    def report(self, step: int) -> dict[str, float]:
        """Rates since the previous report; resets the window."""
        now = time.perf_counter()
        steps = step - self._last_step
        seconds = max(now - self._last_time, 1e-9)
        self._last_step, self._last_time = step, now
        steps_per_sec = steps / seconds
        rates = {"steps_per_sec": steps_per_sec, "examples_per_sec": steps_per_sec * self.global_batch_size}
        if self.flops_per_device_step is not None:
            rates["tflops_per_device"] = self.flops_per_device_step * steps_per_sec / 1e12
        return rates

    def progress_line(self, step: int, scalars: dict[str, float]) -> str:
        """`step 10/100 (10%) loss 0.1234 lr 1e-04 | 3.2 steps/s 25.6 ex/s | ETA 0:00:28`."""
        steps_per_sec = scalars.get("steps_per_sec", 0.0)
        remaining = (self.num_train_steps - step) / steps_per_sec if steps_per_sec > 0 else float("nan")
        eta = str(datetime.timedelta(seconds=int(remaining))) if np.isfinite(remaining) else "?"
        return (f"step {step}/{self.num_train_steps} ({100 * step / max(1, self.num_train_steps):.0f}%) "
                f"loss {scalars.get('loss', float('nan')):.4f} lr {scalars.get('learning_rate', 0.0):.2e} | "
                f"{steps_per_sec:.2f} steps/s {scalars.get('examples_per_sec', 0.0):.1f} ex/s | ETA {eta}")


def summarize(history: list[dict[str, Any]]) -> dict[str, float]:
    """Reduces per-step device metrics fetched to host (one transfer per report, not per step).

    `skipped_nonfinite` is summed, `nonfinite_streak` maximised (the longest run seen), `params_finite` taken
    from the last step; the loss and gradient norm average over finite steps only.
    """
    fetched = jax.device_get(history)
    summary = {}
    for name in fetched[0]:
        values = np.asarray([entry[name] for entry in fetched], np.float64)
        if name == "params_finite":
            summary[name] = float(values[-1])
        elif name == "skipped_nonfinite":
            summary[name] = float(values.sum())
        elif name == "nonfinite_streak":
            summary[name] = float(values.max())
        else:
            finite = values[np.isfinite(values)]
            summary[name] = float(finite.mean()) if finite.size else float("nan")
    return summary
