"""Export round trip: params-only inference checkpoint, safetensors interchange file, serialized sampler."""

import json
import os

import jax
import numpy as np
import pytest
import safetensors
import safetensors.numpy

from lumiere_jax import storage
from lumiere_jax.diffusion import schedules
from lumiere_jax.export import checkpoint as export_lib
from lumiere_jax.export import cli as export_cli
from lumiere_jax.models import param_paths
from lumiere_jax.sample import applications
from lumiere_jax.sample import base as base_stage
from lumiere_jax.sample import cli as sample_cli
from lumiere_jax.sample import weights
from lumiere_jax.stages import text as text_lib
from tiny_setup import NUM_FRAMES, SIZE, base_config, sample_argv, unet_bindings, write_gin, write_rows

NUM_STEPS = 2


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_models):
    root = tmp_path_factory.mktemp("export")
    gin_file = os.fspath(root / "export.gin")
    lines = ["include 'sample/export.gin'", "STAGE = 'conditional'", "TEXT_ENCODER = 'tiny'", "TEXT_LENGTH = 8",
             "export_checkpoint.text_encoder_params_fn = None", f"SamplingConfig.num_steps = {NUM_STEPS}",
             "SamplingConfig.guidance_weight = 3.0", *unet_bindings("", base_config())]
    with open(gin_file, "w") as file:
        file.write("\n".join(lines) + "\n")
    export_dir = os.fspath(root / "inference")
    assert export_cli.main([f"--gin_file={gin_file}", f"--gin.CHECKPOINT={tiny_models['base_dir']}",
                            f"--gin.EXPORT_DIR={export_dir}"]) == 0
    return {"root": root, "dir": export_dir}


def test_manifest_and_params_only_checkpoint(exported, tiny_models):
    with open(os.path.join(exported["dir"], weights.INFERENCE_MANIFEST)) as file:
        manifest = json.load(file)
    assert manifest["step"] == 7 and manifest["weights"] == "ema" and manifest["stage"] == "conditional"
    assert manifest["sample_fn"]["batch"] == "symbolic"
    for name in manifest["files"].values():
        assert os.path.exists(os.path.join(exported["dir"], name))
    params, info = weights.load_params(exported["dir"])
    assert info["kind"] == "inference" and info["step"] == 7
    expected = param_paths.flatten(tiny_models["base_ema"])
    flat = param_paths.flatten(params)
    assert set(flat) == set(expected)
    for path, value in expected.items():
        np.testing.assert_array_equal(flat[path], value)
    assert not os.path.exists(os.path.join(exported["dir"], "params", "opt_state"))


def test_safetensors_loads_with_documented_keys(exported, tiny_models):
    path = os.path.join(exported["dir"], export_lib.SAFETENSORS_FILE)
    tensors = safetensors.numpy.load_file(path)
    expected = param_paths.flatten(tiny_models["base_ema"])
    assert set(tensors) == set(expected)
    assert "down_0_res_0/conv_0/kernel" in tensors and "input_conv/kernel" in tensors
    for key, value in expected.items():
        np.testing.assert_array_equal(tensors[key], value)
    with safetensors.safe_open(path, framework="numpy") as file:
        assert file.metadata()["key_naming"] == export_lib.KEY_NAMING and file.metadata()["step"] == "7"


def test_serialized_function_matches_direct_sampling(exported, tiny_models):
    adapter = tiny_models["base"]
    function = export_lib.load_sampling_function(os.path.join(exported["dir"], export_lib.FUNCTION_FILE))
    tokens_aval = function.in_avals[-len(export_lib.function_arguments(adapter))]
    assert tokens_aval.dtype == np.int32 and "b" in str(tokens_aval.shape[0])  # symbolic batch
    params, _ = weights.load_params(exported["dir"])
    text_params = jax.jit(adapter.text_encoder.init)(text_lib.training_text_encoder_rng(0))
    rng = np.random.default_rng(0)
    batch_size = 2
    tokens = rng.integers(3, 200, (batch_size, 8)).astype(np.int32)
    arrays = {"tokens": tokens, "text_mask": np.ones((batch_size, 8), bool),
              "keys": np.stack([np.asarray(jax.random.key_data(jax.random.key(seed))) for seed in (1, 2)]),
              "guidance_weight": np.array([3.0, 1.5], np.float32),
              "condition": rng.uniform(-1, 1, (batch_size, NUM_FRAMES, SIZE, SIZE, 3)).astype(np.float32),
              "condition_mask": np.zeros((batch_size, NUM_FRAMES, SIZE, SIZE, 1), np.float32)}
    arrays["condition_mask"][:, 0] = 1.0
    served = function.call(params, text_params, *[arrays[name] for name in export_lib.function_arguments(adapter)])
    config = applications.SamplingConfig(num_steps=NUM_STEPS, guidance_weight=3.0)
    direct = jax.jit(lambda p, t, b: base_stage.generate_base(applications.Stage(adapter, p, t), b,
                                                                 schedules.logsnr_cosine, config, NUM_STEPS))(
        params, text_params, arrays)
    assert served.shape == (batch_size, NUM_FRAMES, SIZE, SIZE, 3)
    np.testing.assert_allclose(np.asarray(served), np.asarray(direct), atol=1e-5)


