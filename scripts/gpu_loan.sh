#!/usr/bin/env bash
# A short GPU loan, end to end: CUDA inference figures, then the Push-T image policies trained for a
# fixed time and evaluated lockstep on the GPU, with everything worth keeping packed into OUT_DIR.
#
#   scripts/gpu_loan.sh OUT_DIR [smoke|full] [TRAIN_SECONDS]
#
# Needs: a CUDA GPU, torch/torchvision, the packages of requirements.txt except ROS 2 (nothing here
# starts a node: lockstep evaluation and training are ROS-free), and the Push-T image data converted
# beforehand (DATA, default data/pusht_image_v2.zarr; `dp-ros record --lockstep --task pusht` then
# `dp-ros convert`: recording needs no GPU, so it is done before the loan).
# smoke: every stage for a few seconds (does the machine run it all?); full: TRAIN_SECONDS (default
# 300) of training for each image config in CONFIGS (paper, small; at once on the one GPU), a
# model kept every KEEP_EVERY steps for the learning curve, then lockstep rollouts of each kept
# model. Settings by environment: STAGES, CONFIGS, BATCH, WORKERS, KEEP_EVERY, CURVE_EPISODES,
# FINAL_EPISODES, LANES, DEVICE, DATA, RUNS (a fresh directory per call: a warm machine keeps it).
# Only the small network's models come back (fp16, 15 MB each; the paper's is 150 MB, over what a
# loan returns): the paper network is evaluated on the machine.
# A machine without this project's packages (no index to install from) takes them as wheels
# downloaded beforehand for its Python: diffusers, zarr, numcodecs, donfig, google-crc32c,
# importlib_metadata for training; gym-pusht, gymnasium, farama-notifications, pygame, pymunk,
# cffi, pycparser, shapely for the rollouts (`pip install --no-index --no-deps --target DIR *.whl`,
# then PYTHONPATH=DIR). The first loan did so (models/README.md).
set -u
OUT=${1:?usage: scripts/gpu_loan.sh OUT_DIR [smoke|full] [TRAIN_SECONDS]}
MODE=${2:-full}
TRAIN_S=${3:-300}
DATA=${DATA:-data/pusht_image_v2.zarr}
RUNS=${RUNS:-/tmp/gpu_loan_runs_$(date +%s)}
BATCH=${BATCH:-64}
export DEVICE=${DEVICE:-cuda}
KEEP_EVERY=${KEEP_EVERY:-1000}
CURVE_EPISODES=${CURVE_EPISODES:-20}     # per kept model
FINAL_EPISODES=${FINAL_EPISODES:-50}     # for each run's last model
LANES=${LANES:-12}                       # evaluation processes at once (the sim runs on the CPU)
STAGES=${STAGES:-bench train eval}       # pack always runs
[ "$MODE" = smoke ] && { TRAIN_S=20; KEEP_EVERY=200; CURVE_EPISODES=1; FINAL_EPISODES=2; LANES=8; }
has() { [[ " $STAGES " == *" $1 "* ]]; }
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
mkdir -p "$OUT" "$RUNS"
LOG=$OUT/gpu_loan.log
say() { echo "[gpu_loan $(date +%T)] $*" | tee -a "$LOG"; }
py() { python3 "$@"; }

say "mode $MODE, train ${TRAIN_S}s per config, batch $BATCH, keep every $KEEP_EVERY, data $DATA"
{ nvidia-smi -L; py -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__,
'cuda', torch.version.cuda, torch.cuda.get_device_name(0))
import os; print('cpus', os.cpu_count())"; } 2>&1 | tee -a "$LOG"

# 1. Inference figures on this GPU (the policy node's path: encoder + DDIM steps).
has bench && say "bench inference"
has bench && for args in "--preset paper-real" "--preset sim" "--preset paper-real --backbone transformer" \
            "--preset sim --steps 100"; do
  reps=50
  py -m dp_ros.cli bench inference $args --device $DEVICE --repeats $reps 2>>"$LOG" | tail -n 1 \
    >> "$OUT/bench_inference_cuda.jsonl" || say "bench $args failed"
done

