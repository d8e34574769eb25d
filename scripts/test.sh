#!/usr/bin/env bash
# Sets up everything (idempotent) and runs the whole test suite. `.ci/run` calls exactly this.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$(dirname "$here")"
"$here/setup.sh"
# The TRL environment: the real training tests (trl_script, the smoke loop) run in CI too.
"$here/setup-python.sh" train
# Real clients (openai, inspect-ai) that the serve tests drive against `autosafe serve`.
"$here/setup-python.sh" clients
# llama.cpp's server (llama-cpp-python), the third-party server the pipeline is tested against.
"$here/setup-python.sh" llamacpp
# The distributed path: a single-node Slurm cluster (Debian's packages) and a Kubernetes schema
# validator, for crates/autosafe/tests/deploy_cli.rs.
"$here/setup.sh" slurm
"$here/setup-python.sh" deploy
source "$here/env.sh"
cargo test --workspace --locked --no-fail-fast
