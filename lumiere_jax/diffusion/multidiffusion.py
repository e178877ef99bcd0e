"""MultiDiffusion along time (PAPER.md section 3; Bar-Tal et al. 2023): the SSR over windows of its length,
and (our extension, not in the paper) the base STUNet over clips longer than it was trained on.

A clip of T frames is cut into N overlapping windows of T' frames. At every denoising step all windows are
denoised as one batch, and the window predictions are fused into one clip prediction, the solution of

    argmin_J  sum_i || sqrt(W_i) * (F_i(J) - Phi(J_i)) ||^2   =>   J[f] = sum_i W_i[f] Phi(J_i)[f] / sum_i W_i[f]

(F_i crops window i; sums run over the windows that contain frame f). Samplers step affinely in x0_hat, so
fusing x0 predictions and taking one global step equals fusing per-window steps, with noise drawn once.

Window layout (our choice): windows live in the batch dimension, batch-major: `[B * N, T', ...]` where row
`b * N + i` is window i of clip b, i.e. a reshape of `[B, N, T', ...]`. The window batch can be sharded
like any batch; per-clip conditioning is repeated with `repeat_for_windows`. A window denoiser can run its
windows a few at a time (`map_window_chunks`): the fused result is the same, and sampling memory holds the
activations of one chunk instead of all N windows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lumiere_jax.diffusion import samplers
from lumiere_jax.diffusion import schedules

# windowed_denoise_fn(z_windows [B*N, T', ...], logsnr_windows [B*N], frame_condition_windows [B*N, T', ...] | None)
WindowedDenoiser = Callable[[jax.Array, jax.Array, jax.Array | None], jax.Array]


def window_starts(num_frames: int, window_length: int, stride: int) -> tuple[int, ...]:
    """First frames of windows `0, stride, 2 * stride, ...`, plus one aligned to the clip end if needed.

    Every frame is covered and the last window ends at the last frame; `stride <= window_length` is needed
    for the windows to leave no gaps.
    """
    if window_length < 1 or num_frames < 1:
        raise ValueError(f"num_frames={num_frames} and window_length={window_length} must be positive")
    if window_length > num_frames:
        raise ValueError(
            f"window_length={window_length} is longer than the clip (num_frames={num_frames}); "
            f"use window_length <= {num_frames}")
    if stride < 1:
        raise ValueError(f"stride={stride} must be at least 1")
    if stride > window_length:
        raise ValueError(
            f"stride={stride} > window_length={window_length} leaves frames that no window covers; "
            f"use stride <= {window_length}")
    last_start = num_frames - window_length
    starts = list(range(0, last_start + 1, stride))
    if starts[-1] != last_start:
        starts.append(last_start)
    return tuple(starts)


def _frame_index(starts: Sequence[int], window_length: int, num_frames: int) -> np.ndarray:
    """Static `[N, T']` table: frame of the clip seen by each window position; checks the layout."""
    starts = np.asarray(starts, np.int32)
    if starts.ndim != 1 or starts.size == 0:
        raise ValueError(f"starts must be a non-empty sequence of ints, got {starts!r}")
    if starts.min() < 0 or starts.max() + window_length > num_frames:
        raise ValueError(
            f"window starts {starts.tolist()} with window_length={window_length} reach outside the clip of "
            f"{num_frames} frames; build them with window_starts({num_frames}, {window_length}, stride)")
    frame_index = starts[:, None] + np.arange(window_length, dtype=np.int32)[None, :]
    uncovered = np.setdiff1d(np.arange(num_frames), frame_index)
    if uncovered.size:
        raise ValueError(f"frames {uncovered.tolist()} are covered by no window; add windows or reduce the stride")
    return frame_index


def crop_windows(video: jax.Array, starts: Sequence[int], window_length: int) -> jax.Array:
    """Crops every window out of `video: [B, T, ...]` -> `[B * N, T', ...]` (batch-major, see module doc)."""
    batch_size, num_frames = video.shape[:2]
    frame_index = _frame_index(starts, window_length, num_frames)
    windows = jnp.take(video, frame_index.reshape(-1), axis=1)  # [B, N * T', ...]
    return windows.reshape((batch_size * len(frame_index), window_length) + video.shape[2:])


def repeat_for_windows(per_clip: jax.Array, num_windows: int) -> jax.Array:
    """Repeats per-clip inputs `[B, ...]` (logsnr, text embeddings) to the window batch `[B * N, ...]`."""
    return jnp.repeat(per_clip, num_windows, axis=0)


def num_window_chunks(num_windows: int, windows_per_call: int | None) -> int:
    """Model calls `map_window_chunks` makes for `num_windows` windows, `windows_per_call` at a time (None: one)."""
    if windows_per_call is None or windows_per_call >= num_windows:
        return 1
    return -(-num_windows // windows_per_call)


def map_window_chunks(fn: Callable[..., Any], num_windows: int, windows_per_call: int | None,
                      *window_inputs: Any) -> Any:
    """`fn(*window_inputs)` computed a few windows at a time, so only that many windows' activations are live.

    `window_inputs`: pytrees whose leaves are in the window layout `[B * N, ...]`; `fn` maps rows to rows
    (each output row depends on its input rows only, as a model in inference does) and returns a pytree of
    `[rows, ...]`. Each call gets `windows_per_call` windows of every clip (`[B * windows_per_call, ...]`,
    batch-major like the full layout, so a batch sharded over clips stays sharded), one `lax.map` step per
    chunk; the last chunk of a clip is filled up with copies of its last window, whose outputs are dropped.
    None, or at least N: one call on all windows.
    """
    if windows_per_call is None or windows_per_call >= num_windows:
        return fn(*window_inputs)
    if windows_per_call < 1:
        raise ValueError(f"windows_per_call={windows_per_call} must be at least 1 (or None for all windows)")
    num_chunks = num_window_chunks(num_windows, windows_per_call)
    padded = num_chunks * windows_per_call

    def to_chunks(leaf: jax.Array) -> jax.Array:  # [B * N, ...] -> [chunks, B * windows_per_call, ...]
        batch_size, rest = leaf.shape[0] // num_windows, leaf.shape[1:]
        clips = leaf.reshape((batch_size, num_windows) + rest)
        if padded > num_windows:
            clips = jnp.concatenate([clips, jnp.repeat(clips[:, -1:], padded - num_windows, axis=1)], axis=1)
        chunks = clips.reshape((batch_size, num_chunks, windows_per_call) + rest).swapaxes(0, 1)
        return chunks.reshape((num_chunks, batch_size * windows_per_call) + rest)

    def from_chunks(leaf: jax.Array) -> jax.Array:  # [chunks, B * windows_per_call, ...] -> [B * N, ...]
        rest = leaf.shape[2:]
        batch_size = leaf.shape[1] // windows_per_call
        clips = leaf.reshape((num_chunks, batch_size, windows_per_call) + rest).swapaxes(0, 1)
        clips = clips.reshape((batch_size, padded) + rest)[:, :num_windows]
        return clips.reshape((batch_size * num_windows,) + rest)

    for leaf in jax.tree.leaves(window_inputs):
        if leaf.shape[0] % num_windows:
            raise ValueError(f"window input of shape {leaf.shape} is not in the [B * N, ...] layout of "
                             f"N={num_windows} windows; build it with crop_windows or repeat_for_windows")
    outputs = jax.lax.map(lambda chunk: fn(*chunk), jax.tree.map(to_chunks, window_inputs))
    return jax.tree.map(from_chunks, outputs)


WINDOW_WEIGHTINGS = ("uniform", "triangular")


def window_weights(weighting: str, num_windows: int, window_length: int) -> np.ndarray | None:
    """Static per-window-frame weights `[N, T']` of a named scheme (None = uniform, the paper's plain average).

    "triangular" (our option): frame j of a window weighs min(j + 1, T' - j), so a window hands over to its
    neighbour gradually across the overlap instead of dropping out between two frames.
    """
    if weighting == "uniform":
        return None
    if weighting == "triangular":
        ramp = np.minimum(np.arange(1, window_length + 1), np.arange(window_length, 0, -1)).astype(np.float32)
        return np.tile(ramp, (num_windows, 1))
    raise ValueError(f"unknown window weighting {weighting!r}; choose one of {WINDOW_WEIGHTINGS}")


def _window_weights(weights: np.ndarray | None, num_windows: int, window_length: int) -> np.ndarray:
    """Normalises `weights` (None, per-window `[N]`, or per-window-frame `[N, T']`) to a static `[N, T']`."""
    if weights is None:
        return np.ones((num_windows, window_length), np.float32)
    weights = np.asarray(weights, np.float32)
    if weights.shape == (num_windows,):
        weights = np.repeat(weights[:, None], window_length, axis=1)
    if weights.shape != (num_windows, window_length):
        raise ValueError(
            f"weights of shape {weights.shape} fit neither per-window ({num_windows},) nor per-window-frame "
            f"({num_windows}, {window_length})")
    if np.any(weights < 0):
        raise ValueError("MultiDiffusion weights must be non-negative")
    return weights


def fuse_windows(
    window_preds: jax.Array,
    starts: Sequence[int],
    num_frames: int,
    weights: np.ndarray | None = None,
) -> jax.Array:
    """Per-frame weighted average of window predictions: `[B * N, T', ...] -> [B, T, ...]`.

    `weights`: static (NumPy) None, `[N]` or `[N, T']`, non-negative, with positive total on every frame.
    One static scatter-add over the N * T' window frames (accumulated in float32); no loop over frames or
    windows at run time.
    """
    num_windows = len(starts)
    window_length = window_preds.shape[1]
    if window_preds.shape[0] % num_windows:
        raise ValueError(
            f"window batch {window_preds.shape[0]} is not a multiple of the {num_windows} windows; "
            "expected [B * N, T', ...] from crop_windows")
    frame_index = _frame_index(starts, window_length, num_frames).reshape(-1)  # [N * T']
    weights = _window_weights(weights, num_windows, window_length).reshape(-1)  # [N * T']
    total_weight = np.bincount(frame_index, weights=weights, minlength=num_frames)  # [T]
    if np.any(total_weight <= 0):
        raise ValueError(
            f"frames {np.flatnonzero(total_weight <= 0).tolist()} get zero total weight; every frame needs "
            "a window with positive weight on it")
    batch_size = window_preds.shape[0] // num_windows
    rest = window_preds.shape[2:]
    preds = window_preds.reshape((batch_size, num_windows * window_length) + rest).astype(jnp.float32)
    trailing = (1,) * len(rest)
    weighted = preds * jnp.asarray(weights).reshape((1, -1) + trailing)
    summed = jnp.zeros((batch_size, num_frames) + rest, jnp.float32).at[:, frame_index].add(weighted)
    fused = summed / jnp.asarray(total_weight, jnp.float32).reshape((1, num_frames) + trailing)
    return fused.astype(window_preds.dtype)


def multidiffusion_denoiser(
    windowed_denoise_fn: WindowedDenoiser,
    starts: Sequence[int],
    window_length: int,
    weights: np.ndarray | None = None,
    frame_condition: jax.Array | None = None,
) -> samplers.Denoiser:
    """Turns a window denoiser into a whole-clip `denoise_fn(z: [B, T, ...], logsnr: [B]) -> x0_hat`.

    Each call crops z into windows, runs ALL windows as one batch through
    `windowed_denoise_fn(z_windows, logsnr_windows, frame_condition_windows)`, and fuses the x0 predictions.
    `frame_condition: [B, T, ...]`, a per-frame input (the SSR's low-res video; the base's <C * M, M>
    channels), is cropped once with the same windows.
    """
    num_windows = len(starts)
    condition_windows = None if frame_condition is None else crop_windows(frame_condition, starts, window_length)

    def denoise_fn(z: jax.Array, logsnr: jax.Array) -> jax.Array:
        z_windows = crop_windows(z, starts, window_length)
        x0_windows = windowed_denoise_fn(z_windows, repeat_for_windows(logsnr, num_windows), condition_windows)
        # A learned variance (samplers.LearnedVariance) is fused with the x0 predictions' weights.
        return jax.tree.map(lambda windows: fuse_windows(windows, starts, z.shape[1], weights), x0_windows)

    return denoise_fn


def multidiffusion_sample(
    windowed_denoise_fn: WindowedDenoiser,
    rng: jax.Array,
    shape: Sequence[int],
    schedule: schedules.Schedule,
    num_steps: int,
    window_length: int,
    stride: int,
    weights: np.ndarray | None = None,
    frame_condition: jax.Array | None = None,
    sampler: str = "ddim",
    eta: float = 0.0,
    clip_output: bool = True,
) -> jax.Array:
    """Samples a whole clip `shape = [B, T, H, W, C]` from noise with windows fused at every step.

    Noise (initial and per-step) is drawn once for the whole clip, the step noise from one key per clip;
    the fused denoiser plugs into `samplers.sample`. Jittable with everything but `rng` and `frame_condition` static.
    """
    starts = window_starts(shape[1], window_length, stride)
    init_rng, sampler_rng = jax.random.split(rng)
    z_init = jax.random.normal(init_rng, tuple(shape), jnp.float32)
    denoise_fn = multidiffusion_denoiser(windowed_denoise_fn, starts, window_length, weights, frame_condition)
    return samplers.sample(denoise_fn, samplers.keys_per_row(sampler_rng, shape[0]), z_init, schedule, num_steps,
                           sampler=sampler, eta=eta, clip_output=clip_output)
