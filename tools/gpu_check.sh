#!/usr/bin/env bash
# The lent GPU machine in one detached pipeline and one engine build (CUDA as a loadable backend
# + every CPU variant + RPC, and llama.cpp's own llama-server, llama-bench and
# llama-batched-bench from the same tree): tools/gpu_check.py prints a PASS/FAIL table (-ngl, -mg,
# -ts, -sm none|layer|row, two GPUs vs one with the same greedy output, the same package serving
# with no GPU visible), then tools/bench_server.py measures llamacy against llama-server and the
# engine's limit on a random-weight 1.17B F16 model (GPU_BENCH=0 skips it; GPU_BENCH_CLIENTS
# picks the client counts, default "1,8,32,64,128"; GPU_CHECKS=0 skips the checks' table,
# GPU_CHECK_ONLY=name,name runs only those checks; GPU_BENCH_ARGS go to bench_server.py).
#
#   bash tools/gpu_check.sh prepare    HERE, in the project's root: fills .gpu-check/ (git-ignored,
#                                      ~15 MB): the pinned sdist's llama.cpp tree trimmed, the
#                                      wheels the device lacks, the random-weight model maker.
#   bash tools/gpu_check.sh run [S]    ON THE DEVICE (carry [".gpu-check"]): starts the pipeline
#                                      detached unless running or done, waits up to S seconds
#                                      (default 540), prints the table; "NOT FINISHED" means call
#                                      again at once (the engine build takes ~8 min on 16 cores).
#   bash tools/gpu_check.sh local      HERE: the same pipeline with the CPU engine from the
#                                      engine cache and only the checks a machine without a GPU
#                                      can run (tests this script).
#   bash tools/gpu_check.sh keep DIR   HERE: after a run, files the engine build it brought back
#                                      (DIR: the call's files_at; engine-*.tar.xz.N pieces of
#                                      15 MiB) into .gpu-check/prebuilt/. A later run on a fresh
#                                      machine unpacks them instead of building (the Cython modules
#                                      still build, ~1 min): a build and a benchmark need not fit
#                                      one call, and a machine lost between calls costs no rebuild.
#                                      (The CUDA sm_90 build: ~47 MiB, with .gpu-check's ~13 and the
#                                      checkout just under the 64 MiB a call carries.)
# Settings: GPU_CHECK_CMAKE_ARGS (default "-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90").
set -u
MODE=${1:-run}
MAX_PIECES=7   # engine pieces a call can bring back: 8 files a call, one of them the results
ROOT=$(pwd)
G=$ROOT/.gpu-check
W=${GPU_CHECK_WORK:-/tmp/gpu-check}
SHARED=${GPU_CHECK_SHARED:-$ROOT/../shared/bench}
PY=${GPU_CHECK_PYTHON:-python3}

prepare() {
  set -e
  [ -d .git ] || [ -f .git ] || { echo "run from the project's root"; exit 2; }
  local exclude; exclude=$(git rev-parse --git-path info/exclude)
  grep -qx '/.gpu-check/' "$exclude" 2>/dev/null || echo '/.gpu-check/' >> "$exclude"
  mkdir -p "$G/whl"
  cp "$SHARED/make_random_gguf.py" "$SHARED/vocab-smollm2.gguf" "$G/"
  if [ ! -f "$G/llama.cpp.tar.xz" ]; then
    local T sdist
    T=$(mktemp -d)
    sdist=$(ls ~/.cache/llamacy/engine/src/llama_cpp_python-*.tar.gz 2>/dev/null | head -1)
    if [ -z "$sdist" ]; then
      python3 -m pip download -q --no-deps --no-binary=:all: -d "$T" "$(grep '==' third_party/ggml/PIN)"
      sdist=$(ls "$T"/llama_cpp_python-*.tar.gz)
    fi
    tar xzf "$sdist" -C "$T" --wildcards '*/vendor/llama.cpp/*'
    mv "$T"/llama_cpp_python-*/vendor/llama.cpp "$T/llama.cpp"
    rm -rf "$T"/llama.cpp/{models,docs,tests,benches,media,gguf-py,examples,pocs,skills,conversion,.devops}
    tar cJf "$G/llama.cpp.tar.xz" -C "$T" llama.cpp
    rm -rf "$T"
  fi
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$G/whl" tornado orjson
  python3 -m pip download -q --no-deps -d "$G/whl" gguf prometheus-client
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$G/whl" 'cython>=3.0,<4'   # the build needs it (--no-build-isolation: the device has no index)
  du -sh "$G"
}

