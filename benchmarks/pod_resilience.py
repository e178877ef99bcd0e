"""Resumption under faults and restart cost, through the real command line (a 2-core CPU is enough).

- chaos: chains of killed runs of the toy model (SIGKILL at a random fault-injection point: inside an
  asynchronous Orbax save, between an input snapshot's files and its commit marker, after a train step, or
  after a random delay), each chain resumed to the end and compared bitwise with an uninterrupted run.
- restart: seconds from process start to the first train step, with an empty and with a warm persistent
  compilation cache (tiny T2I and STUNet stages), and seconds from the end of the step in which SIGTERM arrived
  to the process exit with the checkpoint committed.

    python -m benchmarks.pod_resilience chaos --chains 5 --kills 4
    python -m benchmarks.pod_resilience restart --stages t2i,stunet
"""

from __future__ import annotations

import argparse
import datetime
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY_RUN = os.path.join(REPO, "tests", "train", "toy_run.gin")
STEP_LINE = re.compile(r"^(\S+ \S+) INFO step (\d+)/", re.M)


def _env(**extra) -> dict[str, str]:
    return {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3",
            "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
            "PYTHONPATH": os.pathsep.join([os.path.join(REPO, "tests", "train"), REPO]), **extra}


def _train_command(model_dir: str, data_dir: str, steps: int, *flags: str, run_file: str = TOY_RUN) -> list[str]:
    return [sys.executable, "-m", "lumiere_jax.train", f"--gin_file={run_file}", f"--gin.MODEL_DIR={model_dir}",
            f"--gin.SyntheticMotionConfig.data_dir={data_dir}", f"--gin.train.num_train_steps={steps}", *flags]


def _final_state(model_dir: str, step: int) -> list[np.ndarray]:
    import jax  # noqa: PLC0415
    import orbax.checkpoint as ocp  # noqa: PLC0415

    state = ocp.PyTreeCheckpointer().restore(os.path.join(model_dir, "checkpoints", str(step), "state"))
    return [np.asarray(leaf) for leaf in jax.tree.leaves(state)]


