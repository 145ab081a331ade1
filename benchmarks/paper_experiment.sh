#!/bin/bash
# The paper's real-world experiment at simulation scale (issue 27 items 4-5; results and the
# recipe's reasons in benchmarks/README.md): one multi-task policy for the three ARX R5 tasks,
# trained three ways on the same demonstrations, steps and seeds, evaluated on the test seeds
# in the standard cell and under domain shift.
#
#   bash benchmarks/paper_experiment.sh WORK [PHASE ...]
#   PHASE: demos (the demonstrations' datasets), video (the perturbed experts'), train, eval,
#   report (benchmarks/paper_experiment/report.txt); the default: all of them in that order.
#   suspend (never by default): the unfinished runs' states into benchmarks/paper_experiment/
#   resume/, to be committed when a session ends mid-run; train goes on from them elsewhere.
#
# Every phase resumes: a dataset or an evaluation whose output exists is skipped, training
# continues from <run>/last (--resume). Run it again after any interruption. The experiment
# outlives the machine it runs on through what is committed in benchmarks/paper_experiment/
# (KEPT): each finished run's weights (stored in float16, the LAM's as trained) and every
# evaluation; a kept run is not trained again, and later stages and the evaluation read the
# kept copy, so every arm starts from the same bytes whichever machine trained its parent.
# The run of robot actions alone needs the demonstrations only; the other arms need the video
# too. Arms (WORK/runs/<arm>):
#   actions_only    Stage III from scratch, robot actions alone (latent_planner=false)
#   rotvla          Stage I LAM -> Stage II latent pretraining -> Stage III with the planner
#   stage2_only     the same Stage II checkpoint -> Stage III without the planner
# Stages I and II learn from the demonstrations' video and from perturbed experts' video used
# without its actions; Stage III of every arm from the same demonstrations.
#
# Episodes are recorded in process (rotvla_record --in-process: the stack's controller, physics
# and cameras on sim time, written as rotvla_convert writes a recording; 3-8 s an episode, and
# the same dataset on every run of the same seeds), not through the ROS stack (28-41 s an
# episode on two cores, and unusable when anything runs beside it).
set -euo pipefail
WORK=${1:?usage: paper_experiment.sh WORK [demos|video|train|eval|report ...]}
shift
PHASES=${*:-demos video train eval report}
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO" && source scripts/env.sh
KEPT=$REPO/benchmarks/paper_experiment
mkdir -p "$WORK"/{ds,runs,cache} "$KEPT/eval/validation"

TASKS="block_to_plate block_into_drawer cup_stacking"
declare -A FIRST_SEED=([block_to_plate]=1000 [block_into_drawer]=3000 [cup_stacking]=2000)
declare -A PERTURBED_SEED=([block_to_plate]=1100 [block_into_drawer]=3100 [cup_stacking]=2100)
DEMOS=100      # per task, the paper's count
PERTURBED=25   # perturbed episodes per task, video only
NOISE=0.02     # rad: the expert still succeeds on most scenes (benchmarks/README.md, DAgger)
STAGE3_STEPS=16000  # three tasks at equal weight: ~5,300 steps' worth each (one task's shipped runs: 6,000-8,000)
STAGE2_STEPS=4000
STAGE1_STEPS=1000
# Decoded frames kept in memory (MB): every dataset decoded once, in order, at the model's
# image size (~3 GB for the three tasks' 50,000 frames x 3 views at 84 px, more with the LAM's
# 112 px clips). At the default 1 GB the frames do not fit, each step decodes ~100 frames on
# one core, and a Stage III step takes 2.3 s instead of ~0.3 (measured on the three datasets).
VIDEO_CACHE_MB=8192
EPISODES=100   # test seeds per task and condition
VALIDATION_EPISODES=50  # validation seeds per task: the multi-task checkpoint shipped is chosen on them

record() {  # record NAME FIRST COUNT [rotvla_record options]: WORK/ds/NAME, COUNT seeds from FIRST
  local name=$1 first=$2 count=$3
  shift 3
  [ -e "$WORK/ds/$name/meta/info.json" ] && return
  rotvla_record --in-process --first-seed "$first" --episodes "$count" --output "$WORK/ds/$name" --overwrite "$@" \
    > "$WORK/ds/$name.log" 2>&1
}

