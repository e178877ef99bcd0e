"""Does a trained demo STUNet know which way its prompt's object moves? Its loss on clips played forward and backward.

For ground-truth clips of the demo's scored prompts (all linear motions, 8 of them held out of training), the
base STUNet's v-loss at a few fixed noise levels, with the clip in order and with the same clip reversed in time
under the same caption and noise. A model that ties the motion word to the motion predicts the ordered clip better:
the gap `(loss reversed - loss in order) / loss in order` is positive. A model that only learned where objects
stand (a leftward object starts on the right) scores the same on both, as a reversed clip visits the same places.
More sensitive than the sampled clips' motion score, and no sampling:

    python -m benchmarks.direction_gap --runs out/demo/full/runs [--stride 1] [--copies 3] \\
      [--checkpoint out/demo/full/runs/stunet/checkpoints/450] [--gin KEY=VALUE ...]

`--stride 1` cuts random 8-frame windows of the 16-frame clips, as the demo's STUNet trains; `--stride 2` takes
every other frame of the whole clip.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from lumiere_jax import demo
from lumiere_jax.data import synthetic_prompts

LOG_SNRS = (-6.0, -3.0, -1.0)
CLIP_FRAMES = 16  # the tiny synthetic clips the demo's windows are cut from
SEED = 21


def ordered_clips(size: int, frames: int, stride: int, copies: int) -> tuple[np.ndarray, list[str], np.ndarray]:
    """`copies` ground-truth clips per scored prompt: uint8 `[N, frames, size, size, 3]`, captions `[N]` and
    whether each prompt is held out of training `[N]`. Each clip is drawn from its own seed."""
    if stride < 1 or (frames - 1) * stride + 1 > CLIP_FRAMES:
        raise ValueError(f"--stride {stride}: {frames} frames at that stride do not fit a {CLIP_FRAMES}-frame clip")
    held_out = synthetic_prompts.held_out_combinations()
    span = (frames - 1) * stride + 1
    clips, captions, held = [], [], []
    for copy in range(copies):
        for index, combination in enumerate(synthetic_prompts.scored_combinations()):
            rng = np.random.default_rng((SEED, copy, index))
            clip = synthetic_prompts.render_window(combination, CLIP_FRAMES, size, size, span, rng)
            clips.append(clip[::stride])
            captions.append(combination.caption())
            held.append(combination in held_out)
    return np.stack(clips), captions, np.array(held)


def relative_gaps(loss_in_order: np.ndarray, loss_reversed: np.ndarray) -> np.ndarray:
    """Per-clip `(reversed - in order) / in order`: positive where the model prefers the caption's direction."""
    return (loss_reversed - loss_in_order) / loss_in_order


def summary(gaps: np.ndarray, held: np.ndarray) -> dict[str, float]:
    """Mean gap (in %) over all clips, the held-out and the seen prompts, and the share of clips with a positive gap."""
    return {"all": 100 * float(gaps.mean()), "held_out": 100 * float(gaps[held].mean()),
            "seen": 100 * float(gaps[~held].mean()), "positive": float(np.mean(gaps > 0))}


def per_clip_losses(runs: str, checkpoint: str, clips: np.ndarray, captions: list[str], extra_gin: list[str],
                    copies: int) -> dict[float, tuple[np.ndarray, np.ndarray]]:
    """`{logsnr: (loss in order [N], loss reversed [N])}` of the demo's base STUNet at `checkpoint`, each the mean
    over `copies` noise draws shared by the two orders."""
    import jax  # noqa: PLC0415 -- heavy imports after argument parsing
    import jax.numpy as jnp  # noqa: PLC0415

    from lumiere_jax.data import vocab  # noqa: PLC0415
    from lumiere_jax.diffusion import losses  # noqa: PLC0415
    from lumiere_jax.parallel import mesh as mesh_lib  # noqa: PLC0415
    from lumiere_jax.sample import cli, conditions, job  # noqa: PLC0415
    from lumiere_jax.stages import text as text_lib  # noqa: PLC0415
    from lumiere_jax.stages.adapter import ModelInputs  # noqa: PLC0415

    flags = demo.sampling_flags("unused", "unused", "stunet", checkpoint, os.path.join(runs, "ssr"), demo.FULL)
    cli.configure_gin(cli.parse_args([*flags, *(f"--gin.{binding}" for binding in extra_gin)], "direction_gap", ""))
    adapter, text = job.ModelsConfig().base_adapter, job.TextConfig()
    mesh_config = mesh_lib.MeshConfig()
    mesh = mesh_config.make_mesh()
    with mesh_lib.mesh_context(mesh, mesh_config.rules):
        stage = job.load_stage(adapter, checkpoint, True, text, mesh, mesh_config.rules)
    tokens, mask = vocab.tokenize(captions, vocab.get_vocabulary(text.sentencepiece_model), adapter.text_length)
    embeddings, mask = text_lib.encode_text(adapter, stage.text_encoder_params, jnp.asarray(tokens), jnp.asarray(mask))
    x0 = jnp.asarray(conditions.to_unit_range(clips))  # [N, T, H, W, 3]

    @jax.jit
    def losses_at(logsnr, key):  # -> [2, N]: in order, reversed; the same noise for both
        eps = jax.random.normal(key, x0.shape)
        snr = jnp.full((x0.shape[0],), logsnr)
        out = []
        for video in (x0, x0[:, ::-1]):
            z = losses.noisy_sample(video, eps, snr)
            prediction = adapter.apply(stage.params, z, snr, ModelInputs(x0=video), embeddings, mask, None, False)
            out.append(losses.per_example_loss(prediction, video, eps, snr, adapter.parameterization))
        return jnp.stack(out)

    result = {}
    for logsnr in LOG_SNRS:
        both = np.mean([np.asarray(losses_at(logsnr, jax.random.key(draw))) for draw in range(copies)], axis=0)
        result[logsnr] = (both[0], both[1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", required=True, help="a finished demo's runs/ folder (holds stunet/ and ssr/)")
    parser.add_argument("--checkpoint", help="the STUNet run or step folder (default: RUNS/stunet, its newest step)")
    parser.add_argument("--stride", type=int, default=1)
    parser.add_argument("--copies", type=int, default=3, help="clips per scored prompt, and noise draws per level")
    parser.add_argument("--gin", action="append", default=[], help="extra gin binding KEY=VALUE (repeatable)")
    args = parser.parse_args(argv)
    checkpoint = args.checkpoint or os.path.join(args.runs, "stunet")
    if not os.path.isdir(checkpoint):
        raise SystemExit(f"{checkpoint} does not exist; pass the runs/ folder of a finished `make demo`")
    clips, captions, held = ordered_clips(demo.BASE_SIZE, demo.FULL.frames, args.stride, args.copies)
    print(f"{len(clips)} clips ({int(held.sum())} of held-out prompts), stride {args.stride}, {checkpoint}")
    for logsnr, (in_order, reversed_) in per_clip_losses(args.runs, checkpoint, clips, captions, args.gin,
                                                         args.copies).items():
        numbers = summary(relative_gaps(in_order, reversed_), held)
        print(f"logsnr {logsnr:+.0f}: loss {in_order.mean():.4f} in order, {reversed_.mean():.4f} reversed; gap "
              f"{numbers['all']:+.1f}% (held-out {numbers['held_out']:+.1f}%, seen {numbers['seen']:+.1f}%), "
              f"reversed worse in {numbers['positive']:.0%} of clips", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
