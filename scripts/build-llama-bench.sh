#!/usr/bin/env bash
# Builds llama.cpp's own `llama-bench` from the llama.cpp source vendored in the llama-cpp-sys-2
# crate the embedded engine links (same version, same ggml CPU flags as .cargo/config.toml), into
# $AUTOSAFE_HOME/tools/llama-bench-<version>/llama-bench. `autosafe bench engine` runs it as the
# reference. Idempotent; takes a few minutes on 2 cores. Needs cmake and a C++ compiler (setup.sh).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
source "$here/env.sh"
cd "$root"

manifest="$(cargo metadata --format-version 1 --locked | python3 -c '
import json, sys
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == "llama-cpp-sys-2":
        print(p["version"], p["manifest_path"])
        break
')"
version="${manifest%% *}"
src="$(dirname "${manifest#* }")/llama.cpp"
[ -d "$src" ] || { echo "build-llama-bench: no llama.cpp source at $src (run cargo fetch)" >&2; exit 1; }
dest="$AUTOSAFE_HOME/tools/llama-bench-$version"
if [ -x "$dest/llama-bench" ]; then
  exit 0
fi
mkdir -p "$dest"
# The same ggml CPU settings llama-cpp-sys-2 gets on x86-64 (baseline -march plus the AVX2 set).
cpu_flags=()
if [ "$(uname -m)" = x86_64 ]; then
  cpu_flags=(-DCMAKE_C_FLAGS=-march=x86-64 -DCMAKE_CXX_FLAGS=-march=x86-64
    -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON)
fi
echo "build-llama-bench: building llama-bench $version from $src" >&2
cmake -S "$src" -B "$dest/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF "${cpu_flags[@]}" \
  -DGGML_OPENMP=ON -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=ON >/dev/null
cmake --build "$dest/build" --target llama-bench -j "$(nproc)" >/dev/null
cp "$dest/build/bin/llama-bench" "$dest/llama-bench"
echo "build-llama-bench: $dest/llama-bench" >&2
