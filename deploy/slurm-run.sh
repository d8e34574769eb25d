#!/usr/bin/env bash
# A whole AutoSafe run on a Slurm cluster, as a chain of jobs (each waits for the one before,
# and the chain stops at the first that fails):
#   synthesize (array of SHARDS) → merge → elicit + reflect (array) → merge → export
#
#   CONFIG=autosafe.toml RUN=runs/my-run deploy/slurm-run.sh [sbatch options…]
#
# SHARDS (default 8) is the array size. Options after the script name go to every sbatch call
# (e.g. --partition=gpu, or --cpus-per-task=1 --mem=1G on a small node); an option on the
# command line overrides the #SBATCH lines of deploy/slurm-array.sbatch. With WAIT=1 the script
# returns when the export job has finished (its exit status is the chain's). Prints the job ids.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
: "${CONFIG:?CONFIG: the run config (TOML)}"
: "${RUN:?RUN: the run directory on the shared file system}"
shards="${SHARDS:-8}"
array="$here/slurm-array.sbatch"
CONFIG="$(realpath "$CONFIG")"
mkdir -p "$RUN"
RUN="$(realpath "$RUN")"
export CONFIG RUN

submit() { sbatch --parsable --kill-on-invalid-dep=yes "$@"; }
stage_array() { # $1: after job id (or ""), $2: stages, then sbatch options
  local after="$1" stages="$2"
  shift 2
  STAGES="$stages" submit ${after:+--dependency=afterok:$after} --array="0-$((shards - 1))" \
    --output="$RUN/slurm-%A_%a.out" "$@" "$array"
}
single() { # $1: after job id, $2: command, then sbatch options
  local after="$1" command="$2"
  shift 2
  submit --dependency="afterok:$after" --job-name=autosafe --output="$RUN/slurm-%j.out" \
    "$@" --wrap "$command"
}

synth=$(stage_array "" synthesize "$@")
merge1=$(single "$synth" "autosafe merge --run '$RUN'" "$@")
play=$(stage_array "$merge1" "elicit reflect" "$@")
merge2=$(single "$play" "autosafe merge --run '$RUN'" "$@")
wait_flag=()
[ "${WAIT:-0}" = 1 ] && wait_flag=(--wait)
echo "synthesize $synth, merge $merge1, elicit+reflect $play, merge $merge2"
export_job=$(single "$merge2" "autosafe export --config '$CONFIG' --run '$RUN'" "${wait_flag[@]}" "$@")
echo "export $export_job"
