#!/usr/bin/env bash
# The whole GPU pass in one call, budgeted for 10 minutes on one H100/H200 with 16 cores (the step
# limits below are estimates until a GPU run records real times in gpu_check.json):
# build for the local GPU only, selftest, the GPU test suite (Triton for real, the `cuda` tests),
# the docs/design.md §4 benchmarks at full size (reference, torch.compile(reference), SDPA flash, torch sparse
# mm, every fused backend; fp32 and bf16; the fuzzy loss's kernel launches per step), compute-sanitizer
# (memcheck on one small case per CUDA kernel, racecheck on attention) and the FACT train step.
#
#   bash scripts/gpu_check.sh OUTDIR [--budget SECONDS] [--steps a,b,...] [--skip-build] [--dry-run]
#                                    [--steps-file FILE]   (name|seconds|command lines instead of the built-in steps)
#
# On a lent GPU machine, from the repository root (the device tool's `run`; $OUT comes back):
#   run(command="bash scripts/gpu_check.sh $OUT", timeout_s=600)
# A rerun on a warm machine (the build is still there) that only benchmarks:
#   run(command="bash scripts/gpu_check.sh $OUT --skip-build --steps bench_fp32,bench_bf16", ...)
#
# Every step runs under its own time limit (`timeout`), cut further so that the whole pass ends
# within --budget (default 570 s): one slow step cannot eat the others' time; a step with less
# than 10 s left is skipped. Later steps still run after a failed one (except after a failed build).
# Writes into OUTDIR at most 8 files (the device tool returns no more):
#   gpu_check.log     everything the steps printed
#   gpu_check.json    per step: command, budget, seconds, status (ok / failed / timeout / skipped)
#   selftest.json     python -m fact_fast.selftest
#   gpu_tests.xml     pytest -m cuda (JUnit)
#   ops_float32.json, ops_bfloat16.json   python -m benchmarks.run (written after every case; fp32 also
#                     gets the fuzzy launch counts of python -m benchmarks.ops.fuzzy)
#   train_step.json, train_step_head_only.json   python -m benchmarks.train_step
# With --dry-run, or when no CUDA GPU is visible, nothing runs: each step's command is printed.
set -uo pipefail
cd "$(dirname "$0")/.."

usage() {
  sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'
  exit "${1:-2}"
}

OUTDIR=""
BUDGET=570
STEPS=""
STEPS_FILE=""
DRY_RUN=0
SKIP_BUILD=0
while [ $# -gt 0 ]; do
  case "$1" in
    --budget) BUDGET="${2:?--budget needs a number of seconds}"; shift 2 ;;
    --steps) STEPS="${2:?--steps needs a comma-separated list}"; shift 2 ;;
    --steps-file) STEPS_FILE="${2:?--steps-file needs a file}"; shift 2 ;;
    --skip-build) SKIP_BUILD=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage 0 ;;
    -*) echo "gpu_check: unknown option $1" >&2; usage 2 ;;
    *) if [ -n "$OUTDIR" ]; then echo "gpu_check: one OUTDIR only (got '$OUTDIR' and '$1')" >&2; usage 2; fi
       OUTDIR="$1"; shift ;;
  esac
done
[ -n "$OUTDIR" ] || { echo "gpu_check: OUTDIR is required" >&2; usage 2; }
case "$BUDGET" in ''|*[!0-9]*) echo "gpu_check: --budget must be whole seconds, got '$BUDGET'" >&2; exit 2 ;; esac
if [ -n "$STEPS_FILE" ] && [ ! -r "$STEPS_FILE" ]; then echo "gpu_check: cannot read --steps-file $STEPS_FILE" >&2; exit 2; fi

PY=${PYTHON:-python3}
START=$(date +%s)
DEADLINE=$((START + BUDGET))
RESERVE=5  # seconds kept for the summary

GPU=0
if [ "$DRY_RUN" = 0 ]; then
  if "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    GPU=1
  else
    echo "gpu_check: no CUDA GPU visible to $PY (torch.cuda.is_available() is False): dry run"
    DRY_RUN=1
  fi
