#!/bin/bash
# The paper's real-world experiment at simulation scale (issue 27 items 4-5; results and the
# recipe's reasons in benchmarks/README.md): one multi-task policy for the three ARX R5 tasks,
# trained three ways on the same demonstrations, steps and seeds, evaluated on the test seeds
# in the standard cell and under domain shift.
#
#   bash benchmarks/paper_experiment.sh WORK [PHASE ...]
#   PHASE: demos (the demonstrations' datasets), video (the perturbed experts'), train, eval,
#   report (WORK/report.txt); the default: all of them in that order.
#
# Every phase resumes: a dataset or an evaluation whose output exists is skipped, training
# continues from <run>/last (--resume). Run it again after any interruption. The run of robot
# actions alone needs the demonstrations only; the other arms need the video too. Arms
# (WORK/runs/<arm>):
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
mkdir -p "$WORK"/{ds,runs,eval,cache}

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

train() {  # train ARM STAGE [rotvla_train options]; a finished run leaves ARM/done
  local arm=$1 stage=$2
  shift 2
  [ -e "$WORK/runs/$arm/done" ] && return
  rotvla_train "$stage" --config "config/train/sim/$stage.yaml" --output "$WORK/runs/$arm" --resume \
    --set "latent_cache_dir=$WORK/cache" --set "video_cache_mb=$VIDEO_CACHE_MB" "$@"
  touch "$WORK/runs/$arm/done"
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
      train stage2 stage2 $(video_pool) --steps "$STAGE2_STEPS" --lam-checkpoint "$WORK/runs/lam/last" \
        --set pooled=true
      # shellcheck disable=SC2046
      train rotvla stage3 $(demonstrations) --steps "$STAGE3_STEPS" --lam-checkpoint "$WORK/runs/lam/last" \
        --init-checkpoint "$WORK/runs/stage2/last" --set save_every=500
      # shellcheck disable=SC2046
      train stage2_only stage3 $(demonstrations) --steps "$STAGE3_STEPS" \
        --init-checkpoint "$WORK/runs/stage2/last" --set latent_planner=false --set save_every=500
      ;;
    eval)  # validation first (which arm is shipped is chosen there), then the test seeds
      for arm in actions_only rotvla stage2_only; do
        [ -e "$WORK/runs/$arm/done" ] || continue
        for task in $TASKS; do
          out="$WORK/eval/validation/$arm-$task.json"
          mkdir -p "$WORK/eval/validation"
          [ -e "$out" ] || rotvla_eval "$WORK/runs/$arm/last" --task "$task" --split validation \
            --episodes "$VALIDATION_EPISODES" --workers 2 --output "$out"
          for shift_ in none all; do
            out="$WORK/eval/$arm-$task-$shift_.json"
            [ -e "$out" ] && continue
            rotvla_eval "$WORK/runs/$arm/last" --task "$task" --split test --episodes "$EPISODES" \
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
            [ -e "$WORK/eval/$a-$task-$shift_.json" ] && [ -e "$WORK/eval/$b-$task-$shift_.json" ] || continue
            echo "## $task, shift $shift_: $a (A) vs $b (B)"
            rotvla_eval --compare "$WORK/eval/$a-$task-$shift_.json" "$WORK/eval/$b-$task-$shift_.json"
          done
        done
      done | tee "$WORK/report.txt"
      # The arm shipped as the multi-task checkpoint: the best mean success over the tasks on the
      # validation seeds (never the test seeds).
      python - "$WORK/eval/validation" <<'PY' | tee -a "$WORK/report.txt"
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
      if [ -e "$WORK/runs/lam/done" ]; then  # the LAM's quality: latent_use and the probe of its latent
        # shellcheck disable=SC2046
        python benchmarks/bench_lam_probe.py "$WORK/runs/lam/last" $(demonstrations) | tee -a "$WORK/report.txt"
      fi
      ;;
    *)
      echo "unknown phase $phase (demos, video, train, eval, report)" >&2
      exit 2
      ;;
  esac
done
echo "paper_experiment: $PHASES done in $WORK"
