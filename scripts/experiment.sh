#!/usr/bin/env bash
# The paper's experiment at laptop scale, in one command (issue #17, docs/experiment.md):
# teacher data → fine-tune the student → Sec@k and helpfulness of base vs fine-tuned student on
# held-apart real terminal scenarios (checkers as referee), and on held-apart ToolEmu cases
# (an LLM evaluator: a noisy judge) → compare + report.
#
#   ./scripts/experiment.sh [RUN_DIR]          (default runs/experiment)
#
# Phases (each resumes where a killed run stopped: `autosafe run` and the eval runners skip what
# is on file, `autosafe train` skips a finished training):
# 1. teacher   `autosafe run --config $EXP_CONFIG` (configs/experiment.toml: the 1.5B in every
#              role on the 20 terminal scenarios the split does not hold apart; checker labels).
# 2. sft       `autosafe train --held-apart data/experiment/split.toml` on the teacher's data:
#              the held-apart items go to TEACHER/heldout/ and training refuses a leak; LoRA with
#              TRL on the student GGUF, merged, written back as Q8_0 GGUF (and the base at Q8_0).
# 3. dpo       (EXP_DPO=1) `autosafe train --method dpo` on the preference pairs, from the SFT model.
# 4. eval      for base, sft (and dpo): `autosafe eval snapshots --env terminal --episodes` on the
#              held-apart terminal start states, k = EXP_K whole episodes each (Sec@1, Sec@k,
#              helpfulness from done_if); `autosafe eval toolemu` on the held-apart ToolEmu cases
#              (EXP_TOOLEMU_LIMIT of them; 0 skips).
# 5. report    `autosafe compare` / `autosafe report` base vs each fine-tuned model.
# Phase wall times go to RUN/times.tsv.
#
# Settings (environment): EXP_TEACHER (local:qwen2.5-coder-1.5b; the judge of the evaluations
# too), EXP_STUDENT (the 0.5B GGUF in the model cache), EXP_CONFIG, EXP_SAMPLES (teacher episodes
# per scenario, default: the config's), EXP_SCENARIOS (a directory of terminal scenarios for the
# teacher instead of the config's list; the cut-down test uses it), EXP_TRAIN_FLAGS (extra
# `autosafe train` flags, default "--epochs 3 --max-prompt-tokens 1024 --no-bf16"), EXP_DPO,
# EXP_K (3), EXP_TEMPERATURE (0.7), EXP_MAX_STEPS (6), EXP_LIMIT (held-apart terminal start
# states evaluated, 0 = all), EXP_TOOLEMU_LIMIT (10), EXP_CONCURRENCY (2), EXP_SPLIT,
# EXP_BASE_AGENT (1: the base is also evaluated under its own prompt, as `base-agent`).
# Needs: ./scripts/setup.sh (models, toolchain, bubblewrap) and ./scripts/setup-python.sh train.
# Honours AUTOSAFE_BIN (default: target/release/autosafe, built if missing).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
cd "$root"
source "$here/env.sh"

run="${1:-runs/experiment}"
bin="${AUTOSAFE_BIN:-target/release/autosafe}"
teacher="${EXP_TEACHER:-local:qwen2.5-coder-1.5b}"
student="${EXP_STUDENT:-$AUTOSAFE_MODEL_DIR/Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf}"
config="${EXP_CONFIG:-configs/experiment.toml}"
split="${EXP_SPLIT:-data/experiment/split.toml}"
train_flags="${EXP_TRAIN_FLAGS:---epochs 3 --max-prompt-tokens 1024 --no-bf16}"
k="${EXP_K:-3}"
temp="${EXP_TEMPERATURE:-0.7}"
steps="${EXP_MAX_STEPS:-6}"
limit="${EXP_LIMIT:-0}"
toolemu_limit="${EXP_TOOLEMU_LIMIT:-10}"
conc="${EXP_CONCURRENCY:-2}"
loop_tag=experiment
times="$run/times.tsv"
source "$here/loop.sh"
loop_setup

# 1. The teacher's data. The run directory is OUT/NAME of the config (name "teacher").
scen_flag=()
[ -n "${EXP_SCENARIOS:-}" ] && scen_flag=(--scenarios "$EXP_SCENARIOS")
if [ -n "${EXP_SAMPLES:-}" ]; then
  # A copy of the config with the samples asked; the teacher's run directory stays the same.
  sed "s/^samples = .*/samples = $EXP_SAMPLES/" "$config" > "$run/teacher.toml"
  config="$run/teacher.toml"
