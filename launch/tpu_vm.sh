#!/usr/bin/env bash
# Cloud TPU VM launcher: creates a TPU slice, ships this repo to every worker, installs the pinned packages
# with jax[tpu], and runs python -m lumiere_jax.{train,sample} on all workers at once (one multi-host JAX job).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "${BASH_SOURCE[0]%/*}/common.sh"

usage() {
  print_stdin <<EOF
Usage: launch/tpu_vm.sh COMMAND [flags]

Commands:
  create   create the TPU VM slice (or queue it with --queued and wait until it is ACTIVE); Autocheckpoint on
  setup    copy the working tree to every worker and install the pinned packages + jax[tpu] in ~/lumiere_venv
  run      start the train/sample job on every worker (in the background, logging to ~/lumiere_jax_logs/MODE.log)
  launch   create + setup + run; with --max_restarts=N it stays attached to the job and, when the slice is
           preempted, re-creates it, sets it up and reruns the job (up to N times)
  logs     follow the job's log on one worker (--worker=N, default 0)
  ssh      open a shell on one worker (--worker=N, default 0)
  stop     kill the train/sample processes on every worker
  delete   delete the TPU VM (with --queued: the queued resource and its TPU)

TPU flags:
  --project=PROJECT        Google Cloud project (required)
  --zone=ZONE              zone with the TPU quota, e.g. us-east5-a (required)
  --name=NAME              TPU (and queued-resource) name (required)
  --accelerator_type=TYPE  e.g. v4-8, v5p-128, v6e-256 (required by create/launch; picks the default mesh file
                           gin_configs/mesh/<TYPE>.gin, e.g. v5p-128.gin)
  --runtime_version=VER    TPU software version (default by generation: v4 tpu-ubuntu2204-base,
                           v5p v2-alpha-tpuv5, v5litepod v2-alpha-tpuv5-lite, v6e v2-alpha-tpuv6e)
  --queued                 create the slice as a queued resource (waits in the queue for capacity)
  --spot                   spot capacity (preemptible; checkpoints in --model_dir make restarts cheap)
  --reserved               capacity from the project's reservation
  --best_effort            best-effort capacity (preemptible; queued resources only)
  --no_autocheckpoint      create without --autocheckpoint-enabled (Autocheckpoint: on a maintenance event
                           the job gets SIGTERM and up to 5 minutes to save before the slice goes down)
  --max_restarts=N         launch: relaunch after up to N preemptions (default 0: start the job and return)
  --poll_seconds=S         seconds between state checks while queued, and before checking the slice after
                           the job ends (default 60)
  --python=python3.11      interpreter for the venv on the workers; installed with apt when missing
  --worker=N               worker for logs/ssh (default 0)
  --foreground             run: stream the job's output here instead of running it under nohup

${RUN_FLAGS_HELP}

--model_dir must be on gs://: all workers share checkpoints and summaries there.

Example (spot capacity through the queue, relaunched after up to 20 preemptions):
  launch/tpu_vm.sh launch --project=my-proj --zone=us-east5-a --name=lumiere-v5p --accelerator_type=v5p-128 \\
    --queued --spot --max_restarts=20 --run_gin=gin_configs/runs/train_stunet.gin \\
    --model_dir=gs://my-bucket/lumiere/stunet --gin.T2I_CHECKPOINT="'gs://my-bucket/lumiere/t2i'"
EOF
}

COMMANDS="create, setup, run, launch, logs, ssh, stop, delete"

