"""Compile-only cost report: STUNet against the same network at a fixed temporal resolution (paper section 2).

Compiles (never runs) the base STUNet training step -- frozen T2I weights, temporal parameters trained with
Adam -- and the same step for `temporal.resampling=False` (no temporal down/up-sampling: every level keeps all
frames, the common design the paper argues against), then prints XLA's per-device FLOPs and memory for both and
the ratios STUNet / fixed.

    python -m benchmarks.cost_report                                   # paper config, 8 fake CPU devices
    python -m benchmarks.cost_report --size small --devices 2          # quick
    PYTHONPATH=.bench_libtpu python -m benchmarks.cost_report --target tpu --topology v5:2x2x1

DeepFloyd IF stage I inflated into a STUNet (runs/train_stunet_from_if.gin: 80 frames, 4 temporal attention
blocks of 16 heads, bf16, per-block remat), from the downloaded model's config.json, e.g. IF-I-XL at 80x64x64:
    PYTHONPATH=.bench_libtpu python -m benchmarks.cost_report --if-config IF-I-XL-v1.0/unet/config.json \
        --variants stunet --target tpu --topology v5:2x2x1 --mesh 1,-1,1
    (and --topology v6e:2x4 for a v6e slice)

jax is imported only after the arguments are read: the fake CPU device count must be set before that.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

from benchmarks import fake_devices

VARIANTS = ("stunet", "fixed")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="paper", choices=("tiny", "small", "paper"))
    parser.add_argument("--frames", type=int, default=0, help="override the preset's frame count (0: preset)")
    parser.add_argument("--batch-per-device", type=int, default=1,
                        help="clips per data-parallel shard (global batch = this x data x fsdp)")
    parser.add_argument("--mesh", default="1,-1,1", help="data,fsdp,tensor sizes; one -1 fills the devices")
    parser.add_argument("--clip", type=int, default=1, help="devices one clip is split over (MeshConfig.clip)")
    parser.add_argument("--remat", default="config",
                        help="rematerialisation: the preset's (config) or a policy of models/remat.py (none, full, "
                             "save_block_outputs, save_dots, offload_block_outputs)")
    parser.add_argument("--target", default="cpu", choices=("cpu", "tpu"))
    parser.add_argument("--devices", type=int, default=8, help="fake CPU devices (target cpu)")
    parser.add_argument("--topology", default="", help="TPU topology for target tpu, e.g. v5:2x2x1 or v6e:2x4")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of stunet,fixed")
    parser.add_argument("--json", default="", help="also write the figures to this JSON file")
    parser.add_argument("--if-config", default="",
                        help="a DeepFloyd IF stage I unet/config.json: report its inflated STUNet instead of --size")
    args = parser.parse_args(argv)
    args.mesh = tuple(int(size) for size in args.mesh.split(","))
    args.variants = tuple(args.variants.split(","))
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; choose from {VARIANTS}")
    return args


def variant_config(size: str, variant: str, frames: int, remat: str):
    """The STUNet config of `size` (`variant` "fixed": without temporal resampling) with overrides applied."""
    from lumiere_jax.models import config as config_lib  # noqa: PLC0415 -- imports jax: after the device count
    config = config_lib.stunet_config(size, resampling=variant == "stunet")
    if frames:
        config = dataclasses.replace(config, temporal=dataclasses.replace(config.temporal, num_frames=frames))
    if remat != "config":
        config = dataclasses.replace(config, remat=remat)
    return config


def if_variant_config(config_json: str, variant: str, frames: int, remat: str):
    """The IF U-Net of `config_json` inflated as runs/train_stunet_from_if.gin does (`variant` "fixed": without
    temporal resampling), bf16 compute, per-block remat unless `remat` is "none" (the IF U-Net remats whole
    blocks; the named policies of models/remat.py are our U-Net's)."""
    from lumiere_jax.models import if_config  # noqa: PLC0415 -- imports jax: after the device count
    from lumiere_jax.models.config import TemporalConfig  # noqa: PLC0415
    temporal = TemporalConfig(num_frames=frames or 80, resampling=variant == "stunet", attention_blocks=4,
                              attention_heads=16)
    with open(config_json) as file:
        fields = json.load(file)
    return if_config.config_from_diffusers(fields, temporal=temporal, dtype="bfloat16", remat=remat != "none")


def measure(args: argparse.Namespace, variant: str) -> dict:
    """Compiles one variant's step and returns its figures (per device unless named total); a step the
    compiler refuses for memory gives a row with `out_of_memory` (needed vs available) instead."""
    # These import jax: only after the fake device count is set (module docstring).
    from benchmarks import compiled_cost, minimal_step  # noqa: PLC0415
    from lumiere_jax.parallel import compiled as compiled_lib  # noqa: PLC0415
    from lumiere_jax.parallel import mesh as mesh_lib  # noqa: PLC0415

    if args.if_config:
        config = if_variant_config(args.if_config, variant, args.frames, args.remat)
    else:
        config = variant_config(args.size, variant, args.frames, args.remat)
    devices = compiled_cost.target_devices(args.target, args.topology)
    mesh = mesh_lib.make_mesh(args.mesh, devices=devices, clip=args.clip)
    setup = minimal_step.setup(config, mesh, args.batch_per_device, video=True, freeze_spatial=True)
    size = f"IF {args.if_config}" if args.if_config else args.size
    row = dict(variant=variant, size=size, frames=config.temporal.num_frames, image_size=config.image_size,
               remat=config.remat, dtype=config.dtype, mesh=dict(mesh.shape), num_devices=mesh.size,
               device_kind=devices[0].device_kind, batch_per_device=args.batch_per_device,
               global_batch=setup.args[3]["x0"].shape[0], num_params=setup.num_params,
               num_trainable=setup.num_trainable)
    start = time.perf_counter()
    try:
        cost = compiled_cost.compile_step(setup)
    except Exception as error:  # only a refusal for memory becomes a row
        refusal = compiled_lib.parse_out_of_memory(error)
        if refusal is None:
            raise
        return dict(row, out_of_memory=dataclasses.asdict(refusal), compile_seconds=time.perf_counter() - start)
    return dict(row, total_flops=cost.flops * mesh.size, compile_seconds=time.perf_counter() - start,
                **cost.summary())


def format_row(row: dict) -> str:
    def gib(key: str) -> float:
        return row[key] / 2.0 ** 30

    lines = [
        f"[{row['variant']}] {row['size']} {row['frames']}x{row['image_size']}x{row['image_size']} "
        f"{row['dtype']} remat={row['remat']} mesh={row['mesh']} ({row['device_kind']}) "
        f"batch/device={row['batch_per_device']} global batch={row['global_batch']}",
        f"  params {row['num_params'] / 1e6:.1f}M, trained {row['num_trainable'] / 1e6:.1f}M; "
        f"compile {row['compile_seconds']:.0f} s",
    ]
    if "out_of_memory" in row:
        from lumiere_jax.parallel import compiled as compiled_lib  # noqa: PLC0415 -- imports jax
        return "\n".join(lines + ["  " + compiled_lib.OutOfMemory(**row["out_of_memory"]).describe()])
    lines += [
        f"  FLOPs per device {row['flops'] / 1e12:.2f} TFLOP, all devices {row['total_flops'] / 1e12:.2f} TFLOP; "
        f"bytes accessed {row['bytes_accessed'] / 2.0 ** 30:.1f} GiB"
        + (f"; cost-model time {row['optimal_seconds']:.3f} s" if row["optimal_seconds"] else ""),
        f"  memory per device: arguments {gib('argument_bytes'):.2f} GiB, outputs {gib('output_bytes'):.2f} GiB "
        f"(aliased {gib('alias_bytes'):.2f}), temps {gib('temp_bytes'):.2f} GiB, "
        f"generated code {gib('generated_code_bytes'):.3f} GiB -> peak {gib('peak_bytes'):.2f} GiB",
    ]
    return "\n".join(lines)


def ratios(rows: dict[str, dict]) -> dict[str, float]:
    """STUNet / fixed-temporal-resolution ratios of FLOPs and memory."""
    stunet, fixed = rows["stunet"], rows["fixed"]
    keys = ("flops", "peak_bytes", "temp_bytes", "argument_bytes")
    return {key: stunet[key] / fixed[key] for key in keys if fixed[key]}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.target == "cpu":
        fake_devices.request_cpu_devices(args.devices)
    rows = {}
    for variant in args.variants:
        rows[variant] = measure(args, variant)
        print(format_row(rows[variant]), flush=True)
    result = {"rows": rows}
    if set(rows) == set(VARIANTS) and not any("out_of_memory" in row for row in rows.values()):
        result["ratios"] = ratios(rows)
        print("STUNet / fixed temporal resolution: " + ", ".join(
            f"{key} {value:.3f}" for key, value in result["ratios"].items()))
    if args.json:
        with open(args.json, "w") as file:
            json.dump(result, file, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
