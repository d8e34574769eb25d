#!/usr/bin/env bash
# Creates a pinned Python virtual environment under $AUTOSAFE_HOME/venv/<name> from
# python/requirements-<name>.txt. Idempotent: a venv whose requirements file is unchanged is kept.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
source "$here/env.sh"

name="${1:?usage: setup-python.sh NAME (reads python/requirements-NAME.txt)}"
req="$root/python/requirements-$name.txt"
venv="$AUTOSAFE_VENV_DIR/$name"
[ -f "$req" ] || { echo "setup-python: no $req" >&2; exit 1; }
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
# Only llama-cpp-python (the llamacpp environment) builds with cmake: llama.cpp without the
# multimodal library nobody here uses (a shorter build), and without the AMX kernels that
# segfault on Q4_K_M weights (the reason is in .cargo/config.toml). GGML_NATIVE stays on, as in
# our own engine, so the benchmark compares like with like.
amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
export CMAKE_ARGS="${CMAKE_ARGS:-} -DLLAVA_BUILD=OFF '-DCMAKE_C_FLAGS=$amx' '-DCMAKE_CXX_FLAGS=$amx'"
echo "setup-python: creating $venv" >&2
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet -r "$req"
echo "$want" > "$stamp"