in_parallel() {  # in_parallel COMMAND...: each command line in a process of its own, two at a time
  local pids=() line
  for line in "$@"; do
    if [ ${#pids[@]} -ge 2 ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
    eval "$line" & pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid"; done  # set -e: a failed recording stops here
}

checkpoint() {  # checkpoint RUN: its kept copy (benchmarks/paper_experiment/RUN), else its last
  if [ -e "$KEPT/$1/config.json" ]; then echo "$KEPT/$1"; else echo "$WORK/runs/$1/last"; fi
}

keep() {  # keep RUN: the finished run's weights into KEPT/RUN, to be committed
  [ -e "$KEPT/$1/config.json" ] && return
  python - "$WORK/runs/$1/last" "$KEPT/$1" <<'PY'
import shutil, sys
from pathlib import Path
from rotvla_ros.policy.checkpoint import read_json
from rotvla_ros.policy.registry import load_policy
run, kept = Path(sys.argv[1]), Path(sys.argv[2])
staging = kept.with_name(f".{kept.name}.keeping")
shutil.rmtree(staging, ignore_errors=True)
if "lam" in read_json(run / "config.json"):  # a LAM: its weights as trained (no float16 LAM loader)
    shutil.copytree(run, staging, ignore=shutil.ignore_patterns("train_state.pt"))
else:
    load_policy(run, device="cpu", dtype="float16").save_pretrained(staging)
staging.rename(kept)
print(f"kept {run} in {kept}")
PY
  rm -rf "${KEPT:?}/resume/$1"  # its suspended state, if any, is of no more use
}

train() {  # train RUN STAGE [rotvla_train options]; a finished run is kept (keep)
  local arm=$1 stage=$2
  shift 2
  [ -e "$KEPT/$arm/config.json" ] && return
  if [ ! -e "$WORK/runs/$arm/last" ] && [ -d "$KEPT/resume/$arm" ]; then
    mkdir -p "$WORK/runs/$arm/last"  # a run suspended on another machine (phase suspend) goes on
    find "$KEPT/resume/$arm" -maxdepth 1 -type f ! -name 'train_state.pt.part-*' -exec cp {} "$WORK/runs/$arm/last/" \;
    cat "$KEPT/resume/$arm"/train_state.pt.part-* > "$WORK/runs/$arm/last/train_state.pt"
  fi
  if [ ! -e "$WORK/runs/$arm/done" ]; then
    rotvla_train "$stage" --config "config/train/sim/$stage.yaml" --output "$WORK/runs/$arm" --resume \
      --set "latent_cache_dir=$WORK/cache" --set "video_cache_mb=$VIDEO_CACHE_MB" "$@"
    touch "$WORK/runs/$arm/done"
  fi
  keep "$arm"
}

video_pool() {  # the datasets of Stages I and II: every demonstration and perturbed episode
  for task in $TASKS; do printf -- "--dataset %s/ds/%s --dataset %s/ds/perturbed_%s " "$WORK" "$task" "$WORK" "$task"; done
}

demonstrations() {  # Stage III's datasets: one per task, equal weights (the cups' longer
  # episodes would otherwise draw most of the samples)
  for task in $TASKS; do printf -- "--dataset %s/ds/%s " "$WORK" "$task"; done
}

for phase in $PHASES; do
  case $phase in
    demos)  # the expert's failures are left out: a task short of DEMOS stops the experiment
      lines=()
      for task in $TASKS; do lines+=("record $task ${FIRST_SEED[$task]} $DEMOS --task $task"); done
      in_parallel "${lines[@]}"
      for task in $TASKS; do
        if ! grep -q "\"total_episodes\": $DEMOS," "$WORK/ds/$task/meta/info.json"; then
          echo "$WORK/ds/$task: the expert failed on some of its $DEMOS seeds (see $WORK/ds/$task.log)" >&2
          exit 1
        fi
      done
      ;;
    video)
      lines=()
      for task in $TASKS; do
        lines+=("record perturbed_$task ${PERTURBED_SEED[$task]} $PERTURBED --task $task --noise $NOISE --keep-failures")
      done
      in_parallel "${lines[@]}"
      ;;
    train)
      # shellcheck disable=SC2046  # the dataset lists are words on purpose
      train actions_only stage3 $(demonstrations) --steps "$STAGE3_STEPS" --set latent_planner=false --set save_every=500
      for task in $TASKS; do
        if [ ! -e "$WORK/ds/perturbed_$task/meta/info.json" ]; then
          echo "no $WORK/ds/perturbed_$task: record the video first (phase video)" >&2
          exit 1
        fi
      done
      # shellcheck disable=SC2046
      train lam stage1 $(video_pool) --steps "$STAGE1_STEPS" --set pooled=true
      # shellcheck disable=SC2046
      train stage2 stage2 $(video_pool) --steps "$STAGE2_STEPS" --lam-checkpoint "$(checkpoint lam)" \
        --set pooled=true
      # shellcheck disable=SC2046
      train rotvla stage3 $(demonstrations) --steps "$STAGE3_STEPS" --lam-checkpoint "$(checkpoint lam)" \
        --init-checkpoint "$(checkpoint stage2)" --set save_every=500
      # shellcheck disable=SC2046
      train stage2_only stage3 $(demonstrations) --steps "$STAGE3_STEPS" \
        --init-checkpoint "$(checkpoint stage2)" --set latent_planner=false --set save_every=500
      ;;
    eval)  # validation first (which arm is shipped is chosen there), then the test seeds
      for arm in actions_only rotvla stage2_only; do
        [ -e "$KEPT/$arm/config.json" ] || continue
        for task in $TASKS; do
          out="$KEPT/eval/validation/$arm-$task.json"
          [ -e "$out" ] || rotvla_eval "$KEPT/$arm" --task "$task" --split validation \
            --episodes "$VALIDATION_EPISODES" --workers 2 --output "$out"
          for shift_ in none all; do
            out="$KEPT/eval/$arm-$task-$shift_.json"
            [ -e "$out" ] && continue
            rotvla_eval "$KEPT/$arm" --task "$task" --split test --episodes "$EPISODES" \
              --shift "$shift_" --workers 2 --output "$out"
          done
        done
      done
      ;;
    report)  # each pair of arms on the same test seeds: both intervals and McNemar's exact test
      for task in $TASKS; do
        for shift_ in none all; do
          for pair in "actions_only rotvla" "actions_only stage2_only" "stage2_only rotvla"; do
            read -r a b <<< "$pair"
            [ -e "$KEPT/eval/$a-$task-$shift_.json" ] && [ -e "$KEPT/eval/$b-$task-$shift_.json" ] || continue
            echo "## $task, shift $shift_: $a (A) vs $b (B)"
            rotvla_eval --compare "$KEPT/eval/$a-$task-$shift_.json" "$KEPT/eval/$b-$task-$shift_.json"
          done
        done
      done | tee "$KEPT/report.txt"
      # The arm shipped as the multi-task checkpoint: the best mean success over the tasks on the
      # validation seeds (never the test seeds).
      python - "$KEPT/eval/validation" <<'PY' | tee -a "$KEPT/report.txt"