# 2. Both image configs at once: the paper's network and the CPU-sized one (which can come back).
train() {   # name config
  py -m dp_ros.train.cli --config "$2" --out "$RUNS/$1" --no-progress data.path="$DATA" \
    training.time_budget_s="$TRAIN_S" training.max_steps=1000000 training.batch_size="$BATCH" \
    training.eval_every=$KEEP_EVERY training.checkpoint_every=$KEEP_EVERY checkpoint.keep_every=$KEEP_EVERY \
    training.num_workers=${WORKERS:-4} training.log_every=50 training.device=$DEVICE > "$RUNS/$1.log" 2>&1
  echo "[$1] exit $?" >> "$RUNS/$1.log"
}
if has train; then
  say "training pusht_image and pusht_image_cpu for ${TRAIN_S}s each, at once"
  [[ " ${CONFIGS:-paper small} " == *" paper "* ]] && train image_paper config/train/pusht_image.yaml &
  [[ " ${CONFIGS:-paper small} " == *" small "* ]] && train image_small config/train/pusht_image_cpu.yaml &
  wait
  for r in image_paper image_small; do grep -E "dp-train|exit|Error|error" "$RUNS/$r.log" | tail -n 8 | tee -a "$LOG"; done
fi

# 3. Lockstep rollouts of every kept model (and last/), LANES processes at a time, each on the GPU.
if has eval; then
say "lockstep rollouts"
jobs_list=$RUNS/eval_jobs.txt; : > "$jobs_list"
for r in image_paper image_small; do
  for ck in "$RUNS/$r"/checkpoints/step_* "$RUNS/$r/checkpoints/last"; do
    [ -d "$ck" ] || continue
    n=$CURVE_EPISODES; [ "$(basename "$ck")" = last ] && n=$FINAL_EPISODES
    per=$(( (n + 4) / 5 ))        # lanes of 5 episodes (or fewer) each, seeds 100001..
    for ((i = 0; i < per; i++)); do
      k=$(( n - 5 * i < 5 ? n - 5 * i : 5 ))
      echo "$ck $k $((100000 + 5 * i)) $RUNS/eval_${r}_$(basename "$ck")_$i.json" >> "$jobs_list"
    done
  done
done
xargs -P "$LANES" -L 1 sh -c 'python3 -m dp_ros.cli eval --checkpoint "$0" --episodes "$1" --seed "$2" \
  --lockstep --stitch none --device $DEVICE --no-progress --out "$3" > "$3.log" 2>&1 || echo "eval $0 $2 failed"' \
  < "$jobs_list" | tee -a "$LOG"
py - "$RUNS" <<'EOF' | tee -a "$LOG" > "$OUT/lockstep_curve.json"
import glob, json, re, sys
runs = sys.argv[1]
rows = {}
for f in sorted(glob.glob(f"{runs}/eval_*.json")):
    run, ck = re.match(r".*/eval_(image_\w+?)_(step_\d+|last)_\d+\.json", f).groups()
    eps = json.load(open(f))["lockstep"]["episodes"]
    rows.setdefault((run, ck), []).extend(eps)
def key(rc):
    return rc[0], 10**12 if rc[1] == "last" else int(rc[1][5:])
out = []
for (run, ck) in sorted(rows, key=key):
    eps = rows[(run, ck)]
    out.append({"run": run, "checkpoint": ck, "episodes": len(eps),
                "success_rate": round(sum(e["success"] for e in eps) / len(eps), 3),
                "mean_max_coverage": round(sum(e["max_coverage"] for e in eps) / len(eps), 4)})
print(json.dumps(out, indent=1))
EOF
fi

# 4. Pack: logs, metrics and eval JSONs in one archive; the small model (fp16) beside it.
say "packing"
( cd "$RUNS" && tar czf "$OUT/runs.tar.gz" --exclude='*.safetensors' --exclude='*.pt' . ) || say "tar failed"
for ck in "$RUNS"/image_small/checkpoints/step_* "$RUNS/image_small/checkpoints/last"; do
  [ -d "$ck" ] || continue
  name=image_small_$(basename "$ck")_fp16
  py -m dp_ros.cli export "$ck" "/tmp/$name" --weights-dtype float16 --force \
    >> "$LOG" 2>&1 && tar cf "$OUT/$name.tar" -C /tmp "$name" || say "export $ck failed"
done
ls -la "$OUT" | tee -a "$LOG"
say "done"
