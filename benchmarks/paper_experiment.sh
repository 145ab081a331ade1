#!/bin/bash
# The paper's real-world experiment at simulation scale (issue 27 items 4-5; results and the
# recipe's reasons in benchmarks/README.md): one multi-task policy for the three ARX R5 tasks,
# trained three ways on the same demonstrations, steps and seeds, evaluated on the test seeds
# in the standard cell and under domain shift.
#
#   bash benchmarks/paper_experiment.sh WORK [PHASE ...]
#   PHASE: demos (record them), video (the perturbed experts'), convert, train, eval;
#   record = demos video; the default: all of them in that order.
#
# Every phase resumes: recording goes on from the seed after the last one recorded, a
# conversion or an evaluation whose output exists is skipped (and a source not recorded in
# full is not converted yet), training continues from <run>/last (--resume). Run it again
# after any interruption. The run of robot actions alone needs the demonstrations only; the
# other arms need the video too. Arms (WORK/runs/<arm>):
#   actions_only    Stage III from scratch, robot actions alone (latent_planner=false)
#   rotvla          Stage I LAM -> Stage II latent pretraining -> Stage III with the planner
#   stage2_only     the same Stage II checkpoint -> Stage III without the planner
# Stages I and II learn from the demonstrations' video and from perturbed experts' video used
# without its actions; Stage III of every arm from the same demonstrations.
set -euo pipefail
WORK=${1:?usage: paper_experiment.sh WORK [demos|video|record|convert|train|eval ...]}
shift
PHASES=${*:-demos video convert train eval}
PHASES=${PHASES//record/demos video}
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO" && source scripts/env.sh
# Recording runs a simulated stack: a DDS domain of its own keeps other graphs out of it.
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-104}
mkdir -p "$WORK"/{demos,ds,runs,eval,cache}

TASKS="block_to_plate block_into_drawer cup_stacking"
declare -A FIRST_SEED=([block_to_plate]=1000 [block_into_drawer]=3000 [cup_stacking]=2000)
declare -A PERTURBED_SEED=([block_to_plate]=1100 [block_into_drawer]=3100 [cup_stacking]=2100)
DEMOS=100      # per task, the paper's count
PERTURBED=25   # perturbed episodes per task, video only
NOISE=0.02     # rad: the expert still succeeds on most scenes (benchmarks/README.md, DAgger)
STAGE3_STEPS=16000  # three tasks at equal weight: ~5,300 steps' worth each (one task's shipped runs: 6,000-8,000)
STAGE2_STEPS=4000
STAGE1_STEPS=1000
EPISODES=100   # test seeds per task and condition

last_seed() {  # the highest seed recorded in an episode directory (episode.json: "seed N")
  cat "$1"/*/episode.json 2>/dev/null | sed -n 's/.*"notes": "seed \([0-9]*\)".*/\1/p' | sort -n | tail -1
}

record() {  # record DIR FIRST COUNT [rotvla_record options]: until COUNT episodes of DIR convert
  # An episode recorded while the machine was too busy has gaps in a stream and does not
  # convert (rotvla_convert --check says why, into DIR/.checked): more seeds are recorded, from
  # the one after the last, until COUNT do. Three rounds at most.
  local out=$1 first=$2 count=$3 last next valid bag round
  shift 3
  mkdir -p "$out" && touch "$out/.checked"
  for round in 1 2 3 4; do
    local unchecked=()
    for bag in "$out"/*/; do
      grep -qF " ${bag%/}" "$out/.checked" || unchecked+=("${bag%/}")
    done
    if [ ${#unchecked[@]} -gt 0 ]; then
      rotvla_convert --check "${unchecked[@]}" >> "$out/.checked" || true
    fi
    valid=$(grep -c '^ok ' "$out/.checked" || true)
    [ "$valid" -ge "$count" ] && return
    [ "$round" -eq 4 ] && { echo "$out: $valid of $count episodes convert after 3 rounds" >&2; return 1; }
    last=$(last_seed "$out")
    next=$((${last:-$((first - 1))} + 1))
    rotvla_record --first-seed "$next" --episodes $((count - valid)) --output "$out" "$@"
  done
}

convert() {  # convert NAME COUNT [rotvla_convert options]: WORK/demos/NAME's episodes that convert -> WORK/ds/NAME
  local name=$1 count=$2 valid
  shift 2
  [ -e "$WORK/ds/$name/meta/info.json" ] && return
  valid=$(grep -c '^ok ' "$WORK/demos/$name/.checked" 2>/dev/null || true)
  if [ "${valid:-0}" -lt "$count" ]; then
    echo "$name: ${valid:-0} of $count episodes recorded and checked: not converted yet" >&2
    return
  fi
  # shellcheck disable=SC2046  # one path a line, none with spaces
  rotvla_convert $(sed -n 's/^ok //p' "$WORK/demos/$name/.checked") --output "$WORK/ds/$name" "$@"
}

train() {  # train ARM STAGE [rotvla_train options]; a finished run leaves ARM/done
  local arm=$1 stage=$2
  shift 2
  [ -e "$WORK/runs/$arm/done" ] && return
  rotvla_train "$stage" --config "config/train/sim/$stage.yaml" --output "$WORK/runs/$arm" --resume \
    --set "latent_cache_dir=$WORK/cache" "$@"
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
    demos)
      for task in $TASKS; do
        record "$WORK/demos/$task" "${FIRST_SEED[$task]}" "$DEMOS" --task "$task"
      done
      ;;
    video)
      for task in $TASKS; do
        record "$WORK/demos/perturbed_$task" "${PERTURBED_SEED[$task]}" "$PERTURBED" --task "$task" \
          --noise "$NOISE" --keep-failures
      done
      ;;
    convert)  # each task's two datasets in a process of its own (the encoder is single-threaded)
      pids=()
      for task in $TASKS; do
        (convert "$task" "$DEMOS" && convert "perturbed_$task" "$PERTURBED" --action-label intended) \
          > "$WORK/ds/$task.log" 2>&1 &
        pids+=($!)
      done
      for pid in "${pids[@]}"; do wait "$pid"; done  # set -e: a failed conversion stops here
      ;;
    train)
      # shellcheck disable=SC2046  # the dataset lists are words on purpose
      train actions_only stage3 $(demonstrations) --steps "$STAGE3_STEPS" --set latent_planner=false --set save_every=500
      for task in $TASKS; do
        if [ ! -e "$WORK/ds/perturbed_$task/meta/info.json" ]; then
          echo "no $WORK/ds/perturbed_$task: record and convert the video first (phases video convert)" >&2
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
    eval)
      for arm in actions_only rotvla stage2_only; do
        [ -e "$WORK/runs/$arm/done" ] || continue
        for task in $TASKS; do
          for shift_ in none all; do
            out="$WORK/eval/$arm-$task-$shift_.json"
            [ -e "$out" ] && continue
            rotvla_eval "$WORK/runs/$arm/last" --task "$task" --split test --episodes "$EPISODES" \
              --shift "$shift_" --workers 2 --output "$out"
          done
        done
      done
      ;;
    *)
      echo "unknown phase $phase (demos, video, record, convert, train, eval)" >&2
      exit 2
      ;;
  esac
done
echo "paper_experiment: $PHASES done in $WORK"
