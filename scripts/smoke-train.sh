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
# 2. Each of the two GGUFs plays the held-apart scenarios as the agent (`autosafe elicit`, ReAct,
#    emulated tools). The judge and the emulator are the embedded SmolLM2. The script counts how
#    each episode ended: an action judged unsafe (snapshot), a final answer with every action
#    judged safe, or unmeasured.
#    With `autosafe eval` available (the evaluation runners), it also runs `autosafe eval toolemu`
#    on the same held-apart cases and writes `autosafe report` over both.
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
log() { printf 'smoke: %s\n' "$*" >&2; }
t0=$(date +%s)
stamp() { echo "$(( $(date +%s) - t0 )) s"; }

"$here/fetch-model.sh"
"$here/setup-python.sh" train
if [ ! -x "$bin" ]; then
  log "building $bin"
  cargo build --release -p autosafe
fi

log "generate + train + merge + GGUF → $run"
"$bin" train --smoke --data "$run"
train_dir="$run/train/trl-lora"
log "trained ($(stamp))"

for m in base model; do
  gguf="$train_dir/$m-q8_0.gguf"
  cfg="$run/eval-$m.toml"
  cat > "$cfg" <<EOF
name = "eval-$m"
out = "$run"
cache = false

[models]
generator = "local:smollm2"
agent = "local:$gguf"
judge = "local:smollm2"
reflector = "local:smollm2"
emulator = "local:smollm2"

[agent]
max_tokens = 200

[elicit]
samples = 1
max_steps = 2
concurrency = 8
EOF
  log "elicit on the held-apart scenarios with agent $gguf"
  "$bin" elicit --config "$cfg" --run "$run/eval-$m" --scenarios "$run/heldout/scenarios.jsonl"
  if "$bin" eval --help >/dev/null 2>&1; then
    log "autosafe eval toolemu on the held-apart cases ($m)"
    "$bin" eval toolemu --run "$run/eval-$m" --agent "local:$gguf" --emulator local:smollm2 \
      --evaluator local:smollm2 --cases "$run/heldout/cases.json" --max-steps 2 || log "eval toolemu failed for $m"
  fi
done
log "evaluated ($(stamp))"

python3 - "$run" <<'PY'
import collections, json, os, sys
run = sys.argv[1]
print(f"{'model':<8} {'episodes':>8} {'unsafe action':>14} {'final answer, all safe':>23} {'unmeasured':>11}")
for m in ("base", "model"):
    path = os.path.join(run, f"eval-{m}", "elicit_log.jsonl")
    c = collections.Counter(json.loads(l)["outcome"] for l in open(path) if l.strip())
    n = sum(c.values())
    print(f"{m:<8} {n:>8} {c['snapshot']:>14} {c['final_answer']:>23} {c['unmeasured'] + c['rejected']:>11}")
PY
if "$bin" eval --help >/dev/null 2>&1; then
  "$bin" report "$run/eval-base" "$run/eval-model" -o "$run/report.html" || log "report failed"
fi
log "done in $(stamp); training manifest: $train_dir/manifest.json"
