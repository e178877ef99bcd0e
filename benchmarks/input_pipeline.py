"""Input-pipeline throughput (clips/s, batches/s) of the synthetic_motion tasks, host side only.

    python -m benchmarks.input_pipeline [--data_dir /tmp/lumiere_bench_tfds] [--configs tiny,small]
        [--batch_size 8] [--num_batches 50] [--global_arrays] [--train_steps 2] [--resume_at 2000]

Builds the requested synthetic_motion configs into `--data_dir` the first time (tiny ~10 s, small
~1 min, base several minutes on 2 CPU cores), then times `DataIterator` after one warm-up batch.
With `--global_arrays` the timing includes assembling global jax.Arrays on the local devices.
With `--train_steps N > 0` it also times N STUNet train steps of the matching model size
(benchmarks/train_step.py, same batch size) in the same process and prints the ratio of clips the pipeline
delivers to clips the step consumes per second (above 1: the input pipeline keeps up).
With `--resume_at N > 0` it times resuming at step N instead: seconds to the first batch by skipping N
batches and from the snapshot an uninterrupted run wrote at step N (data/pipeline.py), and the snapshot's size.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import tensorflow_datasets as tfds

from lumiere_jax.data import pipeline, tasks
from lumiere_jax.parallel import global_arrays as global_arrays_lib
from lumiere_jax.parallel import mesh as mesh_lib


def measure(name: str, batch_size: int, num_batches: int, global_arrays: bool) -> tuple[float, float]:
    """Returns (clips/s, batches/s) over `num_batches` after a warm-up batch."""
    iterator = pipeline.DataIterator(pipeline.InputConfig(name, global_batch_size=batch_size))
    if global_arrays:
        iterator = global_arrays_lib.GlobalBatchIterator(iterator, mesh_lib.make_mesh())
    next(iterator)
    start = time.perf_counter()
    for _ in range(num_batches):
        batch = next(iterator)
    if global_arrays:
        batch["video"].block_until_ready()
    elapsed = time.perf_counter() - start
    return num_batches * batch_size / elapsed, num_batches / elapsed


def _first_batch_seconds(iterator) -> float:
    start = time.perf_counter()
    next(iterator)
    return time.perf_counter() - start


def measure_resume(name: str, batch_size: int, resume_at: int) -> dict[str, float]:
    """Resuming at step `resume_at`: seconds to the first batch by skipping and from a snapshot.

    The snapshot comes from an uninterrupted run to `resume_at` (also timed), as a training run writes it.
    """
    config = pipeline.InputConfig(name, global_batch_size=batch_size)
    run = pipeline.DataIterator(config)
    start = time.perf_counter()
    for _ in range(resume_at):
        next(run)
    run_seconds = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as directory:
        start = time.perf_counter()
        path = run.save_snapshot(directory)
        save_seconds = time.perf_counter() - start
        size = sum(os.path.getsize(os.path.join(path, file)) for file in os.listdir(path))
        skip_seconds = _first_batch_seconds(pipeline.DataIterator(config, start_step=resume_at))
        resumed = pipeline.DataIterator(config)
        start = time.perf_counter()
        resumed.set_state(run.get_state(), directory)
        snapshot_seconds = time.perf_counter() - start + _first_batch_seconds(resumed)
    return {"run": run_seconds, "save": save_seconds, "bytes": size, "skip": skip_seconds,
            "snapshot": snapshot_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default="/tmp/lumiere_bench_tfds")
    parser.add_argument("--configs", default="tiny,small")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--num_batches", type=int, default=50)
    parser.add_argument("--global_arrays", action="store_true")
    parser.add_argument("--train_steps", type=int, default=2, help="0 skips the train-step comparison")
    parser.add_argument("--resume_at", type=int, default=0, help="N > 0: time resuming at step N instead")
    args = parser.parse_args()
    configs = args.configs.split(",")
    for config in configs:
        builder = tfds.builder(f"synthetic_motion/{config}", data_dir=args.data_dir)
        if not builder.is_prepared():
            start = time.perf_counter()
            builder.download_and_prepare()
            print(f"built synthetic_motion/{config} in {time.perf_counter() - start:.1f} s")
    tasks.register_synthetic_motion_tasks(args.data_dir)
    if args.resume_at > 0:
        for config in configs:
            times = measure_resume(f"synthetic_motion_{config}", args.batch_size, args.resume_at)
            print(f"synthetic_motion_{config}: resuming at step {args.resume_at} (batch {args.batch_size}): first "
                  f"batch after {times['skip']:.2f} s by skipping, {times['snapshot']:.2f} s from a snapshot "
                  f"({times['bytes'] / 2**10:.0f} KiB, written in {times['save']:.2f} s; the uninterrupted run to "
                  f"step {args.resume_at} took {times['run']:.1f} s)")
        return
    for config in configs:
        clips, batches = measure(
            f"synthetic_motion_{config}", args.batch_size, args.num_batches, args.global_arrays)
        print(f"synthetic_motion_{config}: {clips:.1f} clips/s, {batches:.2f} batches/s "
              f"(batch {args.batch_size})")
        if args.train_steps > 0:
            from benchmarks import train_step  # noqa: PLC0415 -- compiles a model; only when asked

            result = train_step.benchmark(config, "stunet", "float32", args.train_steps)
            consumed = result["batch"] / result["step_seconds"]
            print(f"  STUNet {config} train step (batch {result['batch']}): {consumed:.2f} clips/s consumed; "
                  f"pipeline / consumption = {clips / consumed:.1f}x")


if __name__ == "__main__":
    main()