fi
log "teacher: $config → $run/teacher"
"$bin" run --config "$config" --out "$run" "${scen_flag[@]}"
data="$run/teacher"
phase teacher

# 2. SFT of the student; the split is written into the teacher's run and checked first.
log "sft: $student on $data (held apart: $split)"
# shellcheck disable=SC2086
"$bin" train --data "$data" --base "$student" --backend trl --held-apart "$split" \
  --merge --gguf q8_0 --name sft $train_flags
models=(base sft)
ggufs=("$data/train/sft/base-q8_0.gguf" "$data/train/sft/model-q8_0.gguf")
phase sft

# 3. DPO from the SFT model (optional).
if [ "${EXP_DPO:-0}" = 1 ]; then
  # From the SFT model's GGUF, so the DPO model is written back with the same metadata.
  log "dpo: from $data/train/sft/model-q8_0.gguf"
  # shellcheck disable=SC2086
  "$bin" train --data "$data" --base "$data/train/sft/model-q8_0.gguf" --backend trl --method dpo \
    --held-apart "$split" --merge --gguf q8_0 --name dpo $train_flags
  models+=(dpo)
  ggufs+=("$data/train/dpo/model-q8_0.gguf")
  phase dpo
fi

# 4. Evaluation of each model on the held-apart items, as the training records ask
#    (`--layout training`), sampled at EXP_TEMPERATURE so the k runs differ. The base is also
#    asked under its own ReAct prompt (`base-agent`, `--layout agent`; EXP_BASE_AGENT=0 skips):
#    a base that cannot follow the training layout measures nothing there (docs/experiment.md).
names=("${models[@]}")
paths=("${ggufs[@]}")
layouts=()
for _ in "${models[@]}"; do layouts+=(training); done
if [ "${EXP_BASE_AGENT:-1}" = 1 ]; then
  names+=(base-agent); paths+=("${ggufs[0]}"); layouts+=(agent)
fi
for i in "${!names[@]}"; do
  m="${names[$i]}" g="${paths[$i]}" layout="${layouts[$i]}"
  log "eval terminal ($m): k $k whole episodes per held-apart start state, checkers as referee"
  # shellcheck disable=SC2046
  "$bin" eval snapshots --agent "local:$g" --judge "$teacher" --env terminal --episodes \
    --k "$k" --temperature "$temp" --max-steps "$steps" --max-tokens 200 --layout "$layout" \
    --concurrency "$conc" $(lim "$limit") --run "$run/eval/$m-terminal" \
    "$data/heldout/terminal_snapshots.jsonl"
  phase "eval-$m-terminal"
  if [ "$toolemu_limit" -gt 0 ]; then
    log "eval toolemu ($m): $toolemu_limit held-apart cases, the teacher as emulator and evaluator"
    "$bin" eval toolemu --agent "local:$g" --emulator "$teacher" --evaluator "$teacher" \
      --cases "$data/heldout/cases.json" --temperature "$temp" --max-tokens 200 \
      --layout "$layout" --concurrency "$conc" --limit "$toolemu_limit" --run "$run/eval/$m-toolemu"
    phase "eval-$m-toolemu"
  fi
done

# 5. Before / after: McNemar on Sec@1 (sample 0 of the shared start states), and the reports;
#    each fine-tuned model against the base under the same layout, and against the base under
#    its own prompt where that was evaluated.
for m in "${models[@]:1}"; do
  "$bin" compare "$run/eval/base-terminal" "$run/eval/$m-terminal" --json > "$run/compare-$m-terminal.txt"
  cat "$run/compare-$m-terminal.txt" >&2
  if [ -d "$run/eval/base-agent-terminal" ]; then
    "$bin" compare "$run/eval/base-agent-terminal" "$run/eval/$m-terminal" --json \
      > "$run/compare-$m-vs-base-agent-terminal.txt"
  fi
  for kind in terminal toolemu; do
    [ -d "$run/eval/$m-$kind" ] || continue
    "$bin" report "$run/eval/base-$kind" "$run/eval/$m-$kind" -o "$run/report-$m-$kind.html"
  done
done
phase report
log "done in $(( $(date +%s) - t0 )) s; phases (s):"
cat "$times" >&2
