"""Metric writers (TensorBoard via clu), the progress line, and achieved FLOP/s from XLA's cost analysis."""

from __future__ import annotations

import datetime
import os
import tempfile
import time
from typing import Any

import jax
import numpy as np
from clu import metric_writers

from lumiere_jax import storage


def create_writer(model_dir: str) -> metric_writers.MetricWriter:
    """TensorBoard event files in MODEL_DIR (process 0 only; other hosts just log).

    TensorFlow writes event files itself; for an object-store MODEL_DIR they are written to a local folder and
    uploaded through the storage layer on every flush and at least once a minute.
    """
    just_logging = jax.process_index() > 0
    if just_logging or not storage.is_uri(model_dir):
        return metric_writers.create_default_writer(model_dir, just_logging=just_logging, asynchronous=True)
    return _UploadingWriter(model_dir)


class _UploadingWriter(metric_writers.MetricWriter):
    """A TensorBoard writer on a local staging folder whose event files are mirrored to an object store."""

    def __init__(self, destination: str, upload_every_seconds: float = 60.0):
        self._staging = tempfile.TemporaryDirectory(prefix="lumiere_tensorboard_")
        self._writer = metric_writers.create_default_writer(self._staging.name, asynchronous=True)
        self._destination, self._every = destination, upload_every_seconds
        self._last_upload = time.monotonic()

    def _maybe_upload(self) -> None:
        if time.monotonic() - self._last_upload >= self._every:
            self.flush()

    def write_summaries(self, step, values, metadata=None):
        self._writer.write_summaries(step, values, metadata)
        self._maybe_upload()

    def write_scalars(self, step, scalars):
        self._writer.write_scalars(step, scalars)
        self._maybe_upload()

    def write_images(self, step, images):
        self._writer.write_images(step, images)

    def write_videos(self, step, videos):
        self._writer.write_videos(step, videos)

    def write_audios(self, step, audios, *, sample_rate):
        self._writer.write_audios(step, audios, sample_rate=sample_rate)

    def write_texts(self, step, texts):
        self._writer.write_texts(step, texts)

    def write_histograms(self, step, arrays, num_buckets=None):
        self._writer.write_histograms(step, arrays, num_buckets)

    def write_hparams(self, hparams):
        self._writer.write_hparams(hparams)

    def flush(self):
        self._writer.flush()
        for name in sorted(os.listdir(self._staging.name)):
            storage.sync_file(os.path.join(self._staging.name, name), storage.join(self._destination, name))
        self._last_upload = time.monotonic()

    def close(self):
        self.flush()
        self._writer.close()
        self._staging.cleanup()


def compiled_flops(compiled: Any) -> float | None:
    """FLOPs of one call of a compiled (per-device SPMD) program, from XLA's cost analysis; None if unknown.

    Pallas kernels are under-counted by XLA's cost model (seen with flash/splash attention: backward missing,
    splash near zero): treat the value as a floor.
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
    """Steps/s, examples/s, TFLOP/s per device (XLA's count), MFU and ETA over the steps since the last report.

    MFU = analytic model FLOPs per device and step x steps/s / peak FLOP/s (train/estimate.py).
    """

    def __init__(self, start_step: int, num_train_steps: int, global_batch_size: int,
                 flops_per_device_step: float | None, model_flops_per_device_step: float | None = None,
                 peak_flops: float | None = None):
        self.num_train_steps = num_train_steps
        self.global_batch_size = global_batch_size
        self.flops_per_device_step = flops_per_device_step
        self.model_flops_per_device_step = model_flops_per_device_step
        self.peak_flops = peak_flops
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
        if self.model_flops_per_device_step and self.peak_flops:
            rates["model_tflops_per_device"] = self.model_flops_per_device_step * steps_per_sec / 1e12
            rates["mfu"] = self.model_flops_per_device_step * steps_per_sec / self.peak_flops
        return rates

    def progress_line(self, step: int, scalars: dict[str, float]) -> str:
        """`step 10/100 (10%) loss 0.1234 lr 1e-04 | 3.2 steps/s 25.6 ex/s | MFU 0.412 (XLA 190.3 TFLOP/s/device)
        | ETA 0:00:28`."""
        steps_per_sec = scalars.get("steps_per_sec", 0.0)
        remaining = (self.num_train_steps - step) / steps_per_sec if steps_per_sec > 0 else float("nan")
        eta = str(datetime.timedelta(seconds=int(remaining))) if np.isfinite(remaining) else "?"
        return (f"step {step}/{self.num_train_steps} ({100 * step / max(1, self.num_train_steps):.0f}%) "
                f"loss {scalars.get('loss', float('nan')):.4f} lr {scalars.get('learning_rate', 0.0):.2e} | "
                f"{steps_per_sec:.2f} steps/s {scalars.get('examples_per_sec', 0.0):.1f} ex/s | "
                + (f"MFU {scalars['mfu']:.3f} " if "mfu" in scalars else "")
                + (f"(XLA {scalars['tflops_per_device']:.2f} TFLOP/s/device) " if "tflops_per_device" in scalars
                   else "")
                + f"| ETA {eta}")


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
