"""Sampling cost on the job's own path: clips/s and seconds per denoiser step per solver, with and without
classifier-free guidance and the SSR stage; MultiDiffusion's share of an SSR call; and the compile time of a
repeated sampling job with the persistent compilation cache.

Modes (`--mode`, comma separated):
  throughput     `sample/job.py::_generate` (base.generate_base, then ssr.upsample_ssr) jitted as the job
                 jits it, on random parameters (speed does not depend on them), for each solver x guidance x
                 SSR; best of the timed batches after the first (compiling) call. Without guidance is the same
                 function with the unconditional half left out (what a weight of 1 could cost): the job itself
                 always runs both halves, since its weights are per-row arrays.
  multidiffusion one fused SSR denoising call (crop windows, model on all windows, fuse) against the model on
                 the windows alone and against `fuse_windows` alone.
  compile_cache  the sampling CLI (`python -m lumiere_jax.sample`, the demo's tiny pipeline) twice in fresh
                 processes on one fresh `--compilation_cache_dir`: wall time, job time and first batch of each.

    python -m benchmarks.sampling                                   # tiny: throughput and multidiffusion
    python -m benchmarks.sampling --sizes small --samplers ddim --guidance on --ssr off --steps 1
    python -m benchmarks.sampling --mode compile_cache
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import glob
import json
import os
import subprocess
import tempfile
import time
from unittest import mock

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.matmul_peak import peak_flops_per_second, time_best
from lumiere_jax import demo
from lumiere_jax.data import synthetic_render
from lumiere_jax.data import vocab
from lumiere_jax.diffusion import guidance
from lumiere_jax.diffusion import multidiffusion
from lumiere_jax.diffusion import parameterization
from lumiere_jax.diffusion import samplers
from lumiere_jax.diffusion import schedules
from lumiere_jax.models import t5
from lumiere_jax.parallel import runtime
from lumiere_jax.sample import applications
from lumiere_jax.sample import job
from lumiere_jax.sample import rows as rows_lib
from lumiere_jax.stages import adapter as adapter_lib
from lumiere_jax.stages import factory as stages
from lumiere_jax.train import checkpoints as checkpoints_lib
from lumiere_jax.train import state as state_lib

MODES = ("throughput", "multidiffusion", "compile_cache")
TEXT_LENGTH = 80  # byte tokens, as sample/cpu_tiny.gin
# The demo's tiny pipeline: base STUNet 8 x 32x32, SSR 32 -> 64 on windows of 4 (lumiere_jax/demo.py). The
# small preset's SSR already reads the base's 64x64 frames.
SSR_OVERRIDES = {"tiny": {"image_size": 64, "low_res_size": 32}, "small": {}}


@dataclasses.dataclass(frozen=True)
class Pipeline:
    """Base and SSR adapters of a preset size with random weights, and their diffusion schedules."""

    base: adapter_lib.ModelAdapter
    ssr: adapter_lib.ModelAdapter
    base_params: object
    ssr_params: object
    text_params: object
    schedule: schedules.Schedule
    ssr_schedule: schedules.Schedule


def pipeline_adapters(size: str, dtype: str = "float32") -> tuple:
    """(base STUNet, SSR) adapters of `size` with the tiny random T5 (the CPU sampling config's encoder).

    The small preset reads 512-wide text tokens; this tree has no 512-wide encoder preset, so its U-Nets read
    the tiny T5's 32-wide tokens instead (the cross-attention key/value projections of 80 tokens: negligible).
    """
    text_width = t5.get_config("tiny").d_model
    adapters = []
    for stage, overrides in (("stunet", {}), ("ssr", SSR_OVERRIDES[size])):
        adapters.append(stages.unet_adapter(stage=stage, size=size, text_encoder_preset="tiny",
                                            text_length=TEXT_LENGTH, dtype=dtype,
                                            overrides={"text_embed_dim": text_width, **overrides}))
    return tuple(adapters)


def random_like(abstract, seed: int, scale: float = 0.02):
    """NumPy normal draws of an abstract tree (XLA:CPU takes minutes to compile a U-Net's real init)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda leaf: jnp.asarray(scale * rng.standard_normal(leaf.shape), leaf.dtype), abstract)


def adapter_params(adapter, seed: int):
    return random_like(jax.eval_shape(lambda rng: nn.unbox(adapter.init(rng)), jax.random.key(0)), seed)


def make_pipeline(size: str, dtype: str) -> Pipeline:
    base, ssr = pipeline_adapters(size, dtype)
    text_params = random_like(jax.eval_shape(base.text_encoder.init, jax.random.key(0)), 2, scale=0.5)
    return Pipeline(base, ssr, adapter_params(base, 0), adapter_params(ssr, 1), text_params,
                    schedules.get_schedule("cosine"),
                    schedules.get_schedule("shifted_cosine", **stages.sr_schedule_kwargs(ssr)))


def synthetic_prompts(count: int, seed: int = 0) -> list[str]:
    """Captions of `count` random synthetic_motion scenes."""
    rng = np.random.default_rng(seed)
    return [synthetic_render.caption(synthetic_render.sample_scene(rng, 2, 32, 32)) for _ in range(count)]


def job_batch(pipeline: Pipeline, config: applications.SamplingConfig, batch_size: int) -> dict:
    """The device batch the job builds for `batch_size` text-to-video rows (row keys, guidance, prompts)."""
    rows = [rows_lib.Row(index=index, prompt=prompt, id=f"{index:06d}")
            for index, prompt in enumerate(synthetic_prompts(batch_size))]
    vocabulary = vocab.get_vocabulary(None)
    host = job._stack([job.row_inputs(row, pipeline.base, config, 0) for row in rows])
    host.update(job._text_arrays(rows, pipeline.base, vocabulary, config, ""))
    host.update(job._text_arrays(rows, pipeline.ssr, vocabulary, config, "ssr_"))
    return jax.device_put(host)


def _conditional_only(self, model_fn, shared, parameterization_name, rank):
    """`TextGuidance.denoiser` without the unconditional half (guidance weight 1 as a Python number)."""
    del rank
    cond = {"text_embeddings": self.embeddings, "text_mask": self.mask, **shared}
    return guidance.guided_denoiser(model_fn, cond, cond, 1.0, parameterization_name, threshold_percentile=None)


def job_function(pipeline: Pipeline, config: applications.SamplingConfig, guided: bool, ssr: bool):
    """The job's sampler (`job._generate`) jitted for one setting; unguided: conditional half only."""
    settings = applications.StaticSettings(config.num_steps, 1.0, config.sampler, None)
    generate = functools.partial(job._generate, base_adapter=pipeline.base, ssr_adapter=pipeline.ssr if ssr else None,
                                 schedule=pipeline.schedule, ssr_schedule=pipeline.ssr_schedule, config=config,
                                 settings=settings)

    def function(*args):
        if guided:
            return generate(*args)
        with mock.patch.object(applications.TextGuidance, "denoiser", _conditional_only):  # while tracing
            return generate(*args)

    return jax.jit(function)


def timed_calls(function, *args, repeats: int) -> tuple[float, float]:
    """(first call incl. compile, best of `repeats` further calls) in seconds."""
    start = time.perf_counter()
    jax.block_until_ready(function(*args))
    first = time.perf_counter() - start
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(function(*args))
        best = min(best, time.perf_counter() - start)
    return first, best


def throughput(size: str, solvers: list[str], guided_options: list[bool], ssr_options: list[bool], batch_size: int,
               steps: int, ssr_steps: int, repeats: int, dtype: str) -> list[dict]:
    """One record per solver x guidance x SSR: first call, best batch, clips/s, seconds per denoiser step, and
    the float32 matmul rate measured just before (the machine may be shared: compare rows at equal rates).

    With SSR, the SSR stage's time is the whole call less the base-only call of the same solver and guidance
    (measured in this process just before), divided by its steps.
    """
    pipeline = make_pipeline(size, dtype)
    records = []
    for sampler in solvers:
        for guided in guided_options:
            config = applications.SamplingConfig(num_steps=steps, ssr_num_steps=ssr_steps, sampler=sampler)
            batch = job_batch(pipeline, config, batch_size)
            args = (pipeline.base_params, pipeline.text_params, pipeline.ssr_params, pipeline.text_params, batch)
            base_seconds = None
            for ssr in sorted(ssr_options):
                matmul = peak_flops_per_second(repeats=3)
                first, best = timed_calls(job_function(pipeline, config, guided, ssr), *args, repeats=repeats)
                record = dict(size=size, sampler=sampler, guided=guided, ssr=ssr, batch=batch_size, steps=steps,
                              ssr_steps=ssr_steps if ssr else 0, first_seconds=first, batch_seconds=best,
                              clips_per_second=batch_size / best, matmul_gflops=matmul / 1e9,
                              load_average=os.getloadavg()[0])
                if not ssr:
                    base_seconds = best
                    record["base_step_seconds"] = best / steps
                elif base_seconds is not None:
                    record["ssr_step_seconds"] = (best - base_seconds) / ssr_steps
                records.append(record)
                print(json.dumps(record), flush=True)
    return records


def throughput_table(records: list[dict]) -> str:
    lines = [("| size | solver | guidance | SSR | s / batch | clips/s | s / base step | s / SSR step | first call | "
              "matmul before |"), "|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        base_step = f"{r['base_step_seconds']:.3f}" if "base_step_seconds" in r else ""
        ssr_step = f"{r['ssr_step_seconds']:.3f}" if "ssr_step_seconds" in r else ""
        lines.append(f"| {r['size']} | {r['sampler']} | {'on' if r['guided'] else 'off'} | "
                     f"{'on' if r['ssr'] else 'off'} | {r['batch_seconds']:.2f} | {r['clips_per_second']:.3f} | "
                     f"{base_step} | {ssr_step} | {r['first_seconds']:.1f} s | {r['matmul_gflops']:.0f} GFLOP/s |")
    return "\n".join(lines)


def multidiffusion_share(size: str, frames: int, repeats: int, dtype: str) -> dict:
    """Timings of one fused SSR denoising call on a clip of `frames`, split into model and crop + fuse."""
    pipeline = make_pipeline(size, dtype)
    adapter = pipeline.ssr
    window = adapter.sample_shape[0]
    stride = max(window // 2, 1)  # the job's default
    starts = multidiffusion.window_starts(frames, window, stride)
    height, width = adapter.sample_shape[1:3]
    embeddings = jax.random.normal(jax.random.key(1), (len(starts), TEXT_LENGTH, adapter.text_encoder.config.d_model))
    mask = jnp.ones((len(starts), TEXT_LENGTH), bool)
    aug_logsnr = jnp.full((len(starts),), 3.0)

    def windowed_denoise(params, z_windows, logsnr_windows, low_res_windows):
        inputs = adapter_lib.ModelInputs(x0=z_windows, low_res=low_res_windows)
        prediction = adapter.apply(params, z_windows, logsnr_windows, inputs, embeddings, mask, aug_logsnr,
                                   train=False)
        return parameterization.to_x0(prediction, z_windows, logsnr_windows, adapter.parameterization)

    # low_res is an argument everywhere (a closed-over constant would let XLA fold its upsampling away).
    @jax.jit
    def fused_call(params, z, logsnr, low_res):
        denoise_fn = multidiffusion.multidiffusion_denoiser(functools.partial(windowed_denoise, params), starts,
                                                            window, frame_condition=low_res)
        return denoise_fn(z, logsnr)

    z = jax.random.normal(jax.random.key(4), (1, frames, height, width, 3))
    low_res = jax.random.uniform(jax.random.key(3), (1, frames, adapter.low_res_size, adapter.low_res_size, 3),
                                 minval=-1.0, maxval=1.0)
    logsnr = jnp.zeros((1,))
    z_windows = multidiffusion.crop_windows(z, starts, window)
    low_res_windows = multidiffusion.crop_windows(low_res, starts, window)
    logsnr_windows = multidiffusion.repeat_for_windows(logsnr, len(starts))
    model_only = jax.jit(windowed_denoise)
    fuse_only = jax.jit(lambda preds: multidiffusion.fuse_windows(preds, starts, frames))
    return dict(size=size, frames=frames, windows=len(starts), window=window, stride=stride,
                fused_call_seconds=timed_calls(fused_call, pipeline.ssr_params, z, logsnr, low_res,
                                               repeats=repeats)[1],
                model_call_seconds=timed_calls(model_only, pipeline.ssr_params, z_windows, logsnr_windows,
                                               low_res_windows, repeats=repeats)[1],
                fuse_seconds=time_best(fuse_only, model_only(pipeline.ssr_params, z_windows, logsnr_windows,
                                                             low_res_windows), repeats=5))


def write_random_checkpoint(model_dir: str, adapter, seed: int) -> None:
    """A training checkpoint of random weights (every parameter trainable) as the trainer writes it."""
    params = adapter_params(adapter, seed)
    state = state_lib.create_train_state(params, {}, optax.sgd(0.1), use_ema=True)
    checkpointer = checkpoints_lib.Checkpointer(model_dir, checkpoints_lib.CheckpointConfig(async_save=False),
                                                adapter.name, checkpoints_lib.model_signature(params))
    checkpointer.save(1, state, {"index": 0}, params_finite=True)
    checkpointer.close()


def _read_json(path: str) -> dict:
    with open(path) as file:
        return json.load(file)


def run_sampling_job(command: list[str], output_dir: str) -> dict:
    """Runs one sampling CLI process; returns its wall time, the job's own time and its batches' times."""
    start = time.perf_counter()
    completed = subprocess.run(command, check=False, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if completed.returncode:
        raise RuntimeError(f"sampling job failed ({completed.returncode}):\n{completed.stderr[-3000:]}")
    summary = _read_json(glob.glob(os.path.join(output_dir, "summary-*.json"))[0])
    batches = {}
    for path in glob.glob(os.path.join(output_dir, "*.json")):
        sidecar = _read_json(path)
        if "timings" in sidecar:
            timings = sidecar["timings"]
            batches[(sidecar["index"] // timings["batch_size"])] = dict(
                seconds=timings["batch_seconds"], first=timings["first_batch_of_run"])
    ordered = [batches[index] for index in sorted(batches)]
    first_batch = next(b["seconds"] for b in ordered if b["first"])
    later = [b["seconds"] for b in ordered if not b["first"]]
    return dict(wall_seconds=wall, job_seconds=summary["seconds"], generated=summary["generated"],
                first_batch_seconds=first_batch, later_batch_seconds=later,
                first_batch_overhead=first_batch - min(later) if later else None)


def compile_cache(work_dir: str, num_rows: int, batch_size: int, base_checkpoint: str | None,
                  ssr_checkpoint: str | None, use_ssr: bool) -> dict:
    """The demo's sampling command twice, in fresh processes on one fresh compilation cache."""
    if not base_checkpoint:
        base, ssr = pipeline_adapters("tiny")
        base_checkpoint, ssr_checkpoint = os.path.join(work_dir, "base"), os.path.join(work_dir, "ssr")
        write_random_checkpoint(base_checkpoint, base, 0)
        write_random_checkpoint(ssr_checkpoint, ssr, 1)
    prompts = os.path.join(work_dir, "prompts.jsonl")
    with open(prompts, "w") as file:
        file.writelines(json.dumps({"id": f"row{index}", "prompt": prompt}) + "\n"
                        for index, prompt in enumerate(synthetic_prompts(num_rows)))
    cache_dir = os.path.join(work_dir, "xla_cache")
    runs = []
    for attempt in ("first", "second"):
        output_dir = os.path.join(work_dir, f"videos_{attempt}")
        command = demo.sample_command(prompts, output_dir, "stunet", base_checkpoint, ssr_checkpoint,
                                      demo.FULL, use_ssr=use_ssr)
        command += [f"--gin.sample_videos.batch_size={batch_size}", "--gin.OutputConfig.write_gif=False",
                    f"--compilation_cache_dir={cache_dir}"]
        runs.append(run_sampling_job(command, output_dir))
        runs[-1]["cache_files"] = len(os.listdir(cache_dir))
        print(json.dumps({attempt: runs[-1]}), flush=True)
    return dict(first=runs[0], second=runs[1], use_ssr=use_ssr, rows=num_rows, batch_size=batch_size,
                base_steps=demo.FULL.base_sampling, ssr_steps=demo.FULL.ssr_sampling,
                wall_ratio=runs[0]["wall_seconds"] / runs[1]["wall_seconds"],
                first_batch_ratio=runs[0]["first_batch_seconds"] / runs[1]["first_batch_seconds"])


def main() -> None:
    runtime.configure_cpu_flags()  # the sampling job's XLA:CPU flags (before XLA starts)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", default="throughput,multidiffusion", help=f"comma separated, of {MODES}")
    parser.add_argument("--sizes", default="tiny")
    parser.add_argument("--samplers", default=",".join(samplers.SAMPLERS))
    parser.add_argument("--guidance", default="off,on", help="classifier-free guidance: off, on or both")
    parser.add_argument("--ssr", default="off,on",
                        help="the SSR stage after the base: off, on or both (compile_cache: with SSR if on is listed)")
    parser.add_argument("--batch", type=int, default=2, help="clips per batch")
    parser.add_argument("--steps", type=int, default=8, help="base sampler steps (sample/cpu_tiny.gin: 8)")
    parser.add_argument("--ssr_steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2, help="timed calls after the first (best taken)")
    parser.add_argument("--dtype", default="float32", help="compute dtype (CPUs have no fast bfloat16)")
    parser.add_argument("--md_frames", type=int, default=8, help="clip length of the MultiDiffusion share")
    parser.add_argument("--rows", type=int, default=4,
                        help="compile_cache: rows of the prompt file (two batches or more show the compile share)")
    parser.add_argument("--job_batch", type=int, default=2, help="compile_cache: the job's batch size")
    parser.add_argument("--base_checkpoint", default=None,
                        help="compile_cache: e.g. the demo's runs/stunet (default: random tiny weights)")
    parser.add_argument("--ssr_checkpoint", default=None)
    parser.add_argument("--json", default=None, help="write every record to this file")
    args = parser.parse_args()
    modes = args.mode.split(",")
    unknown = set(modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}; choose from {MODES}")
    on_off = {"on": True, "off": False}
    print(f"device: {jax.devices()[0].device_kind}, {jax.device_count()} device(s); dtype {args.dtype}; "
          f"float32 matmul {peak_flops_per_second() / 1e9:.1f} GFLOP/s; load average {os.getloadavg()[0]:.2f}",
          flush=True)
    results = {}
    if "throughput" in modes:
        records = []
        for size in args.sizes.split(","):
            records += throughput(size, args.samplers.split(","), [on_off[v] for v in args.guidance.split(",")],
                                  [on_off[v] for v in args.ssr.split(",")], args.batch, args.steps, args.ssr_steps,
                                  args.repeats, args.dtype)
        print(throughput_table(records), flush=True)
        results["throughput"] = records
    if "multidiffusion" in modes:
        results["multidiffusion"] = []
        for size in args.sizes.split(","):
            share = multidiffusion_share(size, args.md_frames, 2 * args.repeats, args.dtype)
            overhead = share["fused_call_seconds"] - share["model_call_seconds"]
            print(f"{size:5s} SSR fused call on {share['frames']} frames in {share['windows']} windows of "
                  f"{share['window']} (stride {share['stride']}): {share['fused_call_seconds'] * 1e3:.1f} ms = model "
                  f"on windows {share['model_call_seconds'] * 1e3:.1f} ms + crop/fuse {overhead * 1e3:.1f} ms "
                  f"({overhead / share['fused_call_seconds']:.1%}); fuse_windows alone "
                  f"{share['fuse_seconds'] * 1e3:.2f} ms ({share['fuse_seconds'] / share['fused_call_seconds']:.2%})",
                  flush=True)
            results["multidiffusion"].append(share)
    if "compile_cache" in modes:
        with tempfile.TemporaryDirectory(prefix="lumiere_compile_cache_") as work_dir:
            result = compile_cache(work_dir, args.rows, args.job_batch, args.base_checkpoint, args.ssr_checkpoint,
                                   use_ssr="on" in args.ssr.split(","))
        first, second = result["first"], result["second"]
        print(f"process wall time {first['wall_seconds']:.1f} s -> {second['wall_seconds']:.1f} s "
              f"({result['wall_ratio']:.2f}x); job {first['job_seconds']:.1f} s -> {second['job_seconds']:.1f} s; "
              f"first batch {first['first_batch_seconds']:.1f} s -> {second['first_batch_seconds']:.1f} s "
              f"({result['first_batch_ratio']:.2f}x); first batch less a later one (trace + compile) "
              f"{first['first_batch_overhead']:.1f} s -> {second['first_batch_overhead']:.1f} s", flush=True)
        results["compile_cache"] = result
    print(f"float32 matmul at the end {peak_flops_per_second() / 1e9:.1f} GFLOP/s; load average "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    if args.json:
        with open(args.json, "w") as file:
            json.dump(results, file, indent=2)


if __name__ == "__main__":
    main()