pack_engine() {   # the engine prefix just built (libraries, headers, llama.cpp's tools) in pieces
  local prefix name t0=$SECONDS
  prefix=$(ls -d "$W"/engine/*/engine.json 2>/dev/null | head -1)
  [ -n "$prefix" ] || { log "no engine to pack"; return; }
  prefix=$(dirname "$prefix"); name=$(basename "$prefix")
  rm -rf "$W/pack.tmp" && mkdir -p "$W/pack.tmp"
  tar cf - -C "$W/engine" "$name" | xz -T0 -6 | split -b 15m -d -a 1 - "$W/pack.tmp/engine-$name.tar.xz."
  mv "$W/pack.tmp" "$W/pack"
  log "engine packed in $((SECONDS - t0)) s: $(du -ch "$W"/pack/* | tail -1 | cut -f1) in $(ls "$W/pack" | wc -l) pieces"
  [ "$(ls "$W/pack" | wc -l)" -le $MAX_PIECES ] || log "more than $MAX_PIECES pieces: too many to bring back"
}

pipeline() {   # detached; each stage skips what is done; results in $W/res
  local R=$W/res CPU_ONLY=${1:-}
  mkdir -p "$R"; echo $$ > "$W/pipeline.pid"
  log() { echo "[$(date +%T)] $*" >> "$R/pipeline.txt"; }
  export PYTHONPATH=$W/site PYTHONUNBUFFERED=1
  [ -n "$CPU_ONLY" ] || [ -d "$W/site/tornado" ] || \
    $PY -m pip install -q --no-index --no-deps --no-compile --target "$W/site" "$G"/whl/*.whl
  if [ ! -d "$W/site/llamacy/_engine" ]; then
    log "engine + llamacy build start"
    local t0=$SECONDS
    if [ -z "$CPU_ONLY" ]; then
      [ -d "$W/src/llama.cpp" ] || { mkdir -p "$W/src" && tar xJf "$G/llama.cpp.tar.xz" -C "$W/src"; }
      export LLAMACY_ENGINE_SOURCE=$W/src/llama.cpp LLAMACY_ENGINE_CACHE=$W/engine
      if ls "$G"/prebuilt/engine-*.tar.xz.0 > /dev/null 2>&1 && [ ! -d "$W/engine" ]; then
        mkdir -p "$W/engine"
        cat "$G"/prebuilt/engine-*.tar.xz.* | xz -dc | tar x -C "$W/engine" && log "engine unpacked from .gpu-check/prebuilt"
      fi
      export CMAKE_ARGS="${GPU_CHECK_CMAKE_ARGS:--DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90} -DLLAMA_BUILD_COMMON=ON \
        -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON -DLLAMA_TOOLS_INSTALL=ON -DLLAMA_USE_PREBUILT_UI=OFF"
    fi
    CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) $PY -m pip install --no-build-isolation --no-deps --no-index \
      --upgrade --target "$W/site" "$ROOT" > "$R/build.log" 2>&1
    log "build rc=$? in $((SECONDS - t0)) s"
    [ -d "$W/site/llamacy/_engine" ] || { log "BUILD FAILED"; tail -40 "$R/build.log" >> "$R/pipeline.txt"; touch "$R/DONE"; return 1; }
    ls "$W/site/llamacy/_engine" >> "$R/pipeline.txt"
    [ -n "$CPU_ONLY" ] || ls "$G"/prebuilt/engine-*.tar.xz.0 > /dev/null 2>&1 || pack_engine
  fi
  [ -f "$W/smol.gguf" ] || $PY "$G/make_random_gguf.py" "$G/vocab-smollm2.gguf" "$W/smol.gguf.tmp" \
    576 30 9 3 1536 >> "$R/models.log" 2>&1 && mv "$W/smol.gguf.tmp" "$W/smol.gguf"
  command -v nvidia-smi > /dev/null && nvidia-smi -L >> "$R/pipeline.txt" 2>&1
  grep -m1 "model name" /proc/cpuinfo >> "$R/pipeline.txt"
  export PYTHONFAULTHANDLER=1   # a crash leaves its Python stack in the logs
  if [ -z "$CPU_ONLY" ]; then
    # smoke: serve once on the CPU; if the best CPU variant fails here, find one that does
    for v in "" icelake skylakex haswell x64; do
      if LLAMACY_CPU_VARIANT=$v CUDA_VISIBLE_DEVICES= $PY "$ROOT/tools/gpu_check.py" "$W/smol.gguf" --smoke \
          > "$R/smoke-cpu${v:+-$v}.log" 2>&1; then
        log "smoke on the CPU${v:+ with LLAMACY_CPU_VARIANT=$v}: OK"
        touch "$R/smoke-ok"
        [ -n "$v" ] && export LLAMACY_CPU_VARIANT=$v
        break
      fi
      log "smoke on the CPU${v:+ with LLAMACY_CPU_VARIANT=$v}: FAILED (res/smoke-cpu${v:+-$v}.log)"
    done
    if [ ! -f "$R/smoke-ok" ]; then   # llamacy preloads the C++ runtime itself when a GPU backend is present
      if LD_PRELOAD=libstdc++.so.6 CUDA_VISIBLE_DEVICES= $PY "$ROOT/tools/gpu_check.py" "$W/smol.gguf" --smoke \
          > "$R/smoke-cpu-preload.log" 2>&1; then
        log "smoke on the CPU with LD_PRELOAD=libstdc++.so.6: OK (the rest runs with it)"
        export LD_PRELOAD=libstdc++.so.6
      else
        log "smoke on the CPU with LD_PRELOAD=libstdc++.so.6: FAILED"
      fi
    fi
    if ! $PY "$ROOT/tools/gpu_check.py" "$W/smol.gguf" --smoke -ngl 99 > "$R/smoke-gpu.log" 2>&1; then
      log "smoke with -ngl 99: FAILED (res/smoke-gpu.log): skipping the checks and the benchmark"
      touch "$R/DONE"
      return 1
    fi
    log "smoke with -ngl 99: OK"
  fi
  if [ "${GPU_CHECKS:-1}" = 1 ]; then
    $PY "$ROOT/tools/gpu_check.py" "$W/smol.gguf" $CPU_ONLY ${GPU_CHECK_ONLY:+--only "$GPU_CHECK_ONLY"} \
      > "$R/table.txt" 2>&1
    log "gpu_check rc=$?"
  fi
  if [ -z "$CPU_ONLY" ] && [ "${GPU_BENCH:-1}" = 1 ]; then
    [ -f "$W/1b.gguf" ] || $PY "$G/make_random_gguf.py" "$G/vocab-smollm2.gguf" "$W/1b.gguf.tmp" \
      2048 16 32 8 8192 >> "$R/models.log" 2>&1 && mv "$W/1b.gguf.tmp" "$W/1b.gguf"
    local bin; bin=$(dirname "$(find "$W/engine" -name llama-server -type f | head -1)")
    ulimit -n 65536 2>/dev/null
    CUDA_VISIBLE_DEVICES=${GPU_BENCH_DEVICE:-0} $PY "$ROOT/tools/bench_server.py" --llama-bin "$bin" --gpu \
      -m "$W/1b.gguf" --clients "${GPU_BENCH_CLIENTS:-1,8,32,64,128}" --n-predict 128 --slots 128 \
      --ctx-per-slot 256 --log-dir "$R" ${GPU_BENCH_ARGS:-} > "$R/bench.txt" 2> "$R/bench.err"
    log "bench rc=$?"
  fi
  touch "$R/DONE"
}

case "$MODE" in
  prepare) prepare ;;
  run)
    LIMIT=${2:-540}
    mkdir -p "$W"
    if ! { [ -f "$W/pipeline.pid" ] && kill -0 "$(cat "$W/pipeline.pid")" 2>/dev/null; } && [ ! -f "$W/res/DONE" ]; then
      setsid nohup bash "$0" pipeline > "$W/pipeline.out" 2>&1 < /dev/null &
      sleep 2
    fi
    end=$((SECONDS + LIMIT))
    while [ ! -f "$W/res/DONE" ] && [ $SECONDS -lt $end ]; do sleep 5; done
    cat "$W/res/pipeline.txt" "$W/res/table.txt" "$W/res/bench.txt" 2>/dev/null
    [ -n "${OUT:-}" ] && tar czf "$OUT/gpu-check.tar.gz" -C "$W" res 2>/dev/null
    [ -n "${OUT:-}" ] && [ -d "$W/pack" ] && [ "$(ls "$W/pack" | wc -l)" -le $MAX_PIECES ] && cp "$W"/pack/* "$OUT/"
    [ -f "$W/res/DONE" ] && echo FINISHED || echo "NOT FINISHED at $(date +%T): call again now"
    ;;
  pipeline) pipeline ;;
  keep)
    [ -n "${2:-}" ] && ls "$2"/engine-*.tar.xz.0 > /dev/null || { echo "usage: $0 keep DIR (with engine-*.tar.xz.N)"; exit 2; }
    rm -rf "$G/prebuilt" && mkdir -p "$G/prebuilt" && cp "$2"/engine-*.tar.xz.* "$G/prebuilt/" && du -sh "$G/prebuilt" "$G"
    echo "(a call carries at most 64 MiB: .gpu-check and the checkout together)"
    ;;
  local)   # the venv's Python (Cython, setuptools, the runtime packages) and the cached CPU engine
    export GPU_CHECK_PYTHON=${GPU_CHECK_PYTHON:-$ROOT/.venv/bin/python} && PY=$GPU_CHECK_PYTHON
    $PY -m pip install -q 'setuptools>=68' wheel 'cython>=3.0,<4'    # what --no-build-isolation needs
    rm -rf "$W/res" "$W/site/llamacy"
    mkdir -p "$W"
    pipeline --cpu-only
    cat "$W/res/pipeline.txt" "$W/res/table.txt"
    grep -q " 0 failed" "$W/res/table.txt"
    ;;
  *) echo "usage: $0 prepare|run [SECONDS]|keep DIR|local"; exit 2 ;;
esac
