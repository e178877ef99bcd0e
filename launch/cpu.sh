#!/usr/bin/env bash
# Local CPU launcher for development: runs the same gin run files on this machine with the repo's venv,
# optionally faking several CPU devices so sharded meshes can be exercised without accelerators.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "${BASH_SOURCE[0]%/*}/common.sh"

usage() {
  print_stdin <<EOF
Usage: launch/cpu.sh [flags]

CPU flags:
  --fake_devices=N    expose N CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=N)
  --install           create/update the venv with requirements.txt and the repo (editable)
  --venv=PATH         virtualenv to install into and run from (default: <repo>/.venv)
  --xla_flags=FLAGS   XLA flags appended after the defaults and \$XLA_FLAGS

${RUN_FLAGS_HELP}

The mesh file defaults to gin_configs/mesh/cpu.gin. JAX_PLATFORMS=cpu is set.

Example:
  launch/cpu.sh --fake_devices=4 --run_gin=gin_configs/runs/pretrain_t2i.gin --gin_file=gin_configs/runs/cpu_tiny.gin \\
    --model_dir=/tmp/lumiere/t2i --gin.train.num_train_steps=20
EOF
}

main() {
  FAKE_DEVICES="" INSTALL=0 VENV="${REPO_ROOT}/.venv" EXTRA_XLA_FLAGS=""
  local arg
  for arg in "$@"; do
    case "${arg}" in
      -h | --help) usage; return 0 ;;
      --fake_devices=*) FAKE_DEVICES="${arg#*=}" ;;
      --install) INSTALL=1 ;;
      --venv=*) VENV="${arg#*=}" ;;
      --xla_flags=*) EXTRA_XLA_FLAGS="${arg#*=}" ;;
      *) parse_run_flag "${arg}" || unknown_flag "${arg}" ;;
    esac
  done
  use_default_mesh_gin cpu "CPU runs"
  validate_run_flags

  local default_xla_flags=()
  if [[ -n "${FAKE_DEVICES}" ]]; then
    [[ "${FAKE_DEVICES}" =~ ^[1-9][0-9]*$ ]] || die "--fake_devices=${FAKE_DEVICES} must be a positive integer"
    default_xla_flags+=("--xla_force_host_platform_device_count=${FAKE_DEVICES}")
  fi
  if ((INSTALL)); then
    install_local_venv "${VENV}"
  fi
  local cpu_env=(JAX_PLATFORMS=cpu)
  local xla_flags
  xla_flags="$(join_xla_flags "${default_xla_flags[@]}")"
  [[ -z "${xla_flags}" ]] || cpu_env+=("XLA_FLAGS=${xla_flags}")
  run_local_job "${VENV}" "${cpu_env[@]}"
}

main "$@"
