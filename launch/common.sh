# shellcheck shell=bash disable=SC2034  # the variables set here are read by the launchers that source this file
# Shared pieces of the launchers (sourced, not run): flag parsing for the run itself, shell quoting,
# dry-run printing, and the `python -m lumiere_jax.{train,sample}` command line they all build.
#
# Dry-run contract: with --dry_run a launcher prints each command it would run, one per line, quoted so that
# the line can be pasted into bash; explanatory lines start with '#'. It needs no tool beyond bash itself.

LAUNCH_DIR="$(cd "${BASH_SOURCE[0]%/*}" && pwd)"
REPO_ROOT="$(cd "${LAUNCH_DIR}/.." && pwd)"

# Flags shared by every launcher (set by parse_run_flag).
MODE="train"
RUN_GIN=""
MESH_GIN=""
MODEL_DIR=""
GIN_SEARCH_PATHS=""
SHARD_ID=""
NUM_SHARDS=""
DRY_RUN=0
EXTRA_GIN_FILES=()
GIN_OVERRIDES=()
ENV_VARS=()

IFS= read -r -d '' RUN_FLAGS_HELP <<'EOF' || true
Run flags (all launchers; flags take the form --name=value):
  --mode=train|sample      entry point: python -m lumiere_jax.train or lumiere_jax.sample (default train)
  --run_gin=PATH           gin run file, relative to the repo root (e.g. gin_configs/runs/train_stunet.gin,
                           gin_configs/sample/base.gin to sample)
  --mesh_gin=PATH          gin mesh file (each launcher has a default, see above)
  --gin_file=PATH          extra gin file after the run and mesh files (repeatable)
  --gin_search_paths=DIRS  passed through to the entry point (comma-separated, relative to the repo root)
  --model_dir=DIR          passed as --gin.MODEL_DIR="'DIR'" (required to train; sampling reads
                           --gin.BASE_CHECKPOINT and writes --gin.OUTPUT_DIR instead)
  --gin.KEY=VALUE          gin override passed through unchanged (repeatable); quote gin strings as
                           --gin.KEY="'text'"
  --shard_id=N --num_shards=M   sample mode only: which part of the prompt list this job samples
  --env=NAME=VALUE         environment variable for the run (repeatable)
  --dry_run                print the commands instead of running them
EOF
RUN_FLAGS_HELP="${RUN_FLAGS_HELP%$'\n'}"

# Prints standard input, like cat, with bash alone (dry runs and --help need no other tool).
print_stdin() {
  local text
  IFS= read -r -d '' text || true
  printf '%s' "${text}"
}

die() {
  printf 'error: %s\n' "$*" >&2
  exit 2
}

# Quotes one word for bash: bare when safe, '...' when it has no single quote, "..." when it has single quotes
# but nothing double quotes would expand, else '...' with each ' written as '\''.
shell_quote() {
  local word="$1"
  if [[ -n "${word}" && "${word}" =~ ^[A-Za-z0-9_./:=,+@%-]+$ ]]; then
    printf '%s' "${word}"
  elif [[ "${word}" != *"'"* ]]; then
    printf "'%s'" "${word}"
  elif [[ "${word}" != *[\"\$\`\\!]* ]]; then
    printf '"%s"' "${word}"
  else
    printf "'%s'" "${word//\'/\'\\\'\'}"
  fi
}

# Quotes each argument and joins them with spaces.
quote_words() {
  local word quoted=()
  for word in "$@"; do
    quoted+=("$(shell_quote "${word}")")
  done
  printf '%s' "${quoted[*]}"
}

# Runs a command, or prints it under --dry_run. Real runs echo it to stderr first, like `set -x`.
run() {
  if ((DRY_RUN)); then
    printf '%s\n' "$(quote_words "$@")"
  else
    printf '+ %s\n' "$(quote_words "$@")" >&2
    "$@"
  fi
}

# Prints an explanatory line: a '#' comment on stdout under --dry_run, a progress line on stderr otherwise.
note() {
  if ((DRY_RUN)); then
    printf '# %s\n' "$*"
  else
    printf '==> %s\n' "$*" >&2
  fi
}

require() {
  local flag="$1" value="$2" example="$3"
  [[ -n "${value}" ]] || die "missing required flag --${flag} (e.g. --${flag}=${example}); see --help"
}

# Parses one shared run flag; returns 1 when the flag is not one of them.
parse_run_flag() {
  local arg="$1"
  case "${arg}" in
    --mode=*) MODE="${arg#*=}" ;;
    --run_gin=*) RUN_GIN="${arg#*=}" ;;
    --mesh_gin=*) MESH_GIN="${arg#*=}" ;;
    --gin_file=*) EXTRA_GIN_FILES+=("${arg#*=}") ;;
    --gin_search_paths=*) GIN_SEARCH_PATHS="${arg#*=}" ;;
    --model_dir=*) MODEL_DIR="${arg#*=}" ;;
    --gin.MODEL_DIR=*) die "pass the model directory as --model_dir=DIR, not ${arg%%=*}" ;;
    --gin.*=*) GIN_OVERRIDES+=("${arg}") ;;
    --shard_id=*) SHARD_ID="${arg#*=}" ;;
    --num_shards=*) NUM_SHARDS="${arg#*=}" ;;
    --env=*=*) ENV_VARS+=("${arg#*=}") ;;
    --dry_run) DRY_RUN=1 ;;
    *) return 1 ;;
  esac
}

unknown_flag() {
  local arg="$1"
  if [[ "${arg}" == --* && "${arg}" != *=* ]]; then
    die "unknown flag '${arg}': flags that take a value are written --name=value; see --help"
  fi
  die "unknown flag '${arg}'; see --help"
}

# Prints a gin file's path relative to the repo root (runs start there), failing if it does not exist.
repo_relative_gin() {
  local flag="$1" path="$2"
  path="${path#./}"
  if [[ "${path}" == "${REPO_ROOT}/"* ]]; then
    path="${path#"${REPO_ROOT}/"}"
  fi
  [[ "${path}" != /* ]] \
    || die "--${flag}=${path} is outside the repository; gin files must live in it (they are shipped with the code)"
  [[ -f "${REPO_ROOT}/${path}" ]] \
    || die "--${flag}: no gin file ${REPO_ROOT}/${path}; give a path relative to the repo root (see gin_configs/)"
  printf '%s' "${path}"
}

# Sets MESH_GIN, unless --mesh_gin gave one, to the mesh file named after the hardware:
# gin_configs/mesh/<hardware>.gin with <hardware> as gcloud/XPK name it (v5p-128, v5p-128x2 for two slices) or
# gpu_<N>, cpu. A missing default stops the launcher with the list of mesh files that do exist.
use_default_mesh_gin() {
  local hardware="$1" described_as="$2"
  [[ -z "${MESH_GIN}" ]] || return 0
  local path="gin_configs/mesh/${hardware}.gin"
  if [[ ! -f "${REPO_ROOT}/${path}" ]]; then
    local available=() file
    for file in "${REPO_ROOT}"/gin_configs/mesh/*.gin; do
      [[ ! -f "${file}" ]] || available+=("${file##*/}")
    done
    ((${#available[@]} > 0)) || available=("(none)")
    die "no default mesh file ${path} for ${described_as}; gin_configs/mesh/ has: ${available[*]}." \
      "Pass --mesh_gin=gin_configs/mesh/FILE.gin, or add ${path}"
  fi
  MESH_GIN="${path}"
}

# Checks the shared run flags once the launcher has set its default mesh file.
validate_run_flags() {
  [[ "${MODE}" == train || "${MODE}" == sample ]] || die "--mode=${MODE} must be train or sample"
  require run_gin "${RUN_GIN}" gin_configs/runs/train_stunet.gin
  require mesh_gin "${MESH_GIN}" gin_configs/mesh/cpu.gin
  # Training writes its checkpoints to MODEL_DIR; the sampler reads --gin.BASE_CHECKPOINT and writes
  # --gin.OUTPUT_DIR instead, so there MODEL_DIR is passed only when given.
  [[ "${MODE}" == sample ]] || require model_dir "${MODEL_DIR}" gs://my-bucket/lumiere/stunet
  RUN_GIN="$(repo_relative_gin run_gin "${RUN_GIN}")" || exit 2
  MESH_GIN="$(repo_relative_gin mesh_gin "${MESH_GIN}")" || exit 2
  local i
  for i in "${!EXTRA_GIN_FILES[@]}"; do
    EXTRA_GIN_FILES[i]="$(repo_relative_gin gin_file "${EXTRA_GIN_FILES[i]}")" || exit 2
  done
  if [[ -n "${SHARD_ID}${NUM_SHARDS}" ]]; then
    [[ "${MODE}" == sample ]] || die "--shard_id/--num_shards apply to --mode=sample only"
    [[ "${SHARD_ID}" =~ ^[0-9]+$ && "${NUM_SHARDS}" =~ ^[1-9][0-9]*$ ]] \
      || die "give both --shard_id=N and --num_shards=M as integers (got '${SHARD_ID}', '${NUM_SHARDS}')"
    ((SHARD_ID < NUM_SHARDS)) || die "--shard_id=${SHARD_ID} must be smaller than --num_shards=${NUM_SHARDS}"
  fi
}

require_gcs_model_dir() {
  if [[ -z "${MODEL_DIR}" && "${MODE}" == sample ]]; then
    return 0
  fi
  [[ "${MODEL_DIR}" == gs://?* ]] \
    || die "--model_dir=${MODEL_DIR} must be a gs:// path: every host of a pod reads and writes the same checkpoints"
}

# Sets ENTRY_ARGS to the trainer/sampler arguments (after `python`), T5X style: search paths if given, run
# file, mesh file, extra files, the MODEL_DIR macro as a gin string, then the overrides in the order given
# (later ones win).
build_entry_args() {
  ENTRY_ARGS=(-m "lumiere_jax.${MODE}")
  [[ -z "${GIN_SEARCH_PATHS}" ]] || ENTRY_ARGS+=("--gin_search_paths=${GIN_SEARCH_PATHS}")
  ENTRY_ARGS+=("--gin_file=${RUN_GIN}" "--gin_file=${MESH_GIN}")
  local gin_file
  for gin_file in "${EXTRA_GIN_FILES[@]}"; do
    ENTRY_ARGS+=("--gin_file=${gin_file}")
  done
  [[ -z "${MODEL_DIR}" ]] || ENTRY_ARGS+=("--gin.MODEL_DIR='${MODEL_DIR}'")
  ENTRY_ARGS+=("${GIN_OVERRIDES[@]}")
  if [[ -n "${NUM_SHARDS}" ]]; then
    ENTRY_ARGS+=("--shard_id=${SHARD_ID}" "--num_shards=${NUM_SHARDS}")
  fi
}

# Prints the version pinned for a package in requirements.txt (e.g. jax -> 0.10.2).
pinned_version() {
  local package="$1" line
  while IFS= read -r line; do
    if [[ "${line}" == "${package}=="* ]]; then
      printf '%s' "${line#*==}"
      return 0
    fi
  done <"${REPO_ROOT}/requirements.txt"
  die "requirements.txt pins no version of ${package}"
}

# The code tarball shipped to remote hosts: the working tree without virtualenvs, git data or caches.
make_code_tarball() {
  local tarball="$1"
  run tar -czf "${tarball}" -C "${REPO_ROOT}" --exclude=./.git --exclude=./.venv --exclude=__pycache__ \
    --exclude='*.egg-info' --exclude=./out .
}

# Creates (or updates) a local virtualenv with the pinned runtime packages, plus an accelerator extra such as
# "jax[cuda12]==0.10.2" when given, and the repo in editable mode (without deps: the pins are already in).
install_local_venv() {
  local venv="$1" accelerator_requirement="${2:-}"
  local pip_args=(-q install -r "${REPO_ROOT}/requirements.txt")
  [[ -z "${accelerator_requirement}" ]] || pip_args+=("${accelerator_requirement}")
  run "${PYTHON:-python3}" -m venv "${venv}"
  run "${venv}/bin/pip" -q install --upgrade pip
  run "${venv}/bin/pip" "${pip_args[@]}"
  run "${venv}/bin/pip" -q install --no-deps -e "${REPO_ROOT}"
}

# Runs the job on this machine from the repo root with the python of the venv given first; the other
# arguments are NAME=VALUE environment settings, applied before any --env ones.
run_local_job() {
  local python="$1/bin/python"
  shift
  build_entry_args
  ((DRY_RUN)) || [[ -x "${python}" ]] || die "no ${python}: create the venv with --install (or pass --venv=PATH)"
  run cd "${REPO_ROOT}" || die "cannot enter ${REPO_ROOT}"
  run env "$@" "${ENV_VARS[@]}" "${python}" "${ENTRY_ARGS[@]}"
}

# Joins XLA flags: the launcher's defaults, then XLA_FLAGS from the environment, then --xla_flags (later wins).
join_xla_flags() {
  local flags=("$@")
  [[ -z "${XLA_FLAGS:-}" ]] || flags+=("${XLA_FLAGS}")
  [[ -z "${EXTRA_XLA_FLAGS}" ]] || flags+=("${EXTRA_XLA_FLAGS}")
  printf '%s' "${flags[*]}"
}
