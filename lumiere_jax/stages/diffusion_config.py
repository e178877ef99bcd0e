"""The diffusion choices a stage is trained with and sampled under (schedule, text dropout, noise augmentation)."""

from __future__ import annotations

import dataclasses

import gin

from lumiere_jax.diffusion import schedules


@gin.configurable
@dataclasses.dataclass(frozen=True)
class DiffusionConfig:
    """Diffusion choices of a stage: its schedule (training and sampling) and the train step's options.

    Attributes:
      schedule: name for `diffusion.schedules.get_schedule`, with `schedule_kwargs`.
      text_dropout_rate: probability of replacing an example's text by the null text (classifier-free guidance).
      noise_aug_max_t: SSR noise augmentation level drawn from U[0, noise_aug_max_t] (Imagen-style), as a time
        of the augmentation's own schedule (`diffusion.augmentation.AUGMENTATION_SCHEDULE`, plain cosine).
    """

    schedule: str = "cosine"
    schedule_kwargs: dict = dataclasses.field(default_factory=dict)
    text_dropout_rate: float = 0.1
    noise_aug_max_t: float = 0.5

    def __post_init__(self):
        if not 0.0 <= self.text_dropout_rate <= 1.0:
            raise ValueError(f"text_dropout_rate={self.text_dropout_rate} must lie in [0, 1]")

    def __hash__(self):  # jit treats the config as static
        return hash((self.schedule, tuple(sorted(self.schedule_kwargs.items())), self.text_dropout_rate,
                     self.noise_aug_max_t))

    @property
    def schedule_fn(self) -> schedules.Schedule:
        return schedules.get_schedule(self.schedule, **self.schedule_kwargs)
