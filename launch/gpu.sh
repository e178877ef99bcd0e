#!/usr/bin/env bash
# Single-node GPU launcher: one process drives the GPUs of this machine; sets GPU XLA flags, picks the
# gin_configs/mesh/gpu_<N>.gin mesh for N GPUs, and optionally installs jax[cuda12] at the pinned version.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "${BASH_SOURCE[0]%/*}/common.sh"

usage() {
  print_stdin <<EOF
Usage: launch/gpu.sh [flags]

GPU flags:
  --num_gpus=N        GPUs to use (default: all that nvidia-smi lists); picks gin_configs/mesh/gpu_<N>.gin
                      (which must exist; else pass --mesh_gin) and,
                      when given, sets CUDA_VISIBLE_DEVICES=0,...,N-1 (unless it is already set)
  --install           create/update the venv: requirements.txt + jax[cuda12] at requirements.txt's jax version
  --venv=PATH         virtualenv to install into and run from (default: <repo>/.venv)
  --xla_flags=FLAGS   XLA flags appended after the defaults (the latency hiding scheduler) and \$XLA_FLAGS

${RUN_FLAGS_HELP}

Also set: XLA_PYTHON_CLIENT_MEM_FRACTION=0.90 (unless already set; JAX's default is 0.75) and
TF_FORCE_GPU_ALLOW_GROWTH=true so the TensorFlow input pipeline does not reserve GPU memory.

Example:
  launch/gpu.sh --install --run_gin=gin_configs/runs/train_ssr.gin --model_dir=/data/lumiere/ssr
EOF
}

main() {
  NUM_GPUS="" INSTALL=0 VENV="${REPO_ROOT}/.venv" EXTRA_XLA_FLAGS=""
  local arg
  for arg in "$@"; do
    case "${arg}" in
      -h | --help) usage; return 0 ;;
      --num_gpus=*) NUM_GPUS="${arg#*=}" ;;
      --install) INSTALL=1 ;;
      --venv=*) VENV="${arg#*=}" ;;
      --xla_flags=*) EXTRA_XLA_FLAGS="${arg#*=}" ;;
      *) parse_run_flag "${arg}" || unknown_flag "${arg}" ;;
    esac
  done

  local gpu_env=()
  if [[ -n "${NUM_GPUS}" ]]; then
    [[ "${NUM_GPUS}" =~ ^[1-9][0-9]*$ ]] || die "--num_gpus=${NUM_GPUS} must be a positive integer"
    [[ -n "${CUDA_VISIBLE_DEVICES:-}" ]] || gpu_env+=("CUDA_VISIBLE_DEVICES=$(first_devices "${NUM_GPUS}")")
  else
    NUM_GPUS="$(count_gpus)"
  fi
  use_default_mesh_gin "gpu_${NUM_GPUS}" "${NUM_GPUS} GPU(s)"
  validate_run_flags

  if ((INSTALL)); then
    local jax_version
    jax_version="$(pinned_version jax)"
    install_local_venv "${VENV}" "jax[cuda12]==${jax_version}"
  fi
  gpu_env+=(
    "XLA_FLAGS=$(join_xla_flags --xla_gpu_enable_latency_hiding_scheduler=true)"
    "XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.90}"
    TF_FORCE_GPU_ALLOW_GROWTH=true
  )
  run_local_job "${VENV}" "${gpu_env[@]}"
}

# Prints "0,1,...,count-1".
first_devices() {
  local count="$1" index devices="0"
  for ((index = 1; index < count; index++)); do
    devices+=",${index}"
  done
  printf '%s' "${devices}"
}

# Counts this machine's GPUs with nvidia-smi; a dry run on a machine without it assumes one GPU.
count_gpus() {
  if command -v nvidia-smi >/dev/null; then
    local gpus count=0 line
    gpus="$(nvidia-smi --list-gpus)" || die "nvidia-smi --list-gpus failed; pass --num_gpus=N"
    while IFS= read -r line; do
      [[ "${line}" != "GPU "* ]] || count=$((count + 1))
    done <<<"${gpus}"
    ((count > 0)) || die "nvidia-smi lists no GPUs; pass --num_gpus=N or use launch/cpu.sh"
    printf '%s' "${count}"
  elif ((DRY_RUN)); then
    printf '1'
  else
    die "nvidia-smi not found: this machine has no NVIDIA driver (use launch/cpu.sh), or pass --num_gpus=N"
  fi
}

main "$@"
