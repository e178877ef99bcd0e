"""The gin flags every command line shares (lumiere_jax/gin_cli.py)."""

from lumiere_jax import gin_cli
from lumiere_jax.stages import factory  # noqa: F401 -- registers unet_adapter, which a reference below names


def test_override_values_need_no_inner_quotes():
    assert gin_cli.binding_line("MODEL_DIR", "/tmp/run") == "MODEL_DIR = '/tmp/run'"
    assert gin_cli.binding_line("train.num_train_steps", "10") == "train.num_train_steps = 10"
    assert gin_cli.binding_line("train.adapter", "@unet_adapter()") == "train.adapter = @unet_adapter()"
    assert gin_cli.binding_line("X", "'quoted'") == "X = 'quoted'"
