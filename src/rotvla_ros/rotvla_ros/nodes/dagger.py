"""rotvla_dagger: the deploy -> correct -> retrain -> swap loop (HG-DAgger) in simulation, one
command; on the robot the same steps run by hand (README), a person deciding when to take over.

    rotvla_dagger --task block_to_plate --checkpoint models/sim-block_to_plate --output runs/dagger \\
        --dataset datasets/block_to_plate [--rounds 2] [--episodes 20] [--steps 1000]

Each round, with the stack serving the current checkpoint and the task's scripted expert
standing by as the operator (``rotvla_run --operator --record``):

1. Episodes on fresh demonstration seeds, each recorded. The policy drives; the operator takes
   over (``/rotvla/set_control_source``) when a rule of ``TakeoverRules`` fires, from what
   the robot itself measures, and finishes the task; the policy gets the arms back before the
   next episode.
2. Every round's episodes so far are converted (the frames the operator drove after a
   takeover are marked ``intervention``).
3. Stage III fine-tunes the served checkpoint on the aggregate of the demonstrations and the
   corrections (``rotvla_train ... --init-checkpoint <served> --set pooled=true --set
   policy_frames=false``: the frames the policy drove are left out, the operator's drawn
   ``intervention_weight`` times an epoch), in a process of its own, the simulation paused
   (``/sim/pause``).
4. The result is swapped into the running policy node (``/rotvla/load_checkpoint``): the next
   round is served by it.

``<output>/rounds.json`` records each round: the checkpoint served, its episodes (takeovers,
their reason and time, success) and the intervention rate.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import JointState
from std_srvs.srv import SetBool

from rotvla_common import topics
from rotvla_common.contract import POLICY, TELEOP
from rotvla_msgs.srv import LoadCheckpoint, SetControlSource, StartEpisode, StopEpisode

from .common import SENSOR_QOS
from .sim_episodes import SimEpisodes, stack_session


@dataclass
class TakeoverRules:
    """When the operator takes the arms, judged from what the robot measures (the task's arms'
    end-effector poses and grippers), every ``period`` s of sim time once the policy has had
    ``grace`` s:

    - ``stalled``: no end effector of the task's arms moved ``stall_distance`` m within the
      last ``stall_seconds`` s (the policy hesitates between modes, or gave up);
    - ``empty grasp``: a gripper of the task's arms has been closed to under ``closed`` m for
      ``closed_seconds`` s: the fingers hold nothing (a block keeps them 4 cm apart, a cup's
      wall 4 mm);
    - ``budget``: the policy has driven ``budget`` s without finishing.

    The object leaving its path, the third rule a person applies, needs the object's pose,
    which no sensor of the robot gives: not a rule here."""

    grace: float = 2.0
    stall_seconds: float = 3.0
    stall_distance: float = 0.01
    closed: float = 0.003
    closed_seconds: float = 1.0
    budget: float = 20.0
    period: float = 0.1

    def verdict(self, history: deque, elapsed: float) -> str:
        """The reason to take over now, or "" (``history``: (sim time, tips (A, 3), grippers (A,)),
        oldest first)."""
        if elapsed >= self.budget:
            return f"budget: {self.budget:g} s without finishing"
        if elapsed < self.grace or not history:
            return ""
        now = history[-1][0]
        recent = [(t, tips, grippers) for t, tips, grippers in history if t >= now - self.stall_seconds]
        if now - history[0][0] >= self.stall_seconds:
            tips = np.stack([tips for _, tips, _ in recent])  # (N, A, 3)
            if (np.linalg.norm(tips - tips[-1], axis=-1).max(0) < self.stall_distance).all():
                return f"stalled: no end effector moved {self.stall_distance * 100:g} cm in {self.stall_seconds:g} s"
        closing = [grippers for t, _, grippers in history if t >= now - self.closed_seconds]
        if now - history[0][0] >= self.closed_seconds and (np.stack(closing) < self.closed).all(0).any():
            return f"empty grasp: a gripper closed for {self.closed_seconds:g} s"
        return ""


@dataclass
class EpisodeRecord:
    seed: int
    success: bool
    takeover: str = ""  # the rule that fired ("" when the policy finished alone)
    takeover_at: float | None = None  # sim s from the episode's start
    duration: float = 0.0
    path: str = ""


@dataclass
class RoundRecord:
    round: int
    checkpoint: str
    episodes: list[EpisodeRecord] = field(default_factory=list)
    trained: str = ""  # the checkpoint trained at the end of the round
    trained_id: str = ""  # its id, as the policy node reported it when it swapped it in
    sim_seconds_training: float = 0.0  # sim time that passed while it trained (paused: none)

    @property
    def intervention_rate(self) -> float:
        return sum(bool(e.takeover) for e in self.episodes) / max(len(self.episodes), 1)


class Operator(SimEpisodes):
    """The episodes' client: watches the task's arms as the rules need, switches who drives."""

    def __init__(self, arms: tuple[str, ...]):
        super().__init__("dagger_operator")
        self.arms = arms
        self.tips: dict[str, np.ndarray] = {}
        self.grippers: dict[str, float] = {}
        for arm in arms:
            self.node.create_subscription(
                PoseStamped, topics.eef_pose(arm), lambda msg, arm=arm: self._on_pose(arm, msg), SENSOR_QOS
            )
        self.node.create_subscription(JointState, topics.JOINT_STATES, self._on_joints, SENSOR_QOS)

    def pause(self, paused: bool) -> None:
        reply = self.require(SetBool, topics.SIM_PAUSE, SetBool.Request(data=paused), 60.0)
        if not reply.success:
            raise RuntimeError(f"the simulation did not {'pause' if paused else 'resume'}: {reply.message}")

    def _on_pose(self, arm: str, msg: PoseStamped) -> None:
        p = msg.pose.position
        self.tips[arm] = np.array([p.x, p.y, p.z])

    def _on_joints(self, msg: JointState) -> None:
        index = {n: i for i, n in enumerate(msg.name)}
        for arm in self.arms:
            if f"{arm}_gripper" in index:
                self.grippers[arm] = float(msg.position[index[f"{arm}_gripper"]])

    def drive(self, source: str) -> None:
        reply = self.require(SetControlSource, topics.SET_CONTROL_SOURCE, SetControlSource.Request(source=source), 60.0)
        if not reply.success:
            raise RuntimeError(f"switching to {source}: {reply.message}")

    def episode(self, task: str, instruction: str, seed: int, rules: TakeoverRules, time_limit: float) -> EpisodeRecord:
        """One recorded episode from a reset: the policy drives until it succeeds or a rule
        fires; then the operator, until success or ``time_limit`` s of sim time."""
        request = StartEpisode.Request(task=task, instruction=instruction, operator_name="simulated operator")
        started = self.require(StartEpisode, topics.RECORDER_START, request, 60.0)
        if not started.success:
            raise RuntimeError(f"the recorder did not start: {started.message}")
        start, record = self.sim_time, EpisodeRecord(seed, False)
        history: deque = deque()
        next_check = start
        while not self.success and self.sim_time - start < time_limit:
            self.executor.spin_once(timeout_sec=0.02)
            if record.takeover or self.sim_time < next_check or set(self.tips) != set(self.arms):
                continue
            next_check = self.sim_time + rules.period
            history.append(
                (
                    self.sim_time,
                    np.stack([self.tips[a] for a in self.arms]),
                    np.array([self.grippers.get(a, 1.0) for a in self.arms]),
                )
            )
            while (
                history
                and history[0][0] < self.sim_time - max(rules.stall_seconds, rules.closed_seconds) - rules.period
            ):
                history.popleft()
            reason = rules.verdict(history, self.sim_time - start)
            if reason:
                self.drive(TELEOP)
                record.takeover, record.takeover_at = reason, self.sim_time - start
        record.success, record.duration = self.success, self.sim_time - start
        request = StopEpisode.Request(task_success=record.success, notes=f"seed {seed}")
        stopped = self.require(StopEpisode, topics.RECORDER_STOP, request, 60.0)
        record.path = stopped.path if stopped.success else ""
        if record.takeover:
            self.drive(POLICY)
        return record

    def swap(self, checkpoint: Path, timeout: float = 600.0) -> str:
        request = LoadCheckpoint.Request(path=str(checkpoint.resolve()))
        reply = self.require(LoadCheckpoint, topics.LOAD_CHECKPOINT, request, timeout)
        if not reply.success:
            raise RuntimeError(f"the policy node refused {checkpoint}: {reply.message}")
        return reply.checkpoint_id


def fine_tune(
    served: str,
    datasets: list[Path],
    output: Path,
    config: Path,
    steps: int,
    weight: int,
    settings: list[str],
    log: Path,
    lam_checkpoint: Path | None = None,
) -> Path:
    """Stage III from the served checkpoint on ``datasets`` (a process of its own), with the
    latent planner when the frozen LAM is given, else robot actions alone; the new checkpoint
    directory."""
    command = [
        sys.executable,
        "-m",
        "rotvla_ros.train.cli",
        "stage3",
        *("--config", str(config), "--init-checkpoint", served, "--output", str(output), "--steps", str(steps)),
        *(arg for dataset in datasets for arg in ("--dataset", str(dataset))),
        *("--set", "latent_planner=false", "--set", f"intervention_weight={weight}"),
        # HG-DAgger's aggregate: every demonstration and correction frame drawn alike, none of
        # the frames the policy drove (their labels are its own actions).
        *("--set", "pooled=true", "--set", "policy_frames=false"),
        *(arg for setting in settings for arg in ("--set", setting)),
    ]
    with open(log, "w") as out:
        code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT).returncode
    if code != 0:
        raise RuntimeError(f"fine-tuning failed (exit {code}): {log}")
    return output / "last"


def correction_frames(dataset: Path) -> int:
    """How many frames of a converted round the operator drove after a takeover."""
    from ..data.lerobot_dataset import LeRobotV3Dataset

    return int(LeRobotV3Dataset(dataset).intervention.sum())


def write_rounds(output: Path, history: list[RoundRecord]) -> None:
    (output / "rounds.json").write_text(
        json.dumps([{**asdict(r), "intervention_rate": r.intervention_rate} for r in history], indent=2)
    )


def run_loop(
    task: str,
    checkpoint: Path,
    output: Path,
    *,
    datasets: list[Path],
    rounds: int,
    episodes: int,
    first_seed: int,
    steps: int,
    config: Path,
    intervention_weight: int = 2,
    rules: TakeoverRules | None = None,
    settings: list[str] = (),
    lam_checkpoint: Path | None = None,
) -> list[RoundRecord]:
    from ..data.convert import ConversionConfig, ConversionError, convert
    from ..sim.tasks import TASKS

    rules = rules or TakeoverRules()
    spec = TASKS[task]
    output.mkdir(parents=True, exist_ok=True)
    recorded = output / "episodes"
    arguments = ["--task", task, "--checkpoint", str(checkpoint.resolve()), "--operator", "--record"]
    arguments += ["--ros-args", "-p", f"output_dir:={recorded.resolve()}"]
    served, history = str(checkpoint.resolve()), []
    with stack_session(arguments, output / "stack.log", "dagger_operator", lambda: Operator(spec.arms)) as client:
        for k in range(rounds):
            record = RoundRecord(k, served)
            for seed in range(first_seed + k * episodes, first_seed + (k + 1) * episodes):
                reply = client.reset(seed)
                # The operator's share of the episode: the task's own time limit.
                limit = rules.budget + spec.time_limit
                record.episodes.append(client.episode(task, reply.instruction, seed, rules, limit))
                print(f"round {k} seed {seed}: {asdict(record.episodes[-1])}", flush=True)
            kept = sorted(p for p in recorded.iterdir() if p.is_dir() and not p.name.startswith("."))
            corrections = output / f"corrections-{k}"
            try:
                convert(kept, corrections, ConversionConfig(skip_invalid=True), overwrite=True, progress=False)
            except ConversionError as error:  # every recording unusable (stream gaps on a loaded machine)
                print(f"round {k}: no recording converted ({error})", flush=True)
            if not corrections.is_dir() or not correction_frames(corrections):
                # Nothing the aggregate lacks: the served checkpoint stays.
                record.trained = served
                history.append(record)
                write_rounds(output, history)
                print(f"round {k}: no takeover, nothing to learn; still serving {served}", flush=True)
                continue
            # The stack idles while it trains: on 2 cores a real-time simulation and policy beside
            # it left the training a third of a core.
            client.pause(True)
            paused_at = client.sim_time
            trained = fine_tune(
                served,
                [*datasets, corrections],
                output / f"round-{k}",
                config,
                steps,
                intervention_weight,
                list(settings),
                output / f"train-{k}.log",
                lam_checkpoint,
            )
            client.spin_for(0.5)  # /clock messages still in flight
            record.sim_seconds_training = client.sim_time - paused_at
            client.pause(False)
            record.trained_id = client.swap(trained)
            record.trained = served = str(trained.resolve())
            history.append(record)
            write_rounds(output, history)
            print(f"round {k}: intervention rate {record.intervention_rate:.2f}; serving {served}", flush=True)
    return history


def main(argv=None) -> int:
    from rotvla_common.arguments import integer, number

    from ..eval.seeds import DEMONSTRATIONS
    from ..sim.tasks import TASKS

    parser = argparse.ArgumentParser(prog="rotvla_dagger", description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="block_to_plate")
    parser.add_argument("--checkpoint", type=Path, required=True, help="the checkpoint served first")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--dataset", type=Path, action="append", default=[], help="the demonstrations (repeatable)")
    parser.add_argument("--rounds", type=integer(1, 100), default=2)
    parser.add_argument("--episodes", type=integer(1, 1000), default=20, help="episodes a round")
    parser.add_argument("--first-seed", type=integer(0), default=DEMONSTRATIONS.start + 5000)
    parser.add_argument("--steps", type=integer(1), default=1000, help="fine-tuning steps a round")
    parser.add_argument("--config", type=Path, default=Path("config/train/sim/stage3.yaml"))
    parser.add_argument("--intervention-weight", type=integer(0, 100), default=2)
    parser.add_argument(
        "--lam-checkpoint", type=Path, help="the frozen Stage I LAM: fine-tune with the latent planner (else without)"
    )
    parser.add_argument("--budget", type=number(0.0, 600.0), default=20.0, help="s the policy gets before a takeover")
    parser.add_argument("--set", action="append", default=[], help="KEY=VALUE for the fine-tuning's config")
    args = parser.parse_args(argv)
    last_seed = args.first_seed + args.rounds * args.episodes - 1
    if args.first_seed not in DEMONSTRATIONS or last_seed not in DEMONSTRATIONS:
        parser.error(
            f"seeds {args.first_seed}-{last_seed} leave the demonstration range: evaluation scenes must stay unseen"
        )
    history = run_loop(
        args.task,
        args.checkpoint,
        args.output,
        datasets=args.dataset,
        rounds=args.rounds,
        episodes=args.episodes,
        first_seed=args.first_seed,
        steps=args.steps,
        config=args.config,
        intervention_weight=args.intervention_weight,
        rules=TakeoverRules(budget=args.budget),
        settings=args.set,
        lam_checkpoint=args.lam_checkpoint,
    )
    for record in history:
        print(f"round {record.round}: intervention rate {record.intervention_rate:.2f} -> {record.trained}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
