# Shared by the offline loops (smoke-train.sh, experiment.sh); sourced after env.sh with
# `here`, `loop_tag`, `run`, `bin` and `times` set. Gives `log`, `lim N` (a `--limit N` flag
# when N > 0), `phase NAME` (appends "NAME<TAB>seconds since the last phase" to `$times` and
# prints the totals) and `loop_setup` (model files, the train environment, the release binary).
# shellcheck shell=bash
log() { printf '%s: %s\n' "$loop_tag" "$*" >&2; }
lim() { [ "$1" -gt 0 ] && printf -- '--limit %s' "$1" || true; }
t0=$(date +%s)
tp=$t0
mkdir -p "$run"
phase() {
  local now; now=$(date +%s)
  printf '%s\t%s\n' "$1" "$((now - tp))" >> "$times"
  log "phase $1: $((now - tp)) s (total $((now - t0)) s)"
  tp=$now
}
loop_setup() {
  "$here/fetch-model.sh"
  "$here/setup-python.sh" train
  if [ ! -x "$bin" ]; then
    log "building $bin"
    cargo build --release --locked -p autosafe
  fi
  phase setup
}