def test_sampling_from_export_equals_sampling_from_training_checkpoint(exported, tiny_models, condition_files):
    root = exported["root"]
    gin_file = write_gin(os.fspath(root / "sample.gin"))
    prompts = write_rows(os.fspath(root / "rows.jsonl"), [
        {"prompt": "a red circle", "id": "t2v"},
        {"prompt": "a blue square", "mode": "i2v", "image": condition_files["image"], "id": "i2v"}])
    from_training, from_export = os.fspath(root / "from_training"), os.fspath(root / "from_export")
    assert sample_cli.main(sample_argv(gin_file, prompts, from_training, tiny_models)) == 0
    assert sample_cli.main(sample_argv(gin_file, prompts, from_export, tiny_models,
                                       f"--gin.BASE_CHECKPOINT={exported['dir']}")) == 0
    for row_id in ("t2v", "i2v"):
        np.testing.assert_array_equal(np.load(os.path.join(from_export, f"{row_id}.npy")),
                                      np.load(os.path.join(from_training, f"{row_id}.npy")))
    with open(os.path.join(from_export, "t2v.json")) as file:
        assert json.load(file)["base_checkpoint"]["kind"] == "inference"


def test_export_to_gcs_and_load_back_equals_the_local_export(exported, tiny_models, gcs_emulator, tmp_path,
                                                              monkeypatch):
    monkeypatch.chdir(tmp_path)
    bucket = gcs_emulator.new_bucket()
    export_dir = f"{bucket}/models/inference"
    assert export_cli.main([f"--gin_file={exported['root'] / 'export.gin'}",
                            f"--gin.CHECKPOINT={tiny_models['base_dir']}", f"--gin.EXPORT_DIR={export_dir}"]) == 0
    names = gcs_emulator.objects(bucket, "models/inference/")
    for name in (weights.INFERENCE_MANIFEST, "operative_config.gin", export_lib.SAFETENSORS_FILE,
                 export_lib.FUNCTION_FILE):
        assert f"models/inference/{name}" in names
    assert any(name.startswith("models/inference/params/") for name in names)  # Orbax's own files
    assert not os.path.exists(tmp_path / "gs:")

    local_manifest = storage.read_json(os.path.join(exported["dir"], weights.INFERENCE_MANIFEST))
    assert storage.read_json(f"{export_dir}/{weights.INFERENCE_MANIFEST}") == local_manifest
    local_config = storage.read_text(os.path.join(exported["dir"], "operative_config.gin"))
    assert storage.read_text(f"{export_dir}/operative_config.gin") == local_config.replace(exported["dir"], export_dir)
    # safetensors writes its metadata map in no fixed order: compare what it holds, not its bytes.
    local_safetensors = os.path.join(exported["dir"], export_lib.SAFETENSORS_FILE)
    with storage.local_file(f"{export_dir}/{export_lib.SAFETENSORS_FILE}") as downloaded:
        with safetensors.safe_open(downloaded, "numpy") as file, safetensors.safe_open(local_safetensors,
                                                                                        "numpy") as local_file:
            assert file.metadata() == local_file.metadata() and set(file.keys()) == set(local_file.keys())
            for key in local_file.keys():
                np.testing.assert_array_equal(file.get_tensor(key), local_file.get_tensor(key))
    from_bucket, info = weights.load_params(export_dir)
    assert info == {"kind": "inference", "source": export_dir, "step": 7, "weights": "ema"}
    local = param_paths.flatten(weights.load_params(exported["dir"])[0])
    flat = param_paths.flatten(from_bucket)
    assert set(flat) == set(local)
    for path, value in local.items():
        np.testing.assert_array_equal(flat[path], value)
        assert flat[path].dtype == value.dtype
    function = export_lib.load_sampling_function(f"{export_dir}/{export_lib.FUNCTION_FILE}")
    local_function = export_lib.load_sampling_function(os.path.join(exported["dir"], export_lib.FUNCTION_FILE))
    # Symbolic batch dimensions of two deserializations compare unequal: compare the avals as text.
    assert str((function.in_avals, function.out_avals)) == str((local_function.in_avals, local_function.out_avals))
    with pytest.raises(FileExistsError, match="already holds an inference checkpoint"):
        export_cli.main([f"--gin_file={exported['root'] / 'export.gin'}",
                         f"--gin.CHECKPOINT={tiny_models['base_dir']}", f"--gin.EXPORT_DIR={export_dir}"])
