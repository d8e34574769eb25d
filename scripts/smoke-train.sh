#!/usr/bin/env bash
# The offline loop on a CPU, in one command: generate -> train -> merge -> GGUF -> evaluate
# base vs fine-tuned.
#
#   ./scripts/smoke-train.sh [RUN_DIR]        (default runs/smoke)
#
# 1. `autosafe train --smoke` writes 32 templated D_safe records and 8 held-apart ToolEmu cases
#    (data/smoke/safe_turn.toml), then LoRA-trains SmolLM2-135M-Instruct for 30 steps with TRL.
#    The base weights come from the embedded GGUF, which transformers dequantizes. The script then
#    merges the adapter and writes the merged model back as Q8_0 GGUF, plus the base at Q8_0, so
#    both compare at one precision.
# 2. Held apart: `autosafe train --smoke` checks that no held-apart scenario shares an id, case
#    name or instruction with a training record; this script checks again against the exported
#    training file itself (each held-apart instruction must not occur in it) and prints the count.
# 3. Each of the two GGUFs is evaluated by `autosafe eval snapshots` (the judge is the embedded
#    SmolLM2). Both agents get the prompt the training records carry (`--layout training`: the
#    exported Alpaca input, "… for this round (round k)"), greedy (SMOKE_TEMPERATURE, default 0):
#    - on the 8 held-apart ToolEmu start states (RUN/heldout/snapshots.jsonl), k samples each,
#      emulated tools (SMOKE_K, default 1: at temperature 0 more samples are the same sample);
#    - on 6 shipped terminal scenarios' start states (RUN/heldout/terminal_snapshots.jsonl) with
#      `--env terminal --helpfulness`: k samples judged (SMOKE_TERMINAL_K, default 1), then a
#      continuation whose commands really run in the bubblewrap sandbox, up to
#      SMOKE_TERMINAL_STEPS (default 2) turns, its completion decided by the scenario's checkers
#      where they can tell.
# 4. `autosafe compare` and `autosafe report` over base (before) and fine-tuned (after), for each
#    of the two: RUN/report.html and RUN/report-terminal.html (McNemar on the shared snapshots).
# Phase wall times go to RUN/smoke_times.tsv and are printed at the end.
#
# Needs: ./scripts/setup.sh (model, toolchain) and ./scripts/setup-python.sh train (~6 GB venv).
# Honours AUTOSAFE_BIN (default: target/release/autosafe, built if missing).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
cd "$root"
source "$here/env.sh"

run="${1:-runs/smoke}"
bin="${AUTOSAFE_BIN:-target/release/autosafe}"
k="${SMOKE_K:-1}"
temp="${SMOKE_TEMPERATURE:-0}"
tk="${SMOKE_TERMINAL_K:-1}"
tsteps="${SMOKE_TERMINAL_STEPS:-2}"
# Snapshots evaluated (the first N of each file; 0 = all) and requests in flight.
limit="${SMOKE_LIMIT:-0}"
tlimit="${SMOKE_TERMINAL_LIMIT:-0}"
conc="${SMOKE_CONCURRENCY:-2}"
loop_tag=smoke
times="$run/smoke_times.tsv"
source "$here/loop.sh"
: > "$times"
loop_setup

log "generate + train + merge + GGUF → $run"
"$bin" train --smoke --data "$run"
train_dir="$run/train/trl-lora"
phase train

# The held-apart states must not be in what the model was trained on: look for each held-apart
# instruction in the exported training file itself.
python3 - "$run" "$train_dir/data/alpaca/autosafe_alpaca.jsonl" <<'PY'
import json, sys
run, train_file = sys.argv[1], sys.argv[2]
train = [json.loads(l) for l in open(train_file) if l.strip()]
text = "\n".join(json.dumps(r, ensure_ascii=False) for r in train)
held = []
for name in ("snapshots.jsonl", "terminal_snapshots.jsonl"):
    for l in open(f"{run}/heldout/{name}"):
        if l.strip():
            case = json.loads(l)["scenario"]["case"]
            held.append((name, case["name"], case["User Instruction"]))
def found(instr):
    return json.dumps(instr, ensure_ascii=False)[1:-1] in text
# The search must find what was trained on: every training record's own instruction.
own = [json.loads(l)["scenario"]["case"]["User Instruction"] for l in open(f"{run}/safe.jsonl") if l.strip()]
if not all(map(found, own)):
    sys.exit(f"smoke: held-apart check is blind: {sum(map(found, own))} of {len(own)} training instructions found")
inside = [(n, c) for n, c, instr in held if found(instr)]
print(f"smoke: held apart: {len(held)} held-apart start states "
      f"({sum(n == 'snapshots.jsonl' for n, _, _ in held)} ToolEmu, "
      f"{sum(n != 'snapshots.jsonl' for n, _, _ in held)} terminal), "
      f"{len(train)} training records in {train_file}: {len(inside)} of their instructions found in the "
      f"training data (all {len(own)} training instructions are found there)",
      file=sys.stderr)
if inside:
    sys.exit(f"smoke: held-apart cases are in the training data: {inside}")
PY

for m in base model; do
  gguf="$train_dir/$m-q8_0.gguf"
  log "eval snapshots (emulator judge, k $k) with agent $gguf"
  # shellcheck disable=SC2046
  "$bin" eval snapshots --agent "local:$gguf" --judge local:smollm2 --k "$k" --max-tokens 200 \
    --layout training --temperature "$temp" --concurrency "$conc" $(lim "$limit") --run "$run/eval/$m" "$run/heldout/snapshots.jsonl"
  phase "eval-$m"
  log "eval snapshots --env terminal --helpfulness (k $tk, $tsteps steps) with agent $gguf"
  # shellcheck disable=SC2046
  "$bin" eval snapshots --agent "local:$gguf" --judge local:smollm2 --k "$tk" --max-tokens 200 \
    --layout training --temperature "$temp" --env terminal --helpfulness --max-steps "$tsteps" --concurrency "$conc" $(lim "$tlimit") \
    --run "$run/eval/$m-terminal" "$run/heldout/terminal_snapshots.jsonl"
  phase "eval-$m-terminal"
done

for suffix in "" "-terminal"; do
  "$bin" compare "$run/eval/base$suffix" "$run/eval/model$suffix"
  "$bin" report "$run/eval/base$suffix" "$run/eval/model$suffix" -o "$run/report$suffix.html"
done
phase report
log "done in $(( $(date +%s) - t0 )) s; phases (s):"
cat "$run/smoke_times.tsv" >&2
log "training manifest: $train_dir/manifest.json; reports: $run/report.html, $run/report-terminal.html"
