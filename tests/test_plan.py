"""The fit planner on the CPU backend: fit and no-fit of one compiled step against an HBM override, the cache,
a refused compile reported as needed vs available, and clear errors for bad topologies."""

import json
import os

import gin
import pytest

from lumiere_jax import plan as plan_lib
from lumiere_jax.parallel import compiled as compiled_lib

# A two-level STUNet small enough to compile its training step in seconds.
MICRO = [
    "--gin.MODEL_SIZE='tiny'", "--gin.TEXT_ENCODER='tiny'", "--gin.TEXT_LENGTH=8",
    "--gin.MeshConfig.shape=(1, -1, 1)",
    "--gin.unet_adapter.overrides={'image_size': 16, 'base_channels': 8, 'channel_multipliers': (1, 2), "
    "'attention_levels': (), 'cross_attention_levels': (1,), 'norm_groups': 4, 'num_heads': 2, 'embed_dim': 32}",
    "--gin.unet_adapter.temporal_overrides={'num_frames': 4, 'attention_blocks': 1}",
]


@pytest.fixture(autouse=True)
def clean_gin():
    yield
    gin.clear_config()


def _plan(tmp_path, *flags):
    return plan_lib.main(["--stage", "train_stunet", "--topology", "cpu:2", "--cache_dir", str(tmp_path / "cache"),
                          *MICRO, *flags])


def test_fit_and_no_fit_from_one_compile_then_the_cache(tmp_path, capsys, monkeypatch):
    assert _plan(tmp_path, "--hbm_gib", "100", "--json", str(tmp_path / "plan.json")) == 0
    first = capsys.readouterr().out
    assert "fits 0.85 x 100.00 GiB HBM" in first and "cached result" not in first
    result = json.loads((tmp_path / "plan.json").read_text())
    assert result["examples"] == 2 and result["num_chips"] == 2 and result["mesh"]["fsdp"] == 2
    assert result["cost"]["temp_bytes"] > 0 and result["model_flops"] > 0
    assert len(os.listdir(tmp_path / "cache")) == 1

    def no_compile(*args):
        raise AssertionError("the cached result should have been read")

    monkeypatch.setattr(plan_lib, "compile_plan", no_compile)
    peak_gib = (result["cost"]["argument_bytes"] + result["cost"]["output_bytes"] - result["cost"]["alias_bytes"]
                + result["cost"]["temp_bytes"] + result["cost"]["generated_code_bytes"]) / 2 ** 30
    # HBM such that the peak lies between 0.85 x HBM and HBM: the headroom alone refuses it.
    assert _plan(tmp_path, "--hbm_gib", f"{peak_gib / 0.9:.6f}") == 1
    second = capsys.readouterr().out
    assert "DOES NOT FIT" in second and "cached result" in second
    # Another configuration is another key: it would compile.
    with pytest.raises(AssertionError, match="cached result should have been read"):
        _plan(tmp_path, "--clips_per_shard", "2")
    # So is the same configuration once our code has changed.
    monkeypatch.setattr(plan_lib, "source_digest", lambda: "edited")
    with pytest.raises(AssertionError, match="cached result should have been read"):
        _plan(tmp_path, "--hbm_gib", "100")


def test_a_compile_refused_for_memory_is_a_result_not_a_traceback(tmp_path, capsys, monkeypatch):
    def refused(*args):
        raise RuntimeError("RESOURCE_EXHAUSTED: XLA:TPU compile permanent error. Ran out of memory in memory "
                           "space hbm. Used 38.63G of 31.25G hbm. Exceeded hbm capacity by 7.38G.")

    monkeypatch.setattr(plan_lib, "_compile_train", refused)
    assert _plan(tmp_path) == 1
    out = capsys.readouterr().out
    assert "does not fit: program need 38.63 GiB > 31.25 GiB available per chip" in out


