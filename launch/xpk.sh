#!/usr/bin/env bash
# GKE launcher through XPK: submits the same train/sample run as a JobSet workload on an existing XPK cluster
# of TPU slices (xpk builds the image from this repo, pushes it, and starts one pod per TPU VM of each slice).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "${BASH_SOURCE[0]%/*}/common.sh"

usage() {
  print_stdin <<EOF
Usage: launch/xpk.sh COMMAND [flags]

Commands:
  create   submit the workload (xpk workload create)
  delete   delete the workload (xpk workload delete)

XPK flags:
  --project=PROJECT          Google Cloud project (required)
  --zone=ZONE                zone of the cluster's TPU node pools, e.g. us-east5-a (required)
  --cluster=CLUSTER          XPK cluster (created beforehand with xpk cluster create) (required)
  --workload=NAME            workload name: lowercase letters, digits and '-' (required)
  --tpu_type=TYPE            slice type, e.g. v5p-128 (required by create)
  --num_slices=N             slices joined over the data-center network (default 1); the mesh needs an
                             axis over the slices (the default <type>x<N>.gin has one)
  --base_docker_image=IMAGE  image xpk adds the code to (default python:3.11); packages are installed at start
  --docker_image=IMAGE       prebuilt image holding this repo (as its working directory) and its packages:
                             nothing is copied or installed, the job starts right away
  --priority=PRIORITY        very-low|low|medium|high|very-high (default medium)
  --max_restarts=N           JobSet restarts after a failure (default 0): a preempted or failed node, or a job
                             killed by SIGTERM (exit status 143); each restart resumes from --model_dir
  --restart_on_user_code_failure  also restart when the job itself exits non-zero (XPK otherwise reports a
                             crashed job as finished); each crash uses up one of --max_restarts
  --termination_grace_period_s=S  seconds a pod has after SIGTERM (XPK's default: 30) to save a checkpoint

${RUN_FLAGS_HELP}

The mesh file defaults to gin_configs/mesh/<type>.gin for one slice (e.g. v5p-128.gin) and
gin_configs/mesh/<type>x<N>.gin for N slices (e.g. v5p-128x2.gin). --model_dir must be on gs://.

Example:
  launch/xpk.sh create --project=my-proj --zone=us-east5-a --cluster=lumiere --workload=stunet-1 \\
    --tpu_type=v5p-128 --run_gin=gin_configs/runs/train_stunet.gin --model_dir=gs://my-bucket/lumiere/stunet
EOF
}

main() {
  local command="${1:-}"
  case "${command}" in
    create | delete) shift ;;
    -h | --help) usage; return 0 ;;
    "" | -*) die "missing command (the first argument): create or delete; see --help" ;;
    *) die "unknown command '${command}': create or delete; see --help" ;;
  esac

  PROJECT="" ZONE="" CLUSTER="" WORKLOAD="" TPU_TYPE="" NUM_SLICES=1 BASE_DOCKER_IMAGE="python:3.11"
  DOCKER_IMAGE="" PRIORITY="medium" MAX_RESTARTS=0 RESTART_ON_USER_CODE_FAILURE=0 GRACE_PERIOD_S=""
  local arg
  for arg in "$@"; do
    case "${arg}" in
      -h | --help) usage; return 0 ;;
      --project=*) PROJECT="${arg#*=}" ;;
      --zone=*) ZONE="${arg#*=}" ;;
      --cluster=*) CLUSTER="${arg#*=}" ;;
      --workload=*) WORKLOAD="${arg#*=}" ;;
      --tpu_type=*) TPU_TYPE="${arg#*=}" ;;
      --num_slices=*) NUM_SLICES="${arg#*=}" ;;
      --base_docker_image=*) BASE_DOCKER_IMAGE="${arg#*=}" ;;
      --docker_image=*) DOCKER_IMAGE="${arg#*=}" ;;
      --priority=*) PRIORITY="${arg#*=}" ;;
      --max_restarts=*) MAX_RESTARTS="${arg#*=}" ;;
      --restart_on_user_code_failure) RESTART_ON_USER_CODE_FAILURE=1 ;;
      --termination_grace_period_s=*) GRACE_PERIOD_S="${arg#*=}" ;;
      *) parse_run_flag "${arg}" || unknown_flag "${arg}" ;;
    esac
  done

  require project "${PROJECT}" my-gcp-project
  require zone "${ZONE}" us-east5-a
  require cluster "${CLUSTER}" lumiere
  require workload "${WORKLOAD}" stunet-1
  [[ "${WORKLOAD}" =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]] \
    || die "--workload=${WORKLOAD}: workload names are lowercase letters, digits and '-', starting with a letter"
  XPK_TARGET=("--cluster=${CLUSTER}" "--workload=${WORKLOAD}" "--project=${PROJECT}" "--zone=${ZONE}")

  case "${command}" in
    create) create_workload ;;
    delete) run xpk workload delete "${XPK_TARGET[@]}" ;;
  esac
}

