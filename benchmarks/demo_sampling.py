"""The demo's sampling settings on a trained demo: guidance weight x thresholding, scored by synthetic_quality.

Samples the base STUNet of a finished `make demo` (no SSR) for each setting, on the validation prompts
(`synthetic_prompts.validation_combinations`, apart from the scored ones: the set to choose settings on) or on
the demo's scored prompts, and prints each setting's mean scores. Seeds as the demo's: scored prompt i gets
seed i, validation prompt i seed 100 + i.

    python -m benchmarks.demo_sampling --runs out/demo/full/runs --out /tmp/demo_sampling \\
      [--prompts validation|scored] [--weights 3,5] [--thresholds dynamic,static]

"dynamic": Imagen's dynamic thresholding (99.5th percentile, no cap); "static": x0 clipped to [-1, 1].
Each setting is one sampling command (~2 min for 24 clips on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from lumiere_jax import demo
from lumiere_jax.data import synthetic_prompts
from lumiere_jax.evaluate import synthetic_quality

THRESHOLDS = {"dynamic": "None", "static": "1.0"}  # SamplingConfig.threshold_max_scale
REPORTED = ("object_color", "background_color", "shape", "motion", "temporal_consistency")
VALIDATION_SEED_OFFSET = 100


def prompt_rows(prompt_set: str) -> list[dict]:
    """The rows of the sampling job's prompts file for `prompt_set` ("validation" or "scored")."""
    if prompt_set == "scored":
        return demo.scored_prompt_rows()
    if prompt_set == "validation":
        return [{"id": f"val_{index:02d}", "prompt": combination.caption(), "seed": VALIDATION_SEED_OFFSET + index}
                for index, combination in enumerate(synthetic_prompts.validation_combinations())]
    raise ValueError(f"unknown prompt set {prompt_set!r}; choose 'validation' or 'scored'")


def setting_flags(weight: float, threshold: str) -> list[str]:
    if threshold not in THRESHOLDS:
        raise ValueError(f"unknown thresholding {threshold!r}; choose one of {sorted(THRESHOLDS)}")
    return [f"--gin.SamplingConfig.guidance_weight={weight}",
            f"--gin.SamplingConfig.threshold_max_scale={THRESHOLDS[threshold]}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", required=True, help="a finished demo's runs/ folder (holds stunet/ and ssr/)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--prompts", default="validation", choices=("validation", "scored"))
    parser.add_argument("--weights", default="3,5")
    parser.add_argument("--thresholds", default="dynamic,static")
    args = parser.parse_args(argv)
    for name in ("stunet", "ssr"):
        if not os.path.isdir(os.path.join(args.runs, name)):
            raise SystemExit(f"{args.runs} has no {name}/ run; pass the runs/ folder of a finished `make demo`")
    os.makedirs(args.out, exist_ok=True)
    prompts = os.path.join(args.out, f"{args.prompts}.jsonl")
    with open(prompts, "w") as file:
        file.writelines(json.dumps(row) + "\n" for row in prompt_rows(args.prompts))

    results = {}
    for threshold in args.thresholds.split(","):
        for weight in (float(value) for value in args.weights.split(",")):
            name = f"{args.prompts}_{threshold}_w{weight:g}"
            videos_dir = os.path.join(args.out, name)
            command = demo.sample_command(prompts, videos_dir, "stunet", os.path.join(args.runs, "stunet"),
                                          os.path.join(args.runs, "ssr"), demo.FULL, use_ssr=False)
            demo.run(command + setting_flags(weight, threshold), name, args.out)
            _, videos, texts = synthetic_quality.read_videos_dir(videos_dir)
            results[name] = synthetic_quality.score_videos(videos, texts)["metrics"]
    print("\n| setting | " + " | ".join(REPORTED) + " |\n|---|" + "---|" * len(REPORTED))
    for name, metrics in results.items():
        print(f"| {name} | " + " | ".join(f"{metrics[key]:.3f}" for key in REPORTED) + " |")
    with open(os.path.join(args.out, "results.json"), "w") as file:
        json.dump(results, file, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
