"""Sampling time per clip: base STUNet (DDIM, N steps) and SSR with MultiDiffusion, and the fusion's share.

Parameters are freshly initialised (speed does not depend on their values); no classifier-free guidance
(guidance doubles the model batch). The MultiDiffusion share compares, for one SSR denoising call on a clip,
the whole fused call (crop windows, model on all windows, fuse) against the model call on the windows alone
and against `fuse_windows` alone.

    python -m benchmarks.sampling                       # tiny and small
    python -m benchmarks.sampling --sizes tiny --steps 16
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import time

import jax
import jax.numpy as jnp

from benchmarks import minimal_step
from benchmarks.matmul_peak import time_best
from lumiere_jax.diffusion import multidiffusion, parameterization, samplers, schedules
from lumiere_jax.models import config as config_lib
from lumiere_jax.models import unet as unet_lib

# SSR clip length and window stride per preset (window length T' comes from the SSR config).
SSR_CLIPS = {"tiny": dict(frames=8, stride=2), "small": dict(frames=16, stride=4)}


def _text(config: config_lib.UNetConfig, batch: int) -> tuple[jax.Array, jax.Array]:
    embeddings = jax.random.normal(jax.random.key(1), (batch, config.text_length, config.text_embed_dim))
    return embeddings, jnp.ones((batch, config.text_length), bool)


def _timed_call(fn, *args, repeats: int) -> tuple[float, float]:
    """(first call incl. compile, best of `repeats` later calls) in seconds."""
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - start
    return first, time_best(fn, *args, repeats=repeats)


def base_sampling(size: str, steps: int, dtype: str, repeats: int) -> dict:
    """Seconds to sample one STUNet clip with `steps` DDIM steps."""
    config = dataclasses.replace(config_lib.stunet_config(size), dtype=dtype)
    params = minimal_step.random_params(config)
    embeddings, mask = _text(config, 1)
    schedule = schedules.get_schedule("cosine")
    shape = (1, config.temporal.num_frames, config.image_size, config.image_size, 3)

    @jax.jit
    def sample(params, rng):
        def denoise_fn(z, logsnr):
            prediction = unet_lib.UNet(config).apply({"params": params}, z, logsnr, embeddings, mask)
            return parameterization.to_x0(prediction, z, logsnr, "v")
        init_rng, sample_rng = jax.random.split(rng)
        return samplers.sample(denoise_fn, sample_rng, jax.random.normal(init_rng, shape), schedule, steps)

    first, best = _timed_call(sample, params, jax.random.key(2), repeats=repeats)
    return dict(shape=shape, steps=steps, first_seconds=first, clip_seconds=best)


def ssr_sampling(size: str, steps: int, dtype: str, repeats: int) -> dict:
    """Seconds per SSR clip with MultiDiffusion, and the timings of one fused call split into model and fusion."""
    config = dataclasses.replace(config_lib.ssr_config(size), dtype=dtype)
    params = minimal_step.random_params(config)
    frames, stride = SSR_CLIPS[size]["frames"], SSR_CLIPS[size]["stride"]
    window = config.temporal.num_frames
    starts = multidiffusion.window_starts(frames, window, stride)
    embeddings, mask = _text(config, len(starts))
    schedule = schedules.get_schedule("cosine")
    shape = (1, frames, config.image_size, config.image_size, 3)
    low_res = jax.random.uniform(jax.random.key(3), (1, frames, config.low_res_size, config.low_res_size, 3),
                                 minval=-1.0, maxval=1.0)
    aug_logsnr = jnp.full((len(starts),), 3.0)

    def windowed_denoise(params, z_windows, logsnr_windows, low_res_windows):
        prediction = unet_lib.UNet(config).apply({"params": params}, z_windows, logsnr_windows, embeddings, mask,
                                                 low_res=low_res_windows, noise_aug_logsnr=aug_logsnr)
        return parameterization.to_x0(prediction, z_windows, logsnr_windows, "v")

    # low_res is an argument everywhere (a closed-over constant would let XLA fold its upsampling away).
    @jax.jit
    def sample(params, rng, low_res):
        return multidiffusion.multidiffusion_sample(functools.partial(windowed_denoise, params), rng, shape,
                                                    schedule, steps, window, stride, frame_condition=low_res)

    @jax.jit
    def fused_call(params, z, logsnr, low_res):
        denoise_fn = multidiffusion.multidiffusion_denoiser(functools.partial(windowed_denoise, params), starts,
                                                            window, frame_condition=low_res)
        return denoise_fn(z, logsnr)

    z = jax.random.normal(jax.random.key(4), shape)
    logsnr = jnp.zeros((1,))
    z_windows = multidiffusion.crop_windows(z, starts, window)
    low_res_windows = multidiffusion.crop_windows(low_res, starts, window)
    logsnr_windows = multidiffusion.repeat_for_windows(logsnr, len(starts))
    model_only = jax.jit(windowed_denoise)
    fuse_only = jax.jit(lambda preds: multidiffusion.fuse_windows(preds, starts, frames))

    first, best = _timed_call(sample, params, jax.random.key(2), low_res, repeats=repeats)
    fused_seconds = _timed_call(fused_call, params, z, logsnr, low_res, repeats=2 * repeats)[1]
    model_seconds = _timed_call(model_only, params, z_windows, logsnr_windows, low_res_windows,
                                repeats=2 * repeats)[1]
    fuse_seconds = _timed_call(fuse_only, model_only(params, z_windows, logsnr_windows, low_res_windows),
                               repeats=5)[1]
    return dict(shape=shape, steps=steps, windows=len(starts), window=window, stride=stride, first_seconds=first,
                clip_seconds=best, fused_call_seconds=fused_seconds, model_call_seconds=model_seconds,
                fuse_seconds=fuse_seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny,small")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--dtype", default="float32", help="compute dtype (CPUs have no fast bfloat16)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="timed sampling runs after the first (best taken); twice as many for one fused call")
    args = parser.parse_args()
    print(f"device: {jax.devices()[0].device_kind}, {jax.device_count()} device(s); dtype {args.dtype}", flush=True)
    for size in args.sizes.split(","):
        base = base_sampling(size, args.steps, args.dtype, args.repeats)
        print(f"{size:5s} STUNet {base['shape']}: {base['steps']} steps {base['clip_seconds']:.2f} s/clip "
              f"({base['clip_seconds'] / base['steps']:.3f} s/step; first call with compile "
              f"{base['first_seconds']:.1f} s)", flush=True)
        ssr = ssr_sampling(size, args.steps, args.dtype, args.repeats)
        overhead = ssr["fused_call_seconds"] - ssr["model_call_seconds"]
        print(f"{size:5s} SSR {ssr['shape']} in {ssr['windows']} windows of {ssr['window']} (stride "
              f"{ssr['stride']}): {ssr['steps']} steps {ssr['clip_seconds']:.2f} s/clip "
              f"({ssr['clip_seconds'] / ssr['steps']:.3f} s/step; first call {ssr['first_seconds']:.1f} s)\n"
              f"      one fused call {ssr['fused_call_seconds'] * 1e3:.1f} ms = model on windows "
              f"{ssr['model_call_seconds'] * 1e3:.1f} ms + crop/fuse {overhead * 1e3:.1f} ms "
              f"({overhead / ssr['fused_call_seconds']:.1%}); fuse_windows alone {ssr['fuse_seconds'] * 1e3:.2f} ms "
              f"({ssr['fuse_seconds'] / ssr['fused_call_seconds']:.2%} of the fused call)", flush=True)


if __name__ == "__main__":
    main()