main() {
  local command="${1:-}"
  case "${command}" in
    create | setup | run | launch | logs | ssh | stop | delete) shift ;;
    -h | --help) usage; return 0 ;;
    "" | -*) die "missing command (the first argument): one of ${COMMANDS}; see --help" ;;
    *) die "unknown command '${command}': one of ${COMMANDS}; see --help" ;;
  esac

  PROJECT="" ZONE="" NAME="" ACCELERATOR_TYPE="" RUNTIME_VERSION="" PYTHON_BIN="python3.11" WORKER=0
  QUEUED=0 CAPACITY="" AUTOCHECKPOINT=1 MAX_RESTARTS=0 POLL_SECONDS=60 FOREGROUND=0 CODE_PACKED=0
  local arg
  for arg in "$@"; do
    case "${arg}" in
      -h | --help) usage; return 0 ;;
      --project=*) PROJECT="${arg#*=}" ;;
      --zone=*) ZONE="${arg#*=}" ;;
      --name=*) NAME="${arg#*=}" ;;
      --accelerator_type=*) ACCELERATOR_TYPE="${arg#*=}" ;;
      --runtime_version=*) RUNTIME_VERSION="${arg#*=}" ;;
      --python=*) PYTHON_BIN="${arg#*=}" ;;
      --worker=*) WORKER="${arg#*=}" ;;
      --queued) QUEUED=1 ;;
      --spot | --reserved | --best_effort) set_capacity "${arg}" ;;
      --no_autocheckpoint) AUTOCHECKPOINT=0 ;;
      --max_restarts=*) MAX_RESTARTS="${arg#*=}" ;;
      --poll_seconds=*) POLL_SECONDS="${arg#*=}" ;;
      --foreground) FOREGROUND=1 ;;
      *) parse_run_flag "${arg}" || unknown_flag "${arg}" ;;
    esac
  done

  require project "${PROJECT}" my-gcp-project
  require zone "${ZONE}" us-east5-a
  require name "${NAME}" lumiere-v5p
  [[ "${NAME}" =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]] \
    || die "--name=${NAME}: TPU names are lowercase letters, digits and '-', starting with a letter"
  [[ "${WORKER}" =~ ^[0-9]+$ ]] || die "--worker=${WORKER} must be a worker index (0, 1, ...)"
  [[ "${MAX_RESTARTS}" =~ ^[0-9]+$ ]] || die "--max_restarts=${MAX_RESTARTS} must be a non-negative integer"
  [[ "${POLL_SECONDS}" =~ ^[0-9]+$ ]] || die "--poll_seconds=${POLL_SECONDS} must be a number of seconds"
  ((MAX_RESTARTS == 0)) || [[ "${command}" == launch ]] \
    || die "--max_restarts applies to the launch command (it re-creates the slice), not to ${command}"
  [[ "${CAPACITY}" != --best-effort ]] || ((QUEUED)) \
    || die "--best_effort needs --queued: only queued resources offer best-effort capacity"
  GCLOUD_TARGET=("--zone=${ZONE}" "--project=${PROJECT}")

  # One step per line, not `a && b`: errexit is off inside functions called from an && list.
  case "${command}" in
    create) create_tpu ;;
    setup) setup_workers ;;
    run)
      validate_job
      run_job
      ;;
    launch)
      validate_job
      create_tpu
      setup_workers
      if ((MAX_RESTARTS > 0)); then
        relaunch_loop
      else
        run_job
      fi
      ;;
    logs) run gcloud compute tpus tpu-vm ssh "${NAME}" "${GCLOUD_TARGET[@]}" "--worker=${WORKER}" \
      "--command=tail -n 200 -F ~/lumiere_jax_logs/${MODE}.log" ;;
    ssh) run gcloud compute tpus tpu-vm ssh "${NAME}" "${GCLOUD_TARGET[@]}" "--worker=${WORKER}" ;;
    stop) on_all_workers "pkill -f -- $(shell_quote '-m lumiere_jax[.](train|sample)') || true" ;;
    delete) delete_tpu ;;
  esac
}

# Capacity flags exclude one another; gcloud spells them --spot, --reserved, --best-effort.
set_capacity() {
  local flag="${1//_/-}"
  [[ -z "${CAPACITY}" || "${CAPACITY}" == "${flag}" ]] \
    || die "${1} and ${CAPACITY//-/_} exclude each other: choose one kind of capacity"
  CAPACITY="${flag}"
}

on_all_workers() {
  run gcloud compute tpus tpu-vm ssh "${NAME}" "${GCLOUD_TARGET[@]}" --worker=all "--command=$1"
}

default_runtime_version() {
  case "${ACCELERATOR_TYPE}" in
    v4-*) printf 'tpu-ubuntu2204-base' ;;
    v5p-*) printf 'v2-alpha-tpuv5' ;;
    v5litepod-*) printf 'v2-alpha-tpuv5-lite' ;;
    v6e-*) printf 'v2-alpha-tpuv6e' ;;
    *) die "no default runtime version for --accelerator_type=${ACCELERATOR_TYPE}; pass --runtime_version=..." ;;
  esac
}

validate_accelerator_type() {
  require accelerator_type "${ACCELERATOR_TYPE}" v5p-128
  [[ "${ACCELERATOR_TYPE}" =~ ^v[0-9]+[a-z]*-[0-9]+$ ]] \
    || die "--accelerator_type=${ACCELERATOR_TYPE} is not a TPU type like v4-8, v5p-128, v6e-256"
}