import json, sys
from collections import defaultdict
from pathlib import Path
rates = defaultdict(list)
for path in sorted(Path(sys.argv[1]).glob("*.json")):
    arm, _, task = path.stem.partition("-")
    summary = json.loads(path.read_text())
    rates[arm].append(summary["success_rate"])
    print(f"validation {arm} {task}: {summary['successes']}/{summary['episodes']}")
complete = {arm: sum(r) / len(r) for arm, r in rates.items() if len(r) == 3}
if complete:
    print("shipped (best mean validation success):", max(complete, key=complete.get), complete)
PY
      if [ -e "$KEPT/lam/config.json" ]; then  # the LAM's quality: latent_use and the probe of its latent
        # shellcheck disable=SC2046
        python benchmarks/bench_lam_probe.py "$KEPT/lam" $(demonstrations) | tee -a "$KEPT/report.txt"
      fi
      ;;
    suspend)  # before the machine goes: each unfinished run's last state (weights, optimiser,
      # RNG: 144 MB for Stage III) into KEPT/resume/RUN, for the train phase to go on from anywhere
      for run in "$WORK"/runs/*/; do
        run=$(basename "$run")
        if [ -e "$WORK/runs/$run/done" ] || [ ! -e "$WORK/runs/$run/last/train_state.pt" ]; then continue; fi
        rm -rf "${KEPT:?}/resume/$run" && mkdir -p "$KEPT/resume/$run"
        find "$WORK/runs/$run/last" -maxdepth 1 -type f ! -name train_state.pt -exec cp {} "$KEPT/resume/$run/" \;
        # in pieces a git host takes (GitHub refuses files over 100 MB)
        split -b 45M "$WORK/runs/$run/last/train_state.pt" "$KEPT/resume/$run/train_state.pt.part-"
        echo "suspended $run: $KEPT/resume/$run"
      done
      ;;
    *)
      echo "unknown phase $phase (demos, video, train, eval, report, suspend)" >&2
      exit 2
      ;;
  esac
done
echo "paper_experiment: $PHASES done in $WORK"