fi
if [ "$GPU" = 1 ]; then
  ARCH=$("$PY" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")
  NPROC=$(nproc)
else
  ARCH="<local GPU arch, e.g. 9.0>"
  NPROC="<nproc>"
fi
XDIST=""
if [ "$GPU" = 1 ] && "$PY" -c "import xdist" 2>/dev/null; then
  XDIST="-n 4 --dist loadfile"
fi

export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
LOG="$OUTDIR/gpu_check.log"
SUMMARY="$OUTDIR/gpu_check.json"

# name|budget seconds|command (run with bash -c; $OUTDIR, $PY, $ARCH, $NPROC already expanded)
steps_table() {
  if [ -n "$STEPS_FILE" ]; then
    grep -v '^#' "$STEPS_FILE"
    return
  fi
  cat <<EOF
env|15|nvidia-smi; $PY -c "import torch, triton; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'triton', triton.__version__, torch.cuda.get_device_name(), torch.cuda.get_device_capability())"; nvcc --version | tail -n 2; compute-sanitizer --version | head -n 2; ncu --version | tail -n 1
build|150|TORCH_CUDA_ARCH_LIST=$ARCH FACT_FAST_FORCE_CUDA=1 MAX_JOBS=$NPROC $PY -m pip install -e . --no-build-isolation --no-deps && $PY -c "from fact_fast import _extension as x; assert x.load() and x.built_with_cuda(), 'fact_fast._C has no CUDA kernels'; print('fact_fast._C built with CUDA')"
selftest|75|$PY -m fact_fast.selftest --device cuda --quick --dtypes fp32,fp16,bf16 --time-reps 5 --json $OUTDIR/selftest.json
tests|90|$PY -m pytest -m cuda tests/ -q -rfE -p no:cacheprovider --timeout=120 $XDIST --junitxml=$OUTDIR/gpu_tests.xml
bench_fp32|110|$PY -m benchmarks.run --device cuda --dtype float32 --sizes fact,large --warmup 2 --iters 10 --max-seconds 1 --out $OUTDIR/ops_float32.json
bench_bf16|60|$PY -m benchmarks.run --device cuda --dtype bfloat16 --sizes fact,large --warmup 2 --iters 10 --max-seconds 1 --baselines sdpa,sparse --out $OUTDIR/ops_bfloat16.json
fuzzy_launches|25|$PY -m benchmarks.ops.fuzzy --device cuda --skip-compiled --json $OUTDIR/ops_float32.json
memcheck|45|$PY scripts/gpu_sanitize.py --tool memcheck --timeout 40
racecheck|30|$PY scripts/gpu_sanitize.py --tool racecheck --families attention --timeout 25
train_step|40|$PY -m benchmarks.train_step --warmup 2 --iters 5 --max-seconds 8 --out $OUTDIR/train_step.json && $PY -m benchmarks.train_step --head-only --warmup 2 --iters 5 --max-seconds 8 --out $OUTDIR/train_step_head_only.json
EOF
}

write_summary() {
  "$PY" - "$STATE" "$SUMMARY" "$BUDGET" "$START" "$ARCH" <<'PYEOF'
import json, sys, time
state, out, budget, start, arch = sys.argv[1:6]
steps = []
for line in open(state):
    name, status, seconds, limit, rc, command = line.rstrip("\n").split("\t", 5)
    steps.append({"step": name, "status": status, "seconds": int(seconds), "time_limit": int(limit),
                  "exit_code": None if rc == "" else int(rc), "command": command})
doc = {"budget_seconds": int(budget), "elapsed_seconds": int(time.time()) - int(start), "cuda_arch": arch,
       "ok": all(s["status"] in ("ok", "skipped") for s in steps),  # nothing failed or timed out
       "complete": all(s["status"] == "ok" for s in steps), "steps": steps}
with open(out + ".tmp", "w") as f:
    json.dump(doc, f, indent=1)
import os; os.replace(out + ".tmp", out)
PYEOF
}

run_step() {  # name budget command
  local name=$1 budget=$2 command=$3
  local now left limit rc status t0
  now=$(date +%s)
  left=$((DEADLINE - now - RESERVE))
  limit=$budget
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 10 ]; then
    echo "=== $name: skipped (${left}s left of the ${BUDGET}s budget)" | tee -a "$LOG"
    printf '%s\tskipped\t0\t%s\t\t%s\n' "$name" "$limit" "$command" >> "$STATE"
    return 0
  fi
  echo "=== $name (time limit ${limit}s): $command" | tee -a "$LOG"
  t0=$(date +%s)
  # stdin from /dev/null: the step loop reads the steps table on stdin
  timeout --kill-after=5 "$limit" bash -c "$command" < /dev/null 2>&1 | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  case "$rc" in
    0) status=ok ;;
    124|137) status=timeout ;;
    *) status=failed ;;
  esac
  echo "=== $name: $status (exit $rc, $(( $(date +%s) - t0 ))s)" | tee -a "$LOG"
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$(( $(date +%s) - t0 ))" "$limit" "$rc" "$command" >> "$STATE"
  write_summary
  [ "$status" = ok ]
}

ALL_STEPS=$(steps_table | cut -d'|' -f1 | paste -sd, -)
[ -n "$STEPS" ] || STEPS=$ALL_STEPS
for s in ${STEPS//,/ }; do
  case ",$ALL_STEPS," in *",$s,"*) ;; *) echo "gpu_check: unknown step '$s' (steps: $ALL_STEPS)" >&2; exit 2 ;; esac
done
[ "$SKIP_BUILD" = 1 ] && STEPS=$(echo ",$STEPS," | sed 's/,build,/,/; s/^,//; s/,$//')

if [ "$DRY_RUN" = 1 ]; then
  echo "gpu_check: dry run; would write into $OUTDIR within ${BUDGET}s:"
  while IFS='|' read -r name budget command; do
    case ",$STEPS," in *",$name,"*) echo "STEP $name budget=${budget}s: $command" ;; esac
  done < <(steps_table)
  exit 0
fi

mkdir -p "$OUTDIR"
: > "$LOG"
STATE=$(mktemp 2>/dev/null || echo "/tmp/gpu_check.$$")  # one line per step done, read by write_summary
: > "$STATE"
echo "gpu_check: $(date -u +%FT%TZ), budget ${BUDGET}s, steps $STEPS, arch $ARCH" | tee -a "$LOG"
FAILED=0
while IFS='|' read -r name budget command; do
  case ",$STEPS," in *",$name,"*) ;; *) continue ;; esac
  if ! run_step "$name" "$budget" "$command"; then
    FAILED=1
    if [ "$name" = build ]; then
      echo "gpu_check: the build failed; the remaining steps need it" | tee -a "$LOG"
      break
    fi
  fi
done < <(steps_table)
write_summary
rm -f "$STATE"
echo
"$PY" -c "
import json, sys
doc = json.load(open(sys.argv[1]))
print(f\"gpu_check: {doc['elapsed_seconds']}s of {doc['budget_seconds']}s\")
for s in doc['steps']:
    print(f\"  {s['step']:<11} {s['status']:<8} {s['seconds']:>4}s / {s['time_limit']:>3}s\")
" "$SUMMARY" | tee -a "$LOG"
exit "$FAILED"