validate_job() {
  if [[ -z "${MESH_GIN}" && -n "${ACCELERATOR_TYPE}" ]]; then
    validate_accelerator_type
    use_default_mesh_gin "${ACCELERATOR_TYPE}" "--accelerator_type=${ACCELERATOR_TYPE}"
  fi
  [[ -n "${MESH_GIN}" ]] \
    || die "missing required flag --mesh_gin (or --accelerator_type=TYPE for gin_configs/mesh/<TYPE>.gin)"
  validate_run_flags
  require_gcs_model_dir
}

create_tpu() {
  validate_accelerator_type
  local version="${RUNTIME_VERSION}" options=()
  [[ -n "${version}" ]] || version="$(default_runtime_version)"
  [[ -z "${CAPACITY}" ]] || options+=("${CAPACITY}")
  ((AUTOCHECKPOINT == 0)) || options+=(--autocheckpoint-enabled)
  # --autocheckpoint-enabled and --best-effort exist only in gcloud's alpha track (gcloud reference, checked
  # 2026-11); the plain track is used when neither is asked for.
  local gcloud=(gcloud)
  if ((AUTOCHECKPOINT)) || [[ "${CAPACITY}" == --best-effort ]]; then
    gcloud=(gcloud alpha)
  fi
  if ((QUEUED)); then
    run "${gcloud[@]}" compute tpus queued-resources create "${NAME}" "--node-id=${NAME}" "${GCLOUD_TARGET[@]}" \
      "--accelerator-type=${ACCELERATOR_TYPE}" "--runtime-version=${version}" "${options[@]}" --quiet
    wait_until_active
  else
    run "${gcloud[@]}" compute tpus tpu-vm create "${NAME}" "${GCLOUD_TARGET[@]}" \
      "--accelerator-type=${ACCELERATOR_TYPE}" "--version=${version}" "${options[@]}" --quiet
  fi
}

# The command printing the slice's state: the queued resource's (ACTIVE when usable) or the TPU VM's (READY).
describe_command() {
  if ((QUEUED)); then
    DESCRIBE=(gcloud compute tpus queued-resources describe "${NAME}" "${GCLOUD_TARGET[@]}"
      "--format=value(state.state)")
    USABLE_STATE=ACTIVE
  else
    DESCRIBE=(gcloud compute tpus tpu-vm describe "${NAME}" "${GCLOUD_TARGET[@]}" "--format=value(state)")
    USABLE_STATE=READY
  fi
}

# Prints the slice's state (after describe_command), or NOT_FOUND when it cannot be described (deleted).
slice_state() {
  local state
  state="$("${DESCRIBE[@]}")" || state=NOT_FOUND
  printf '%s' "${state:-NOT_FOUND}"
}

wait_until_active() {
  describe_command
  if ((DRY_RUN)); then
    note "repeat every ${POLL_SECONDS} s until the state is ACTIVE:"
    run "${DESCRIBE[@]}"
    return 0
  fi
  local state
  while true; do
    state="$("${DESCRIBE[@]}")"
    case "${state}" in
      ACTIVE) note "queued resource ${NAME} is ACTIVE" && return 0 ;;
      FAILED | SUSPENDED) die "queued resource ${NAME} is ${state}; see: ${DESCRIBE[*]:0:6} ${NAME} --zone=${ZONE}" ;;
      *) note "queued resource ${NAME} is ${state:-not yet listed}; waiting" && sleep "${POLL_SECONDS}" ;;
    esac
  done
}

setup_workers() {
  [[ "${PYTHON_BIN}" =~ ^python3(\.[0-9]+)?$ ]] || die "--python=${PYTHON_BIN} must look like python3.11"
  local tarball="${TMPDIR:-/tmp}/lumiere_jax_${NAME}.tar.gz"
  local jax_version
  jax_version="$(pinned_version jax)"
  # Packed once per invocation: a relaunch ships the code the job started with, not later edits.
  if ((CODE_PACKED == 0)); then
    make_code_tarball "${tarball}"
    CODE_PACKED=1
  fi
  run gcloud compute tpus tpu-vm scp "${tarball}" "${NAME}:lumiere_jax.tar.gz" "${GCLOUD_TARGET[@]}" --worker=all
  local apt_install="sudo apt-get install -y -q -o DPkg::Lock::Timeout=600 ${PYTHON_BIN} ${PYTHON_BIN}-venv"
  # Tildes stay literal here: these steps run in the workers' shells, where ~ is the worker's home.
  # shellcheck disable=SC2088
  local steps=(
    "set -e"
    "command -v ${PYTHON_BIN} >/dev/null || { sudo apt-get update -q && ${apt_install}; }"
    "rm -rf ~/lumiere_jax && mkdir -p ~/lumiere_jax && tar -xzf ~/lumiere_jax.tar.gz -C ~/lumiere_jax"
    "${PYTHON_BIN} -m venv ~/lumiere_venv"
    "~/lumiere_venv/bin/pip -q install --upgrade pip"
    "cd ~/lumiere_jax"
    "~/lumiere_venv/bin/pip -q install -r requirements.txt $(shell_quote "jax[tpu]==${jax_version}")"
    "~/lumiere_venv/bin/pip -q install --no-deps -e ."
  )
  local joined
  printf -v joined '%s; ' "${steps[@]}"
  on_all_workers "${joined%; }"
}