def chaos(chains: int, kills: int, steps: int, seed: int) -> None:
    rng = random.Random(seed)
    work = tempfile.mkdtemp(prefix="lumiere_chaos_")
    data_dir, cache = os.path.join(work, "tfds"), os.path.join(work, "jax_cache")
    flags = ("--gin.CheckpointConfig.save_every_steps=2", f"--compilation_cache_dir={cache}")
    straight = os.path.join(work, "straight")
    subprocess.run(_train_command(straight, data_dir, steps, *flags), env=_env(), check=True, capture_output=True)
    reference = _final_state(straight, steps)
    identical, runs, total_kills = 0, 0, 0
    for chain in range(chains):
        model_dir, done, floor = os.path.join(work, f"chain_{chain}"), [], 0
        while len(done) < kills and floor < steps - 2:
            kind = rng.choice(["step", "async_save", "snapshot_commit", "timer"])
            # Fault points past the previous one (a resumed run starts at or before it).
            step = (rng.randrange(floor + 2 - floor % 2, steps, 2) if kind in ("async_save", "snapshot_commit")
                    else rng.randrange(floor + 1, steps))
            env = _env() if kind == "timer" else _env(LUMIERE_FAULT=f"{kind}@{step}")
            process = subprocess.Popen(_train_command(model_dir, data_dir, steps, *flags), env=env,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if kind == "timer":
                delay = rng.uniform(2.0, 8.0)
                try:
                    process.wait(timeout=delay)
                except subprocess.TimeoutExpired:
                    process.kill()
            code = process.wait()
            runs += 1
            if code == -signal.SIGKILL:
                done.append(f"{kind}@{step}" if kind != "timer" else f"timer@{delay:.1f}s")
                floor = step if kind != "timer" else floor
            elif code == 0:
                break  # finished before the fault point (it had passed it in an earlier run)
        subprocess.run(_train_command(model_dir, data_dir, steps, *flags), env=_env(), check=True,
                       capture_output=True)
        runs += 1
        same = all(np.array_equal(a, b) for a, b in zip(reference, _final_state(model_dir, steps), strict=True))
        identical += same
        total_kills += len(done)
        print(f"chain {chain}: kills {done} -> final state {'bitwise identical' if same else 'DIFFERENT'}")
    print(f"chaos resume: {identical}/{chains} chains bitwise identical to the uninterrupted run "
          f"({total_kills} kills, {runs} runs, {steps} steps each)")


def _log_time(line_time: str) -> float:
    return datetime.datetime.strptime(line_time, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _time_to_first_step(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.time()
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    first = STEP_LINE.search(result.stderr)
    return _log_time(first.group(1)) - start, result.stderr


def restart(stages: list[str]) -> None:
    """Tiny stages of the real trainer (`runs/<stage>.gin` + `runs/cpu_tiny.gin`); the STUNet inflates the T2I run."""
    work = tempfile.mkdtemp(prefix="lumiere_restart_")
    data_dir, cache = os.path.join(work, "tfds"), os.path.join(work, "jax_cache")
    t2i_dir = os.path.join(work, "t2i_source")
    common = ["--gin_file=runs/cpu_tiny.gin", "--gin.MonitorConfig.log_every_steps=1", "--gin.EvalConfig.every_steps=0",
              f"--gin.T2I_CHECKPOINT='{t2i_dir}'"]
    run_files = {"t2i": "runs/pretrain_t2i.gin", "stunet": "runs/train_stunet.gin"}
    # Renders the data and makes the T2I checkpoint the STUNet starts from (no compilation cache).
    subprocess.run(_train_command(t2i_dir, data_dir, 1, *common[:-1], "--compilation_cache_dir=",
                                  run_file=run_files["t2i"]), env=_env(), check=True, capture_output=True)
    for stage in stages:
        flags = [*common, f"--compilation_cache_dir={cache}"] if stage == "stunet" else [
            *common[:-1], f"--compilation_cache_dir={cache}"]
        times = []
        for attempt in ("cold", "warm"):
            if attempt == "cold" and os.path.isdir(cache):
                for name in os.listdir(cache):
                    os.remove(os.path.join(cache, name))
            seconds, _ = _time_to_first_step(_train_command(os.path.join(work, f"{stage}_{attempt}"), data_dir, 1,
                                                            *flags, run_file=run_files[stage]), _env())
            times.append(seconds)
        print(f"{stage} (tiny): process start to first train step, empty compilation cache {times[0]:.1f} s, "
              f"warm {times[1]:.1f} s ({times[0] / times[1]:.2f}x)")
        process = subprocess.Popen(_train_command(os.path.join(work, f"{stage}_sigterm"), data_dir, 100000, *flags,
                                                  "--gin.CheckpointConfig.save_every_steps=100000",
                                                  run_file=run_files[stage]),
                                   env=_env(), stderr=subprocess.PIPE, text=True)
        lines = []
        for line in process.stderr:
            lines.append(line)
            match = STEP_LINE.search(line)
            if match and int(match.group(2)) >= 3:
                process.send_signal(signal.SIGTERM)
                break
        rest = process.stderr.read()
        process.wait()
        exited = time.time()
        last_step = STEP_LINE.findall("".join(lines) + rest)[-1]
        saved = re.search(r"preempted: saved step (\d+)", rest)
        print(f"{stage} (tiny): SIGTERM -> exit code {process.returncode}, saved step "
              f"{saved.group(1) if saved else None}, {exited - _log_time(last_step[0]):.2f} s from the end of that "
              "step to the process exit (checkpoint committed)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["chaos", "restart"])
    parser.add_argument("--chains", type=int, default=5)
    parser.add_argument("--kills", type=int, default=4)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stages", default="t2i,stunet")
    args = parser.parse_args()
    if args.what == "chaos":
        chaos(args.chains, args.kills, args.steps, args.seed)
    else:
        restart(args.stages.split(","))


if __name__ == "__main__":
    main()