@pytest.mark.parametrize("topology, message", [
    ("v6e:2xq", "bad topology 'v6e:2xq'"),
    ("tpu", "bad topology 'tpu'"),
    ("cpu:999", "cpu:N needs 1 <= N <= "),
])
def test_bad_topology_is_a_clear_error(tmp_path, capsys, topology, message):
    status = plan_lib.main(["--stage", "train_stunet", "--topology", topology, "--cache_dir", str(tmp_path),
                            *MICRO])
    assert status == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("text, what, needed, available", [
    ("RESOURCE_EXHAUSTED: XLA:TPU compile permanent error. Ran out of memory in memory space hbm. "
     "Used 49.34G of 32.00G hbm. Exceeded hbm capacity by 17.34G.", "program", 49.34, 32.0),
    ("RESOURCE_EXHAUSTED: the total memory required for HLO temporaries (37.06G) exceeds available HBM (31.25G)",
     "HLO temporaries", 37.06, 31.25),
    ("RESOURCE_EXHAUSTED: TPU TensorCore Hbm usage: 34.82G, SparseCore Hbm usage 174.10G, exceeding available "
     "bytes: 95.74G", "TensorCore HBM", 34.82, 95.74),
])
def test_out_of_memory_wordings_parse(text, what, needed, available):
    refusal = compiled_lib.parse_out_of_memory(RuntimeError(text))
    assert refusal.what == what
    assert refusal.needed_bytes == pytest.approx(needed * 2 ** 30)
    assert refusal.available_bytes == pytest.approx(available * 2 ** 30)
    assert compiled_lib.parse_out_of_memory(RuntimeError("INVALID_ARGUMENT: shapes differ")) is None


def _ssr_plan(tmp_path, capsys, windows_per_call: str, sequential: bool = False) -> tuple[dict, str]:
    path = tmp_path / f"ssr_{windows_per_call}_{sequential}.json"
    status = plan_lib.main(["--stage", "sample_ssr", "--topology", "cpu:1", "--frames", "8", "--hbm_gib", "100",
                            "--cache_dir", str(tmp_path / "cache"), "--json", str(path),
                            "--gin.MODEL_SIZE='tiny'", "--gin.TEXT_ENCODER='tiny'", "--gin.TEXT_LENGTH=8",
                            f"--gin.SamplingConfig.ssr_windows_per_call={windows_per_call}",
                            f"--gin.SamplingConfig.ssr_guidance_sequential={sequential}"])
    assert status == 0
    return json.loads(path.read_text()), capsys.readouterr().out


def test_ssr_window_chunks_are_counted_once_per_trip(tmp_path, capsys):
    # Tiny SSR: windows of 4 frames at stride 2 over 8 frames = 3 windows.
    chunked, chunked_out = _ssr_plan(tmp_path, capsys, "1")
    whole, whole_out = _ssr_plan(tmp_path, capsys, "None")
    assert chunked["windows"] == whole["windows"] == 3 and plan_lib.window_chunks(chunked) == 3
    assert plan_lib.window_chunks(whole) == 1 and "chunks" not in whole_out
    # XLA counts the loop body once: the raw count is about a third of the all-at-once step's ...
    assert 0.25 < chunked["cost"]["flops"] / whole["cost"]["flops"] < 0.45
    # ... and the report scales it back by the trips.
    reported = float(chunked_out.split("FLOPs per chip: XLA ")[1].split(" TFLOP")[0])
    assert "x 3 trips" in chunked_out
    assert reported == pytest.approx(3 * chunked["cost"]["flops"] / 1e12, abs=5e-4)  # printed to 3 decimals
    assert 0.9 < 3 * chunked["cost"]["flops"] / whole["cost"]["flops"] < 1.15
    # Sequential guidance adds a loop over the two halves inside the chunk loop: XLA counts one half.
    sequential, sequential_out = _ssr_plan(tmp_path, capsys, "1", sequential=True)
    assert plan_lib.model_call_trips(sequential) == 6 and "x 6 trips" in sequential_out
    assert 0.4 < sequential["cost"]["flops"] / chunked["cost"]["flops"] < 0.6
    assert 0.9 < 6 * sequential["cost"]["flops"] / whole["cost"]["flops"] < 1.15
