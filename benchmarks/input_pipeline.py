"""Input-pipeline throughput (clips/s, batches/s) of the synthetic_motion tasks, host side only.

    python -m benchmarks.input_pipeline [--data_dir /tmp/lumiere_bench_tfds] [--configs tiny,small]
        [--batch_size 8] [--num_batches 50] [--global_arrays] [--train_steps 2]

Builds the requested synthetic_motion configs into `--data_dir` the first time (tiny ~10 s, small
~1 min, base several minutes on 2 CPU cores), then times `DataIterator` after one warm-up batch.
With `--global_arrays` the timing includes assembling global jax.Arrays on the local devices.
With `--train_steps N > 0` it also times N STUNet train steps of the matching model size
(benchmarks/train_step.py, same batch size) in the same process and prints the ratio of clips the pipeline
delivers to clips the step consumes per second (above 1: the input pipeline keeps up).
"""

from __future__ import annotations

import argparse
import time

import tensorflow_datasets as tfds

from lumiere_jax.data import pipeline, tasks


def measure(name: str, batch_size: int, num_batches: int, global_arrays: bool) -> tuple[float, float]:
    """Returns (clips/s, batches/s) over `num_batches` after a warm-up batch."""
    iterator = pipeline.DataIterator(pipeline.InputConfig(name, global_batch_size=batch_size))
    if global_arrays:
        from lumiere_jax.parallel import global_arrays as global_arrays_lib
        from lumiere_jax.parallel import mesh as mesh_lib
        iterator = global_arrays_lib.GlobalBatchIterator(iterator, mesh_lib.make_mesh())
    next(iterator)
    start = time.perf_counter()
    for _ in range(num_batches):
        batch = next(iterator)
    if global_arrays:
        batch["video"].block_until_ready()
    elapsed = time.perf_counter() - start
    return num_batches * batch_size / elapsed, num_batches / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default="/tmp/lumiere_bench_tfds")
    parser.add_argument("--configs", default="tiny,small")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--num_batches", type=int, default=50)
    parser.add_argument("--global_arrays", action="store_true")
    parser.add_argument("--train_steps", type=int, default=2, help="0 skips the train-step comparison")
    args = parser.parse_args()
    configs = args.configs.split(",")
    for config in configs:
        builder = tfds.builder(f"synthetic_motion/{config}", data_dir=args.data_dir)
        if not builder.is_prepared():
            start = time.perf_counter()
            builder.download_and_prepare()
            print(f"built synthetic_motion/{config} in {time.perf_counter() - start:.1f} s")
    tasks.register_synthetic_motion_tasks(args.data_dir)
    for config in configs:
        clips, batches = measure(
            f"synthetic_motion_{config}", args.batch_size, args.num_batches, args.global_arrays)
        print(f"synthetic_motion_{config}: {clips:.1f} clips/s, {batches:.2f} batches/s "
              f"(batch {args.batch_size})")
        if args.train_steps > 0:
            from benchmarks import train_step  # noqa: PLC0415 -- compiles a model; only when asked

            result = train_step.benchmark(config, "video", "float32", args.train_steps)
            consumed = result["batch"] / result["step_seconds"]
            print(f"  STUNet {config} train step (batch {result['batch']}): {consumed:.2f} clips/s consumed; "
                  f"pipeline / consumption = {clips / consumed:.1f}x")


if __name__ == "__main__":
    main()
