"""Fit planner: compiles a stage's step for a device topology (never runs it) and says what it costs per chip.

    python -m lumiere_jax.plan --stage train_stunet --topology v6e:2x4 --gin.MeshConfig.shape="(1, -1, 1)"
    python -m lumiere_jax.plan --stage sample_ssr --topology v5:2x2x1 --frames 80
    python -m lumiere_jax.plan --stage train_stunet --topology cpu:8 --gin.MODEL_SIZE="'tiny'"   # no libtpu

Prints per-chip memory (arguments, temporaries, peak against the chip's HBM x 0.85 headroom, `ChipSpecs`),
XLA's FLOPs and the analytic model FLOPs (models/flops.py), the TPU cost model's step time, examples/s/chip
and the MFU it implies, the mesh and remat settings, and whether the step fits. A step the compiler refuses
for memory is reported as not fitting, with needed vs available from the compiler's error.

Stages and the gin file each starts from (more `--gin_file`s and `--gin.KEY=VALUE` overrides apply on top,
so mesh, remat and model settings come from gin exactly as for the trainer and the sampler):
  train_t2i, train_stunet, train_ssr, train_conditional: the trainer's own step (train/step.py) with the
    run file's adapter, optimizer, diffusion and mesh settings, `--clips_per_shard` examples per data-parallel
    shard, text embeddings cached in the batch (the frozen T5 is not part of the step);
  sample_ssr: one guided, window-fused call of the SSR denoiser on a whole clip of `--frames` frames (what
    every SSR sampler step runs), with the job's `SamplingConfig.ssr_windows_per_call`.

TPU topologies ("v5:2x2x1" = v5p, "v6e:2x2", "v5e:2x4", "v4:2x2x1") compile on a machine without TPUs
through libtpu, which is not a runtime requirement of the package. Install it once, outside the project venv:

    .venv/bin/pip install --no-deps --target .bench_libtpu libtpu==0.0.42.1
    PYTHONPATH=.bench_libtpu JAX_PLATFORMS=cpu python -m lumiere_jax.plan --stage ... --topology v6e:2x2

libtpu allows one process at a time. "cpu:N" compiles for N CPU devices (fake ones with
XLA_FLAGS=--xla_force_host_platform_device_count=N). A paper-size compile takes 10-20 CPU-minutes, so results
are cached by a hash of the stage, topology, clip count, the whole gin configuration and the package's sources
(`--cache_dir`, default ~/.cache/lumiere_jax/plan; `--refresh` recompiles).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

import gin
import jax
import jax.numpy as jnp

from lumiere_jax import gin_cli, storage
from lumiere_jax.diffusion import multidiffusion
from lumiere_jax.parallel import chips as chips_lib
from lumiere_jax.parallel import compiled as compiled_lib
from lumiere_jax.parallel import mesh as mesh_lib
from lumiere_jax.parallel import partitioning

STAGE_GIN_FILES = {
    "train_t2i": "runs/pretrain_t2i.gin",
    "train_stunet": "runs/train_stunet.gin",
    "train_ssr": "runs/train_ssr.gin",
    "train_conditional": "runs/finetune_conditional.gin",
    "sample_ssr": "sample/ssr.gin",
}
DEFAULT_CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "lumiere_jax", "plan")
MATMUL_SIZE = 8192  # the reference matmul whose cost-model rate the efficiency divides by


def parse_args(argv: Sequence[str]):
    parser = gin_cli.argument_parser(
        "lumiere-plan", __doc__.splitlines()[0],
        "Overrides: --gin.KEY=VALUE, e.g. --gin.MeshConfig.shape='(1, -1, 1)' --gin.unet_adapter.remat='save_dots'")
    parser.add_argument("--stage", required=True, choices=sorted(STAGE_GIN_FILES))
    parser.add_argument("--topology", required=True,
                        help="TPU topology (v5:2x2x1, v6e:2x2, v5e:2x4, v4:2x2x1; needs libtpu) or cpu:N")
    parser.add_argument("--clips_per_shard", type=int, default=1,
                        help="examples per data-parallel shard (global batch = this x data x fsdp)")
    parser.add_argument("--frames", type=int, default=80, help="sample_ssr: frames of the clip")
    parser.add_argument("--hbm_gib", type=float, default=None, help="HBM per chip to plan for (default: table)")
    parser.add_argument("--matmul_reference", action="store_true",
                        help=f"also compile a {MATMUL_SIZE}^3 bfloat16 matmul for one chip and report the step's "
                             "cost-model efficiency = model FLOPs / (step time x that matmul's rate)")
    parser.add_argument("--cache_dir", default=DEFAULT_CACHE_DIR)
    parser.add_argument("--refresh", action="store_true", help="recompile even when a cached result exists")
    parser.add_argument("--json", default="", help="also write the result to this file")
    args, unknown = parser.parse_known_args(argv)
    args.gin_overrides = gin_cli.gin_overrides(parser, unknown)
    args.gin_file = [STAGE_GIN_FILES[args.stage], *args.gin_file]
    if args.clips_per_shard < 1:
        parser.error(f"--clips_per_shard={args.clips_per_shard} must be at least 1")
    return args


def target_devices(topology: str) -> list:
    """The devices to compile for: "cpu:N" (this process's CPU devices) or a TPU topology through libtpu."""
    if topology.startswith("cpu:"):
        count = topology[len("cpu:"):]
        available = jax.devices("cpu")
        if not count.isdigit() or not 0 < int(count) <= len(available):
            raise ValueError(f"bad topology {topology!r}: cpu:N needs 1 <= N <= {len(available)} CPU devices here "
                             "(more with XLA_FLAGS=--xla_force_host_platform_device_count=N)")
        return available[:int(count)]
    return chips_lib.topology_devices(topology)


@gin.configurable("lumiere_plan_setting")
def _resolved(value: Any = None) -> Any:
    return value


def setting(selector: str, default: Any = None) -> Any:
    """The value gin gives `selector` (e.g. "train.adapter"), references evaluated; `default` if unbound."""
    try:
        value = gin.query_parameter(selector)
    except ValueError:
        return default
    with gin.unlock_config():
        gin.bind_parameter("lumiere_plan_setting.value", value)
    return _resolved()


def source_digest() -> str:
    """Hash of the package's Python sources: a cached plan is stale once the code it compiled changes."""
    digest = hashlib.sha256()
    for path in sorted(pathlib.Path(__file__).parent.rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def config_key(args, device_kind: str) -> str:
    """Hash of everything the compiled step depends on: settings, gin configuration, jax and our code."""
    fields = [args.stage, args.topology, device_kind, str(args.clips_per_shard), str(args.frames),
              jax.__version__, gin.config_str(), source_digest()]
    return hashlib.sha256("\n".join(fields).encode()).hexdigest()[:20]


def _sharded(tree, shardings):
    return jax.tree.map(lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
                        tree, shardings)


def _batch(tree, mesh):
    return _sharded(tree, partitioning.batch_shardings(tree, mesh))


def _compile_train(mesh, rules, clips_per_shard: int) -> tuple[Any, dict]:
    """The trainer's step for `clips_per_shard` examples per shard; returns (compiled or None, facts)."""
    from lumiere_jax.stages import adapter as adapter_lib  # noqa: PLC0415 -- registers configurables late
    from lumiere_jax.stages.diffusion_config import DiffusionConfig  # noqa: PLC0415
    from lumiere_jax.train import estimate as estimate_lib  # noqa: PLC0415
    from lumiere_jax.train import loop  # noqa: PLC0415
    from lumiere_jax.train import optimizer as optimizer_lib  # noqa: PLC0415
    from lumiere_jax.train import step as step_lib  # noqa: PLC0415

    adapter = setting("train.adapter")
    optimizer = setting("train.optimizer", optimizer_lib.OptimizerConfig())
    diffusion = setting("train.diffusion", DiffusionConfig())
    num_steps = setting("train.num_train_steps", 1000)
    global_batch = clips_per_shard * mesh_lib.data_axis_size(mesh)
    learning_rate = optimizer_lib.learning_rate_schedule(optimizer, num_steps)
    tx = optimizer_lib.make_optimizer(optimizer, learning_rate)
    use_ema = optimizer.ema_decay > 0
    abstract = loop.abstract_train_state(adapter, mesh, rules, tx, use_ema, jax.random.key(0))
    inputs, text_embeddings, text_mask = jax.eval_shape(lambda: adapter.example_inputs(global_batch))
    batch = {"image" if adapter.stage in adapter_lib.IMAGE_STAGES else "video": inputs.x0,
             "text_embeddings": text_embeddings, "text_mask": text_mask}
    if adapter.stage == "conditional":
        batch["condition"] = inputs.x0
        batch["condition_mask"] = jax.ShapeDtypeStruct(inputs.x0.shape[:-1] + (1,), jnp.float32)
    step_fn = step_lib.bind_train_step(adapter, diffusion, tx, learning_rate, optimizer.ema_decay if use_ema else 0.0)
    rng = jax.ShapeDtypeStruct((), jax.eval_shape(jax.random.key, 0).dtype, sharding=partitioning.replicated(mesh))
    facts = {"examples": global_batch, "model_flops": estimate_lib.adapter_model_flops(adapter, global_batch, True),
             "remat": adapter.module.config.remat, "model": adapter.name}
    with mesh_lib.mesh_context(mesh, rules):
        compiled = loop.compile_train_step(step_fn, abstract.state, abstract.state_shardings, _batch(batch, mesh),
                                           {}, {}, rng, mesh)
    return compiled, facts


def _compile_sample_ssr(mesh, rules, clips_per_shard: int, frames: int) -> tuple[Any, dict]:
    """One guided, window-fused SSR denoiser call on whole clips of `frames` frames."""
    from lumiere_jax.sample import applications  # noqa: PLC0415 -- registers configurables late
    from lumiere_jax.sample import ssr as ssr_lib  # noqa: PLC0415
    from lumiere_jax.train import estimate as estimate_lib  # noqa: PLC0415

    adapter = setting("ModelsConfig.ssr_adapter")
    sampling = setting("sample_videos.sampling", applications.SamplingConfig())
    clips = clips_per_shard * mesh_lib.data_axis_size(mesh)
    height, width = adapter.sample_shape[1:3]
    low = adapter.low_res_size
    boxed = jax.eval_shape(adapter.init, jax.random.key(0))
    params = jax.eval_shape(lambda rng: partitioning.unbox(adapter.init(rng)), jax.random.key(0))
    params = _sharded(params, partitioning.shardings_from_logical(partitioning.logical_specs(boxed), mesh, rules,
                                                                  params))
    config = adapter.module.config
    length, dim = adapter.text_length, config.text_embed_dim
    f32 = jnp.float32
    text = applications.TextGuidance(
        jax.ShapeDtypeStruct((clips, length, dim), f32), jax.ShapeDtypeStruct((clips, length), bool),
        jax.ShapeDtypeStruct((clips, length, dim), f32), jax.ShapeDtypeStruct((clips, length), bool),
        jax.ShapeDtypeStruct((clips,), f32), jax.ShapeDtypeStruct((clips,), f32),
        jax.ShapeDtypeStruct((clips, 2), f32))
    arrays = _batch({"z": jax.ShapeDtypeStruct((clips, frames, height, width, 3), f32),
                     "logsnr": jax.ShapeDtypeStruct((clips,), f32),
                     "low_res": jax.ShapeDtypeStruct((clips, frames, low, low, 3), f32),
                     "aug_logsnr": jax.ShapeDtypeStruct((clips,), f32), "text": text}, mesh)

    def denoise(params, arrays):
        stage = applications.Stage(adapter, params, None)
        denoise_fn = ssr_lib.ssr_denoiser(stage, arrays["low_res"], arrays["text"], arrays["aug_logsnr"], sampling)
        return denoise_fn(arrays["z"], arrays["logsnr"])

    starts, window = ssr_lib.ssr_windows(applications.Stage(adapter, None, None), frames, sampling)
    windows = clips * len(starts)
    # Guidance runs every window twice (conditional and unconditional).
    model_flops = 2 * estimate_lib.adapter_model_flops(dataclasses.replace(adapter, window_frames=window),
                                                       windows, False)
    facts = {"examples": clips, "model_flops": model_flops, "remat": config.remat,
             "windows_per_call": sampling.ssr_windows_per_call, "windows": len(starts), "window_frames": window,
             "guidance_sequential": sampling.ssr_guidance_sequential, "model": adapter.name}
    with mesh_lib.mesh_context(mesh, rules):
        compiled = jax.jit(denoise).lower(params, arrays).compile()
    return compiled, facts


def _matmul_reference(device) -> float | None:
    """The cost model's FLOP/s for one `MATMUL_SIZE`^3 bfloat16 matmul on one chip (None without a cost model)."""
    sharding = jax.sharding.SingleDeviceSharding(device)
    operand = jax.ShapeDtypeStruct((MATMUL_SIZE, MATMUL_SIZE), jnp.bfloat16, sharding=sharding)
    seconds = compiled_lib.compiled_cost(jax.jit(jnp.matmul).lower(operand, operand).compile()).optimal_seconds
    return 2.0 * MATMUL_SIZE ** 3 / seconds if seconds else None


def compile_plan(args, devices: list) -> dict:
    """Compiles the stage's step on `devices` with the gin settings; a refused compile is a result too."""
    mesh_config = setting("train.mesh" if args.stage.startswith("train_") else "sample_videos.mesh",
                          mesh_lib.MeshConfig())
    mesh = mesh_config.make_mesh(devices)
    rules = mesh_config.rules
    result = {"stage": args.stage, "topology": args.topology, "device_kind": devices[0].device_kind,
              "num_chips": mesh.size, "mesh": dict(mesh.shape)}
    try:
        if args.stage == "sample_ssr":
            compiled, facts = _compile_sample_ssr(mesh, rules, args.clips_per_shard, args.frames)
        else:
            compiled, facts = _compile_train(mesh, rules, args.clips_per_shard)
    except Exception as error:  # only a refusal for memory becomes a result
        out_of_memory = compiled_lib.parse_out_of_memory(error)
        if out_of_memory is None:
            raise
        return {**result, "out_of_memory": dataclasses.asdict(out_of_memory)}
    result.update(facts, cost=dataclasses.asdict(compiled_lib.compiled_cost(compiled)))
    if args.matmul_reference:
        result["matmul_flops_per_second"] = _matmul_reference(devices[0])
    return result


def window_chunks(result: dict) -> int:
    """Trips of the SSR's loop over window chunks (`multidiffusion.map_window_chunks`) in a planned step; 1 for
    steps without that loop or with all windows in one call."""
    if not result.get("windows"):
        return 1
    return multidiffusion.num_window_chunks(result["windows"], result.get("windows_per_call"))


def model_call_trips(result: dict) -> int:
    """Times a planned step runs its innermost model call: the window chunks, times 2 when the SSR's guidance
    halves run one after the other (`ssr_guidance_sequential`: a `lax.map` over the two inside the chunk loop)."""
    return window_chunks(result) * (2 if result.get("guidance_sequential") else 1)


def report_lines(result: dict, chips: chips_lib.ChipSpecs, hbm_gib: float | None) -> tuple[list[str], bool | None]:
    """The plan as printed (settings, then the estimate or the refusal) and whether the step fits (None:
    the chip's HBM is unknown)."""
    lines = [f"{result['stage']} on {result['topology']} ({result['num_chips']} x {result['device_kind']}), "
             f"mesh {result['mesh']}" + (f", remat {result['remat']}" if "remat" in result else "")
             + (f", {result['windows']} windows of {result['window_frames']} frames, "
                f"{result['windows_per_call']} per call" if "windows" in result else "")]
    if "out_of_memory" in result:
        refusal = compiled_lib.OutOfMemory(**result["out_of_memory"])
        return lines + [refusal.describe()], False
    from lumiere_jax.train import estimate as estimate_lib  # noqa: PLC0415
    hbm = hbm_gib * chips_lib.GIB if hbm_gib is not None else chips.hbm(result["device_kind"])
    peak, source = chips.peak(result["device_kind"])
    cost, trips = compiled_lib.CompiledCost(**result["cost"]), model_call_trips(result)
    if trips > 1:
        # XLA's cost analysis and the TPU cost model count a loop body once: the step runs it `trips` times.
        passes = " and one guidance half" if result.get("guidance_sequential") else ""
        lines.append(f"XLA's FLOPs and the cost-model time below are the loop body's (one chunk of "
                     f"{result['windows_per_call']} window(s){passes}) x {trips} trips; memory is the compiler's own")
        cost = dataclasses.replace(cost, flops=cost.flops * trips, bytes_accessed=cost.bytes_accessed * trips,
                                   optimal_seconds=cost.optimal_seconds and cost.optimal_seconds * trips)
    estimate = estimate_lib.StepEstimate(
        result["device_kind"], result["num_chips"], result["examples"], cost,
        result["model_flops"] / result["num_chips"], peak, source, hbm, chips.headroom)
    lines += estimate.lines()
    rate, seconds = result.get("matmul_flops_per_second"), estimate.cost.optimal_seconds
    if rate and seconds:
        lines.append(f"cost-model efficiency: model FLOPs / (step time x {MATMUL_SIZE}^3 bf16 matmul rate "
                     f"{rate / 1e12:.1f} TFLOP/s) = {estimate.model_flops_per_chip / (seconds * rate):.3f}")
    return lines, estimate.fits


def plan(args) -> tuple[dict, list[str], bool | None]:
    """Compiles (or reads the cached result of) the plan of `args`; returns the result, its report lines and
    whether the step fits."""
    gin.clear_config()
    gin_cli.parse_gin(args)
    devices = target_devices(args.topology)
    path = storage.join(args.cache_dir, f"{args.stage}-{config_key(args, devices[0].device_kind)}.json")
    if storage.exists(path) and not args.refresh:
        result = {**storage.read_json(path), "cached": path}
    else:
        result = compile_plan(args, devices)
        storage.makedirs(args.cache_dir)
        storage.write_json_atomic(path, result)
        result["cached"] = None
    chips = setting("MonitorConfig.chips", chips_lib.ChipSpecs())
    return (result, *report_lines(result, chips, args.hbm_gib))


def main(argv: Sequence[str] | None = None) -> int:
    """Prints the plan; exit status 0 when the step fits, 1 when it does not, 2 on a usage error."""
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        result, lines, fits = plan(args)
    except (gin_cli.UsageError, ValueError) as error:
        print(f"lumiere-plan: error: {error}", file=sys.stderr)
        return 2
    print("\n".join(lines) + (f"\n(cached result {result['cached']})" if result["cached"] else ""))
    if args.json:
        storage.write_json_atomic(args.json, {**result, "report": lines})
    return 1 if fits is False else 0


if __name__ == "__main__":
    sys.exit(main())
