"""What a compiled step will cost per chip: memory against the chip's HBM, XLA's and the analytic model FLOPs,
the TPU cost model's step time and what follows from it (clips/s/chip, MFU). The trainer logs it at start
from its own compiled step; the fit planner (lumiere_jax/plan.py) prints it for a TPU topology.

MFU (MaxText's definition): model FLOPs per step / (step time x peak FLOP/s), per chip. Model FLOPs are
counted from the config (`models/flops.py`: rematerialisation and elementwise work do not count), so MFU does
not reward recomputation; XLA's count is shown beside it.
"""

from __future__ import annotations

import dataclasses

import jax

from lumiere_jax.models import flops as flops_lib
from lumiere_jax.models import param_paths
from lumiere_jax.models.config import UNetConfig
from lumiere_jax.parallel import chips as chips_lib
from lumiere_jax.parallel import compiled as compiled_lib
from lumiere_jax.parallel import partitioning
from lumiere_jax.stages import adapter as adapter_lib

GIB = 2.0 ** 30


def trained_modules(adapter: adapter_lib.ModelAdapter) -> flops_lib.Trained:
    """`module path -> whether its weights train` under the adapter's trainable mask (all when it has none)."""
    if adapter.trainable_mask is None:
        return lambda path: True
    params = jax.eval_shape(lambda rng: partitioning.unbox(adapter.init(rng)), jax.random.key(0))
    mask = param_paths.flatten(adapter.trainable_mask(params))
    modules = {path.rsplit(param_paths.SEPARATOR, 1)[0] for path, trained in mask.items() if trained}
    return lambda path: path in modules


def adapter_model_flops(adapter: adapter_lib.ModelAdapter, batch_size: int, training: bool) -> float | None:
    """Model FLOPs of one training step (`training`) or one forward pass of `batch_size` examples; None for a
    module that is not the U-Net family (no `UNetConfig` to count from)."""
    if not isinstance(getattr(adapter.module, "config", None), UNetConfig):
        return None
    image = adapter.stage in adapter_lib.IMAGE_STAGES
    frames = None if image else adapter.window_frames or adapter.sample_shape[0]
    height, width = adapter.sample_shape[-3:-1]
    count = flops_lib.model_flops(adapter.module.config, batch_size, frames, height, width,
                                  trained_modules(adapter) if training else (lambda path: False))
    return count.train if training else count.forward


@dataclasses.dataclass(frozen=True)
class StepEstimate:
    """Per-chip figures of one compiled step of `examples` clips (or images) over `num_chips` chips."""

    device_kind: str
    num_chips: int
    examples: int
    cost: compiled_lib.CompiledCost
    model_flops_per_chip: float | None
    peak_flops: float
    peak_source: str
    hbm_bytes: float | None
    headroom: float

    @property
    def fits(self) -> bool | None:
        """Whether the planned peak stays within `headroom` x HBM (None: HBM of this chip unknown)."""
        return None if self.hbm_bytes is None else self.cost.peak_bytes <= self.headroom * self.hbm_bytes

    @property
    def examples_per_second_per_chip(self) -> float | None:
        seconds = self.cost.optimal_seconds
        return None if not seconds else self.examples / self.num_chips / seconds

    @property
    def mfu(self) -> float | None:
        """Model FLOPs / (cost-model step time x peak): the MFU the cost model predicts."""
        seconds = self.cost.optimal_seconds
        if not seconds or self.model_flops_per_chip is None:
            return None
        return self.model_flops_per_chip / (seconds * self.peak_flops)

    def summary(self) -> dict:
        return {"device_kind": self.device_kind, "num_chips": self.num_chips, "examples": self.examples,
                **self.cost.summary(), "model_flops_per_chip": self.model_flops_per_chip,
                "peak_flops": self.peak_flops, "peak_source": self.peak_source, "hbm_bytes": self.hbm_bytes,
                "headroom": self.headroom, "fits": self.fits,
                "examples_per_second_per_chip": self.examples_per_second_per_chip, "mfu": self.mfu}

    def lines(self) -> list[str]:
        cost = self.cost
        hbm = "HBM unknown" if self.hbm_bytes is None else (
            f"{'fits' if self.fits else 'DOES NOT FIT'} {self.headroom:.2f} x {self.hbm_bytes / GIB:.2f} GiB HBM "
            f"= {self.headroom * self.hbm_bytes / GIB:.2f} GiB")
        lines = [
            f"{self.examples} examples over {self.num_chips} x {self.device_kind}",
            f"memory per chip: arguments {cost.argument_bytes / GIB:.2f} GiB, outputs {cost.output_bytes / GIB:.2f} "
            f"GiB (donated {cost.alias_bytes / GIB:.2f}), temporaries {cost.temp_bytes / GIB:.2f} GiB, code "
            f"{cost.generated_code_bytes / GIB:.2f} GiB -> peak {cost.peak_bytes / GIB:.2f} GiB: {hbm}",
            f"FLOPs per chip: XLA {cost.flops / 1e12:.3f} TFLOP (with recomputation), model "
            + ("unknown" if self.model_flops_per_chip is None else f"{self.model_flops_per_chip / 1e12:.3f} TFLOP")
            + f" (analytic); peak {self.peak_flops / 1e12:.3f} TFLOP/s ({self.peak_source})",
        ]
        if cost.optimal_seconds:
            lines.append(f"cost model: {cost.optimal_seconds:.4f} s per step, "
                         f"{self.examples_per_second_per_chip:.3f} examples/s/chip"
                         + ("" if self.mfu is None else f", MFU {self.mfu:.3f}"))
        return lines


def step_estimate(compiled, examples: int, model_flops: float | None, mesh: jax.sharding.Mesh,
                  chips: chips_lib.ChipSpecs, hbm_bytes: float | None = None) -> StepEstimate:
    """The estimate of a compiled step of `examples` and `model_flops` (all chips together) on `mesh`.

    `hbm_bytes` overrides the chip table (e.g. to plan for a smaller share of a chip).
    """
    device_kind = mesh.devices.flat[0].device_kind
    peak, source = chips.peak(device_kind)
    return StepEstimate(
        device_kind=device_kind, num_chips=mesh.size, examples=examples, cost=compiled_lib.compiled_cost(compiled),
        model_flops_per_chip=None if model_flops is None else model_flops / mesh.size, peak_flops=peak,
        peak_source=source,
        hbm_bytes=hbm_bytes if hbm_bytes is not None else chips.hbm(device_kind), headroom=chips.headroom)


def train_step_estimate(compiled, adapter: adapter_lib.ModelAdapter, global_batch_size: int,
                        mesh: jax.sharding.Mesh, chips: chips_lib.ChipSpecs,
                        hbm_bytes: float | None = None) -> StepEstimate:
    """The estimate of a compiled training step of `global_batch_size` examples of `adapter`'s stage."""
    return step_estimate(compiled, global_batch_size, adapter_model_flops(adapter, global_batch_size, True), mesh,
                         chips, hbm_bytes)
