"""XLA:CPU flags set at process start-up (`runtime.configure_cpu_flags`)."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from lumiere_jax.parallel import runtime

FLAG_NAME = runtime.CPU_CONVOLUTION_FLAG_NAME


@pytest.fixture
def cpu_only(monkeypatch):
    monkeypatch.setattr(runtime, "accelerator_installed", lambda: False)


def test_adds_the_convolution_flag_after_existing_flags(cpu_only):
    environ = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    assert runtime.configure_cpu_flags(environ) is True
    assert environ["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=2 {runtime.CPU_CONVOLUTION_FLAG}"
    empty = {}
    assert runtime.configure_cpu_flags(empty) is True and empty["XLA_FLAGS"] == runtime.CPU_CONVOLUTION_FLAG


def test_keeps_a_users_own_setting(cpu_only):
    environ = {"XLA_FLAGS": f"{FLAG_NAME}=individual_dot,individual_convolution"}
    assert runtime.configure_cpu_flags(environ) is False
    assert environ["XLA_FLAGS"] == f"{FLAG_NAME}=individual_dot,individual_convolution"


def test_leaves_accelerator_installs_alone_unless_told_to_run_on_cpu(monkeypatch):
    monkeypatch.setattr(runtime, "accelerator_installed", lambda: True)
    environ = {}
    assert runtime.configure_cpu_flags(environ) is False and "XLA_FLAGS" not in environ
    environ = {"JAX_PLATFORMS": "cpu"}
    assert runtime.configure_cpu_flags(environ) is True and FLAG_NAME in environ["XLA_FLAGS"]


_CONVOLUTIONS = textwrap.dedent("""
    import os, sys
    from lumiere_jax.parallel import runtime
    assert runtime.configure_cpu_flags()
    import jax, numpy as np
    rng = np.random.default_rng(0)
    x, w, dy = (rng.standard_normal(s).astype(np.float32) for s in ((2, 9, 7, 5), (3, 3, 5, 4), (2, 9, 7, 4)))
    conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    y, vjp = jax.vjp(conv, x, w)
    dx, dw = vjp(dy)
    np.savez(sys.argv[1], y=y, dx=dx, dw=dw, flags=os.environ["XLA_FLAGS"])
""")


def test_xla_accepts_the_flag_and_convolutions_stay_exact(tmp_path):
    """In a fresh process with the flag (XLA aborts on a flag it does not know), a 3x3 convolution and both of its
    gradients against NumPy sums over the nine taps."""
    out = tmp_path / "conv.npz"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    subprocess.run([sys.executable, "-c", _CONVOLUTIONS, str(out)], env=env, check=True, timeout=120)
    result = np.load(out)
    assert FLAG_NAME in str(result["flags"])

    rng = np.random.default_rng(0)
    x, w, dy = (rng.standard_normal(s) for s in ((2, 9, 7, 5), (3, 3, 5, 4), (2, 9, 7, 4)))
    x_padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    height, width = x.shape[1:3]
    y = np.zeros(dy.shape)
    dx_padded = np.zeros(x_padded.shape)
    dw = np.zeros(w.shape)
    for i in range(3):
        for j in range(3):
            window = x_padded[:, i:i + height, j:j + width]  # [N, H, W, Cin]
            y += window @ w[i, j]
            dx_padded[:, i:i + height, j:j + width] += dy @ w[i, j].T
            dw[i, j] = np.einsum("nhwc,nhwd->cd", window, dy)
    np.testing.assert_allclose(result["y"], y, atol=1e-4)
    np.testing.assert_allclose(result["dx"], dx_padded[:, 1:-1, 1:-1], atol=1e-4)
    np.testing.assert_allclose(result["dw"], dw, atol=1e-4)
