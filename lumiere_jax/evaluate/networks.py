"""Metric networks ready to run: weights loaded from converted files, batched and jitted over video lists.

Videos enter as uint8 `[T, H, W, 3]` arrays (what the sampling job writes); each network applies its own
published preprocessing. Batches are padded to a fixed size so a run compiles each network once. The
networks are small and run on one device with replicated weights, so their parameters carry no logical axes.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lumiere_jax.evaluate import c3d
from lumiere_jax.evaluate import clip
from lumiere_jax.evaluate import clip_tokenizer
from lumiere_jax.evaluate import convert
from lumiere_jax.evaluate import i3d
from lumiere_jax.evaluate import weights


def to_unit_range(videos: Sequence[np.ndarray]) -> np.ndarray:
    """uint8 videos [T, H, W, 3] (all one shape) -> float32 [N, T, H, W, 3] in [-1, 1]."""
    shapes = {video.shape for video in videos}
    if len(shapes) != 1:
        raise ValueError(f"videos of a metric batch must share one shape, got {sorted(shapes)}")
    return np.stack(videos).astype(np.float32) / 127.5 - 1.0


def run_batched(fn: Callable[[jax.Array], jax.Array], inputs: np.ndarray, batch_size: int) -> np.ndarray:
    """Applies `fn` to fixed-size batches of `inputs` [N, ...] (last batch padded) and concatenates."""
    outputs = []
    for start in range(0, inputs.shape[0], batch_size):
        batch = inputs[start:start + batch_size]
        padded = np.concatenate([batch, np.repeat(batch[-1:], batch_size - batch.shape[0], axis=0)])
        outputs.append(np.asarray(fn(jnp.asarray(padded)))[:batch.shape[0]])
    return np.concatenate(outputs)


class I3DFeatures:
    """FVD features: I3D Kinetics-400 logits [N, 400] of videos resized to 224 x 224."""

    def __init__(self, variables, config: i3d.I3DConfig = i3d.I3DConfig(), batch_size: int = 8):
        self.config, self.batch_size = config, batch_size
        model = i3d.I3D(config)
        # Weights are arguments, not closed-over constants: XLA would otherwise embed them in the program.
        apply = jax.jit(lambda params, video: model.apply(params, i3d.preprocess(video, config)))
        self._apply = functools.partial(apply, jax.device_put(variables))

    @classmethod
    def from_file(cls, path: str, config: i3d.I3DConfig = i3d.I3DConfig(), batch_size: int = 8) -> "I3DFeatures":
        variables = weights.load_variables(weights.load_flat(path), convert.abstract_variables("i3d", config), path)
        return cls(variables, config, batch_size)

    def __call__(self, videos: Sequence[np.ndarray]) -> np.ndarray:
        return run_batched(self._apply, to_unit_range(videos), self.batch_size)


class C3DLogits:
    """IS logits: UCF101 C3D class logits [N, 101] of Caffe-preprocessed 112 x 112 clips."""

    def __init__(self, variables, mean: np.ndarray, config: c3d.C3DConfig = c3d.C3DConfig(), batch_size: int = 8):
        self.config, self.batch_size = config, batch_size
        model = c3d.C3D(config)
        apply = jax.jit(lambda params, mean, video: model.apply(params, c3d.preprocess(video, mean, config)))
        self._apply = functools.partial(apply, jax.device_put(variables), jnp.asarray(mean, jnp.float32))

    @classmethod
    def from_file(cls, path: str, config: c3d.C3DConfig = c3d.C3DConfig(), batch_size: int = 8) -> "C3DLogits":
        flat = weights.load_flat(path)
        if convert.C3D_MEAN_KEY not in flat:
            raise ValueError(f"{path} has no {convert.C3D_MEAN_KEY!r}; convert C3D with --mean")
        mean = flat.pop(convert.C3D_MEAN_KEY)
        expected_shapes = [(3,), (config.num_frames, *config.resize, 3)]
        if mean.shape not in expected_shapes:
            raise ValueError(f"{path}: input_mean has shape {mean.shape}, expected one of {expected_shapes}")
        variables = weights.load_variables(flat, convert.abstract_variables("c3d", config), path)
        return cls(variables, mean, config, batch_size)

    def __call__(self, videos: Sequence[np.ndarray]) -> np.ndarray:
        return run_batched(self._apply, to_unit_range(videos), self.batch_size)


class CLIPSimilarity:
    """Per-video CLIPSIM: mean over frames of cos(CLIP image embedding, CLIP text embedding of the prompt)."""

    def __init__(self, variables, config: clip.CLIPConfig, tokenizer: Callable, batch_size: int = 4):
        self.config, self.tokenizer, self.batch_size = config, tokenizer, batch_size
        model = clip.CLIP(config)

        def similarity(variables, video, tokens, mask):  # video: [B, T, H, W, 3]
            frames = clip.preprocess_frames(video, config)
            images = model.apply(variables, frames, method=clip.CLIP.encode_image)
            text = model.apply(variables, tokens, mask, method=clip.CLIP.encode_text)
            return clip.clip_similarity(images.reshape(*video.shape[:2], -1), text).mean(axis=1)

        self._apply = functools.partial(jax.jit(similarity), jax.device_put(variables))

    @classmethod
    def from_files(cls, weights_path: str, vocab_path: str, merges_path: str, batch_size: int = 4) -> "CLIPSimilarity":
        config_path = os.path.splitext(weights_path)[0] + ".json"
        if not os.path.isfile(config_path):
            raise FileNotFoundError(f"{config_path} (the CLIP config) is missing; the CLIP converter writes it "
                                    "next to the weights")
        config = clip.CLIPConfig.from_json(config_path)
        variables = weights.load_variables(
            weights.load_flat(weights_path), convert.abstract_variables("clip", config), weights_path)
        tokenizer = clip_tokenizer.CLIPTokenizer(vocab_path, merges_path, config.context_length)
        return cls(variables, config, tokenizer, batch_size)

    def __call__(self, videos: Sequence[np.ndarray], prompts: Sequence[str]) -> np.ndarray:
        """-> [N] mean per-frame cosine similarity."""
        tokens, mask = self.tokenizer(list(prompts))
        video = to_unit_range(videos)
        packed = [(video[i:i + self.batch_size], tokens[i:i + self.batch_size], mask[i:i + self.batch_size])
                  for i in range(0, len(videos), self.batch_size)]
        scores = []
        for video_batch, token_batch, mask_batch in packed:
            count = video_batch.shape[0]
            pad = self.batch_size - count
            scores.append(np.asarray(self._apply(*(np.concatenate([array, np.repeat(array[-1:], pad, axis=0)])
                                                   for array in (video_batch, token_batch, mask_batch))))[:count])
        return np.concatenate(scores)
