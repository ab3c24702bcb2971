#!/usr/bin/env bash
# CI's native step (.ci/run runs it beside the installs): an ASan+UBSan build of the C++ core with its
# C++ tests (ctest) and the tokenizer fuzz driver, then a bounded fuzz run. Exits non-zero on any
# failed check, sanitizer report (ASan aborts; UBSan is built without recovery) or fuzz crash.
#   tests/native/ci.sh [fuzz_seconds=45]     (MBEXPORT_FUZZ_SEED fixes the fuzz seed)
# Needs cmake (>= 3.18; the test extra installs it), ninja if present, and a C++17 compiler.
set -euo pipefail
cd "$(dirname "$0")/../.."
FUZZ_SECONDS=${1:-45}
SEED=${MBEXPORT_FUZZ_SEED:-$(date +%s)}
BUILD=build/native-ci
GEN=()
command -v ninja >/dev/null && GEN=(-G Ninja)
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:halt_on_error=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1

cmake -S . -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DMBEXPORT_SANITIZE=ON -DMBEXPORT_FUZZ=ON -DBUILD_TESTING=ON >/dev/null
cmake --build "$BUILD" -j 2
ctest --test-dir "$BUILD" --output-on-failure --timeout 300
echo "== tokenizer fuzz (ASan+UBSan), ${FUZZ_SECONDS}s, seed ${SEED}"
"$BUILD/fuzz_tokenizer" "$FUZZ_SECONDS" "$SEED"