validate_create_flags() {
  require tpu_type "${TPU_TYPE}" v5p-128
  [[ "${TPU_TYPE}" =~ ^v[0-9]+[a-z]*-[0-9]+$ ]] || die "--tpu_type=${TPU_TYPE} is not a TPU type like v5p-128"
  [[ "${NUM_SLICES}" =~ ^[1-9][0-9]*$ ]] || die "--num_slices=${NUM_SLICES} must be a positive integer"
  [[ "${MAX_RESTARTS}" =~ ^[0-9]+$ ]] || die "--max_restarts=${MAX_RESTARTS} must be a non-negative integer"
  if ((RESTART_ON_USER_CODE_FAILURE && MAX_RESTARTS == 0)); then
    die "--restart_on_user_code_failure needs --max_restarts=N with N > 0"
  fi
  [[ -z "${GRACE_PERIOD_S}" || "${GRACE_PERIOD_S}" =~ ^[0-9]+$ ]] \
    || die "--termination_grace_period_s=${GRACE_PERIOD_S} must be a number of seconds"
  case "${PRIORITY}" in
    very-low | low | medium | high | very-high) ;;
    *) die "--priority=${PRIORITY} must be one of very-low, low, medium, high, very-high" ;;
  esac
  if ((NUM_SLICES == 1)); then
    use_default_mesh_gin "${TPU_TYPE}" "--tpu_type=${TPU_TYPE}"
  else
    # A multi-slice mesh needs an axis over the slices (MeshConfig.dcn_shape): its own file, <type>x<slices>.gin.
    use_default_mesh_gin "${TPU_TYPE}x${NUM_SLICES}" "--tpu_type=${TPU_TYPE} --num_slices=${NUM_SLICES}"
  fi
  validate_run_flags
  require_gcs_model_dir
}

create_workload() {
  validate_create_flags
  build_entry_args
  local job
  job="python $(quote_words "${ENTRY_ARGS[@]}")"
  local image_flags
  if [[ -n "${DOCKER_IMAGE}" ]]; then
    image_flags=("--docker-image=${DOCKER_IMAGE}")
  else
    local jax_version
    jax_version="$(pinned_version jax)"
    local stage="${TMPDIR:-/tmp}/lumiere_jax_xpk_${WORKLOAD}"
    local tarball="${stage}.tar.gz"
    note "staging the working tree (without .venv and .git) as the image's /app"
    make_code_tarball "${tarball}"
    run rm -rf "${stage}"
    run mkdir -p "${stage}"
    run tar -xzf "${tarball}" -C "${stage}"
    image_flags=("--base-docker-image=${BASE_DOCKER_IMAGE}" "--script-dir=${stage}")
    local install_tpu
    install_tpu="pip install -q -r requirements.txt $(shell_quote "jax[tpu]==${jax_version}")"
    job="${install_tpu} && pip install -q --no-deps -e . && ${job}"
  fi
  local restart_flags=("--max-restarts=${MAX_RESTARTS}")
  ((RESTART_ON_USER_CODE_FAILURE == 0)) || restart_flags+=(--restart-on-user-code-failure)
  [[ -z "${GRACE_PERIOD_S}" ]] || restart_flags+=("--termination-grace-period-seconds=${GRACE_PERIOD_S}")
  local env_flags=() env_var
  for env_var in "${ENV_VARS[@]}"; do
    env_flags+=("--env=${env_var}")
  done
  run xpk workload create "${XPK_TARGET[@]}" "--tpu-type=${TPU_TYPE}" "--num-slices=${NUM_SLICES}" \
    "${image_flags[@]}" "--priority=${PRIORITY}" "${restart_flags[@]}" "${env_flags[@]}" "--command=${job}"
}

main "$@"