run_job() {
  build_entry_args
  # shellcheck disable=SC2088  # ~ is expanded by the workers' shells
  local env_prefix="" log="~/lumiere_jax_logs/${MODE}.log"
  ((${#ENV_VARS[@]} == 0)) || env_prefix="env $(quote_words "${ENV_VARS[@]}") "
  local job
  job="${env_prefix}~/lumiere_venv/bin/python $(quote_words "${ENTRY_ARGS[@]}")"
  if ((FOREGROUND)); then
    on_all_workers "cd ~/lumiere_jax && ${job}"
  else
    on_all_workers "cd ~/lumiere_jax && mkdir -p ~/lumiere_jax_logs && nohup ${job} >${log} 2>&1 </dev/null &"
    note "started on all workers; follow worker 0 with:" \
      "launch/tpu_vm.sh logs --project=${PROJECT} --zone=${ZONE} --name=${NAME} --mode=${MODE}"
  fi
}

# launch --max_restarts=N: runs the job attached to every worker; when it ends, looks at the slice. A usable
# slice means the job ended by itself: done (exit 0) or failed (its exit status, no relaunch: rerunning a
# crash would crash again). Any other state (preempted, suspended, failed, deleted) means the slice was
# taken away: re-create it, set it up and rerun the same command, which resumes from --model_dir.
relaunch_loop() {
  FOREGROUND=1
  describe_command
  if ((DRY_RUN)); then
    print_relaunch_loop
    return 0
  fi
  local restarts=0 status state
  while true; do
    status=0
    run_job || status=$?
    # A preempted slice can still look usable for a moment after the job's connection drops.
    sleep "${POLL_SECONDS}"
    state="$(slice_state)"
    if [[ "${state}" == "${USABLE_STATE}" ]]; then
      if ((status == 0)); then
        note "the job finished on ${NAME} after ${restarts} relaunch(es)"
        return 0
      fi
      printf 'error: %s %s\n' "the job failed with exit status ${status} while slice ${NAME} is ${state}: not a" \
        "preemption, so it is not rerun. Fix the cause, then 'setup' and 'run' again on the same slice." >&2
      return "${status}"
    fi
    if ((restarts == MAX_RESTARTS)); then
      printf 'error: %s %s\n' "slice ${NAME} is ${state} (preempted) and --max_restarts=${MAX_RESTARTS} relaunches" \
        "are used up. To go on (from --model_dir): 'delete' what is left of the slice, then 'launch' again." >&2
      return 1
    fi
    restarts=$((restarts + 1))
    note "slice ${NAME} is ${state} (job exit status ${status}): preempted; relaunch ${restarts} of ${MAX_RESTARTS}"
    [[ "${state}" == NOT_FOUND ]] || delete_tpu
    create_tpu
    setup_workers
  done
}

print_relaunch_loop() {
  note "relaunch loop, up to --max_restarts=${MAX_RESTARTS} times: run the job attached to every worker,"
  run_job
  note "then, after ${POLL_SECONDS} s, read the slice's state:"
  run "${DESCRIBE[@]}"
  note "${USABLE_STATE}: the job ended by itself; stop with its exit status. Any other state (or none): preempted;"
  note "re-create the slice, ship the same code tarball again and rerun the job above:"
  delete_tpu
  create_tpu
  setup_workers
}

delete_tpu() {
  if ((QUEUED)); then
    run gcloud compute tpus queued-resources delete "${NAME}" "${GCLOUD_TARGET[@]}" --force --quiet
  else
    run gcloud compute tpus tpu-vm delete "${NAME}" "${GCLOUD_TARGET[@]}" --quiet
  fi
}

main "$@"
