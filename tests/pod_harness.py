"""A pod on one machine: N processes of one command line joined by `jax.distributed` on 127.0.0.1, 4 fake CPU
devices each (gloo collectives), one mesh across all of them."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclasses.dataclass
class Pod:
    processes: list[subprocess.Popen]
    logs: list[str]

    def log(self, index: int) -> str:
        with open(self.logs[index]) as file:
            return file.read()

    def wait(self, timeout: float) -> list[int]:
        """Exit codes of all processes; kills them all and fails if they outlive `timeout` seconds."""
        deadline = time.time() + timeout
        codes = []
        for process in self.processes:
            try:
                codes.append(process.wait(timeout=max(1.0, deadline - time.time())))
            except subprocess.TimeoutExpired as error:
                self.kill()
                raise AssertionError(f"pod still running after {timeout} s; logs: " +
                                     " | ".join(self.log(i)[-1500:] for i in range(len(self.logs)))) from error
        return codes

    def wait_for_line(self, index: int, text: str, timeout: float) -> None:
        deadline = time.time() + timeout
        while text not in self.log(index):
            if time.time() > deadline or any(p.poll() is not None for p in self.processes):
                raise AssertionError(f"process {index} never logged {text!r}: {self.log(index)[-2000:]}")
            time.sleep(0.1)

    def signal(self, index: int, signum: int = signal.SIGTERM) -> None:
        self.processes[index].send_signal(signum)

    def kill(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
        for process in self.processes:
            process.wait()


def launch(module: str, args: list[str], env: dict[str, str], log_dir: str, num_processes: int = 2,
           devices_per_process: int = 4, heartbeat_timeout_seconds: int = 10) -> Pod:
    """Starts `python -m module args` as `num_processes` processes of one job."""
    os.makedirs(log_dir, exist_ok=True)
    port = free_port()
    env = {**os.environ, **env, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices_per_process}"}
    processes, logs = [], []
    for index in range(num_processes):
        log = os.path.join(log_dir, f"process_{index}.log")
        with open(log, "w") as file:
            processes.append(subprocess.Popen(
                [sys.executable, "-m", module, *args, f"--coordinator_address=127.0.0.1:{port}",
                 f"--num_processes={num_processes}", f"--process_id={index}",
                 f"--heartbeat_timeout_seconds={heartbeat_timeout_seconds}"],
                env=env, cwd=REPO, stdout=file, stderr=subprocess.STDOUT))
        logs.append(log)
    return Pod(processes, logs)
