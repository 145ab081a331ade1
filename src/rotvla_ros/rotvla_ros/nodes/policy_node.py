"""Policy node: Observation in, ActionChunk out, checkpoints swapped live.

- Inference runs in a worker thread of its own, one at a time, always on the newest
  observation; subscriptions and services stay responsive while it works. Every forward
  pass of the process runs on that thread, the warm-up of a checkpoint being swapped in
  too (interleaved with the serving model's inferences): two threads computing at once make
  their thread pools fight over the cores, which on a small machine stalled inference for
  up to seconds.
- A chunk carries the observation's capture stamp, the checkpoint id, the latent plan and
  per-stage timings. Observations older than ``max_observation_age`` and outputs with NaN/inf
  are refused (logged, counted, reported on /diagnostics); nothing is published for them.
- ``/rotvla/load_checkpoint`` loads, validates (the contract of ``rotvla_common.contract``:
  step period, image size, cameras, action layout; the weights; a finite warm-up) and swaps
  between two inferences; the old model serves until then and stays on
  any failure; a second request during a load is refused at once.
- ``/rotvla/set_instruction`` changes the instruction; the instruction in force is latched
  on /rotvla/instruction (the camera ingestion node copies it into observations).
- The predicted EEF path of each arm is published for RViz on /rotvla/planned_path.

Run it in a MultiThreadedExecutor (``main`` does): the load service blocks its own thread
for as long as a load takes.
"""

from __future__ import annotations

import dataclasses
import gc
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Point
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from std_msgs.msg import ColorRGBA, String
from visualization_msgs.msg import Marker, MarkerArray

from rotvla_common import topics
from rotvla_common.action_space import CAMERA_NAMES, DUAL_ARM_EEF_ACTION_NAMES
from rotvla_common.contract import Contract, contract_mismatches, eef_state, quaternion_to_matrix
from rotvla_common.text import bounded
from rotvla_msgs.msg import ActionChunk, Observation, StageTiming
from rotvla_msgs.srv import LoadCheckpoint, SetInstruction

from ..ingest.images import ImageFormatError, image_to_rgb
from ..policy import CheckpointError, NonFiniteOutputError, ObservationError, Policy, load_policy
from ..policy.policy import INFERENCE_MODES, default_device
from .common import (
    ERROR,
    LATCHED_QOS,
    OBSERVATION_QOS,
    OK,
    RELIABLE_QOS,
    WARN,
    Param,
    declare_table,
    diagnostic_array,
    now_seconds,
    to_duration,
    to_seconds,
)

# The policy node's parameters (config/robot.yaml and sim.yaml set the deployment's values).
PARAMETERS: dict[str, Param] = {
    "checkpoint": Param("", "Checkpoint directory to serve at start (empty: none until load_checkpoint)."),
    "device": Param("auto", "Torch device: auto (cuda when available, else cpu), cpu, cuda, cuda:N."),
    "cpu_threads": Param(
        0,
        "Torch intra-op threads on the CPU (0: torch's default, one per core). On a machine whose cores the "
        "other nodes keep busy, 1: a multi-threaded op waits for its slowest thread, and a busy core makes "
        "every op wait.",
        read_only=True,
        low=0,
    ),
    "dtype": Param(
        "",
        "Compute dtype; empty: bfloat16 on GPU, float32 on CPU.",
        choices=("", "bfloat16", "float16", "float32"),
    ),
    "instruction": Param("", "Instruction at start (the bringup gives the task's, sim.tasks)."),
    "max_instruction_chars": Param(1000, "Longest instruction accepted, characters.", low=1),
    "max_observation_age": Param(0.3, "Observations older than this (s) are refused.", low=0.0),
    "replan_period": Param(
        0.0,
        "Serve an observation only this long (s) after the last one served: the executor runs that much "
        "of each chunk before the next replaces it (Diffusion Policy's n_action_steps; 0: every observation).",
        low=0.0,
    ),
    "seed": Param(-1, "Seed of the sampled noise per chunk (-1: random).", low=-1),
    "warmup_passes": Param(2, "Warm-up predictions before a checkpoint serves.", low=0),
    "inference_mode": Param(
        "",
        "eager, graph (CUDA: the denoising loop as one CUDA graph) or compile (torch.compile of the whole "
        "chunk); empty: graph on CUDA, eager on CPU. Captured/compiled at load.",
        choices=("", *INFERENCE_MODES),
    ),
    "min_swap_interval": Param(
        1.0,
        "A load requested sooner than this (s) after the last swap is refused: back-to-back swaps would "
        "keep the stream at half rate.",
        low=0.0,
    ),
    "action_names": Param(list(DUAL_ARM_EEF_ACTION_NAMES), "The robot's action layout; a checkpoint must match it."),
    "camera_names": Param(list(CAMERA_NAMES), "Cameras the robot has."),
    "image_size": Param(
        0,
        "Side of the images the camera ingestion makes, px: a checkpoint trained on another size is "
        "refused (0: not checked).",
        low=0,
    ),
    "step_period": Param(
        0.0,
        "The robot's chunk step period, s (1 / the fps its demonstrations are converted at): a checkpoint "
        "trained at another is refused; 0: any.",
        low=0.0,
    ),
    "future_tolerance": Param(0.05, "Observations stamped further ahead of the clock (s) are refused.", low=0.0),
    "frame_prefix": Param("", "Prefix of the arm base frames (<prefix><arm>_base_link)."),
}


def observation_state(obs: Observation, arms: tuple[str, ...]) -> np.ndarray:
    """The contract's robot state (A,) from an Observation: each arm's EEF pose (eef_poses,
    in the order of ``arms``, framed ``<arm>_base_link``) and gripper opening (joint_state
    ``<arm>_gripper``); raises ObservationError when any is missing."""
    positions = dict(zip(obs.joint_state.name, obs.joint_state.position))
    parts = []
    for arm in arms:
        pose = next((p for p in obs.eef_poses if p.header.frame_id.endswith(f"{arm}_base_link")), None)
        if pose is None or f"{arm}_gripper" not in positions:
            raise ObservationError(
                f"the observation has no EEF pose or gripper of the {arm} arm (the checkpoint takes the state)"
            )
        p, q = pose.pose.position, pose.pose.orientation
        parts.append(
            eef_state((p.x, p.y, p.z), quaternion_to_matrix((q.x, q.y, q.z, q.w)), positions[f"{arm}_gripper"])
        )
    return np.concatenate(parts)


ARM_COLOURS = {"left": ColorRGBA(r=0.1, g=0.4, b=1.0, a=1.0), "right": ColorRGBA(r=1.0, g=0.3, b=0.1, a=1.0)}


@dataclass
class PolicyCounters:
    """What the node refused and did since it started (published in /diagnostics)."""

    chunks: int = 0
    stale_observations: int = 0
    future_observations: int = 0
    nonfinite_outputs: int = 0
    bad_observations: int = 0
    swaps: int = 0
    failed_swaps: int = 0


@dataclass(frozen=True)
class LoadResult:
    """The outcome of a checkpoint load, as /rotvla/load_checkpoint answers it."""

    success: bool
    message: str
    previous_checkpoint_id: str
    load_seconds: float = 0.0
    warmup_seconds: float = 0.0


@dataclass
class _PendingSwap:
    """A loaded, validated checkpoint waiting for the inference thread to warm it up."""

    policy: Policy
    passes: int
    passes_done: int = 0
    seconds: float = 0.0
    error: Exception | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def finish(self, error: Exception | None) -> None:
        self.error = error
        self.done.set()


class PolicyNode(Node):
    def __init__(self, **kwargs):
        super().__init__("policy", **kwargs)
        # The ~400k objects of the imports (torch, transformers) live for the whole process;
        # taken out of the collector's view, a full collection no longer pauses every thread
        # for ~0.2 s (measured on 2 cores) while it scans them. Models loaded later are not
        # frozen and are collected as usual.
        gc.collect()
        gc.freeze()
        values = declare_table(self, PARAMETERS)
        self.device = default_device() if values["device"] == "auto" else values["device"]
        if values["cpu_threads"] > 0:
            torch.set_num_threads(values["cpu_threads"])
        self.dtype = values["dtype"] or None
        self.inference_mode = values["inference_mode"] or None
        self.instruction = values["instruction"]
        self.max_instruction_chars = values["max_instruction_chars"]
        self.max_observation_age = values["max_observation_age"]
        self.replan_period = values["replan_period"]
        self.seed = values["seed"]
        self.warmup_passes = values["warmup_passes"]
        self.min_swap_interval = values["min_swap_interval"]
        self.action_names = tuple(values["action_names"])
        self.arms = tuple(dict.fromkeys(name.split("/")[0] for name in self.action_names))
        self.camera_names = tuple(values["camera_names"])
        self.image_size = values["image_size"]
        self.step_period = values["step_period"]
        self.future_tolerance = values["future_tolerance"]
        self.frame_prefix = values["frame_prefix"]
        # A thread loading a checkpoint holds the GIL in long stretches of Python: hand it back to
        # the inference thread every millisecond (the default 5 ms stalls each inference op).
        sys.setswitchinterval(0.001)

        self._lock = threading.Condition()  # guards _policy, _latest, _stopping
        self._policy: Policy | None = None
        self._latest: Observation | None = None
        self._stopping = False
        self._loading = threading.Lock()
        self._pending: _PendingSwap | None = None  # a candidate the worker is warming up
        self._last_swap = -float("inf")  # monotonic time the last swap completed
        self.counters = PolicyCounters()
        self.last_timings: dict[str, float] = {}
        self.sequence = 0
        self._last_served_stamp = -float("inf")

        self._create_interfaces()
        self._worker = threading.Thread(target=self._inference_loop, name="rotvla-inference", daemon=True)
        self._worker.start()  # before the first load: it does the warm-up
        if values["checkpoint"]:
            result = self.load(values["checkpoint"], self.device, self.dtype)
            self._last_swap = -float("inf")  # the interval is between requested swaps, not after start-up
            self._log_outcome(result.success, result.message)
        else:
            self.get_logger().warning("no checkpoint: nothing is published until /rotvla/load_checkpoint")

    def _create_interfaces(self) -> None:
        self.chunk_publisher = self.create_publisher(ActionChunk, topics.ACTION_CHUNK, RELIABLE_QOS)
        self.path_publisher = self.create_publisher(MarkerArray, topics.PLANNED_PATH, RELIABLE_QOS)
        self.instruction_publisher = self.create_publisher(String, topics.INSTRUCTION, LATCHED_QOS)
        self.diagnostics = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, RELIABLE_QOS)
        self.create_subscription(
            Observation,
            topics.OBSERVATION,
            self._on_observation,
            OBSERVATION_QOS,
            callback_group=MutuallyExclusiveCallbackGroup(),
        )
        services = ReentrantCallbackGroup()
        self.create_service(LoadCheckpoint, topics.LOAD_CHECKPOINT, self._on_load_checkpoint, callback_group=services)
        self.create_service(SetInstruction, topics.SET_INSTRUCTION, self._on_set_instruction, callback_group=services)
        self.create_timer(1.0, self._publish_diagnostics, callback_group=MutuallyExclusiveCallbackGroup())
        self.instruction_publisher.publish(String(data=self.instruction))

    # -- checkpoints ----------------------------------------------------------------------

    @property
    def checkpoint_id(self) -> str:
        with self._lock:
            return self._policy.checkpoint_id if self._policy else ""

    def load(self, path: str, device: str, dtype: str | None) -> LoadResult:
        """Load, validate and swap in a checkpoint. Refuses at once if another load is running."""
        if not self._loading.acquire(blocking=False):
            self.counters.failed_swaps += 1
            return LoadResult(
                False, "busy: another checkpoint is being loaded; try again when it has finished", self.checkpoint_id
            )
        previous = self.checkpoint_id
        since = time.monotonic() - self._last_swap
        if since < self.min_swap_interval:
            self._loading.release()
            self.counters.failed_swaps += 1
            return LoadResult(
                False,
                f"too soon: the last swap was {since:.2f} s ago (min_swap_interval {self.min_swap_interval:g} s)",
                previous,
            )
        try:
            started = time.perf_counter()
            candidate = load_policy(
                path,
                device=device,
                dtype=dtype,
                expected_action_names=self.action_names,
                inference_mode=self.inference_mode,
            )
            deployment = Contract(
                self.step_period, self.image_size or candidate.contract.image_size, self.camera_names, self.action_names
            )
            mismatches = contract_mismatches(candidate.contract, deployment)
            if mismatches:
                raise CheckpointError(f"{path} was trained for another deployment: {'; '.join(mismatches)}")
            loaded = time.perf_counter()
            # The capture/compile runs here, on the loader thread, while the old checkpoint serves.
            prepared = candidate.prepare()
            pending = _PendingSwap(candidate, self.warmup_passes, seconds=prepared)
            with self._lock:
                self._pending = pending
                self._lock.notify()
            pending.done.wait()
            if pending.error is not None:
                raise pending.error
            self.counters.swaps += 1
            self._last_swap = time.monotonic()
            message = f"serving {candidate.checkpoint_id} on {device} (was {previous or 'none'})"
            if candidate.fast_path():
                message += f"; {candidate.fast_path()} in {prepared:.2f} s"
            return LoadResult(True, message, previous, loaded - started, pending.seconds)
        except Exception as error:  # whatever a file from outside makes fail: refused, never the node's end
            self.counters.failed_swaps += 1
            kept = f"; still serving {previous}" if previous else ""
            return LoadResult(False, bounded(f"{type(error).__name__}: {error}", 2000) + kept, previous)
        finally:
            self._loading.release()

    def _log_outcome(self, ok: bool, message: str) -> None:
        # rclpy fixes one severity per call site: one call each.
        if ok:
            self.get_logger().info(message)
        else:
            self.get_logger().error(message)

    def _on_load_checkpoint(self, request: LoadCheckpoint.Request, response: LoadCheckpoint.Response):
        self.get_logger().info(f"load_checkpoint {bounded(request.path)!r}")
        result = self.load(request.path, request.device or self.device, request.dtype or self.dtype)
        self._log_outcome(result.success, result.message)
        response.success, response.message = result.success, result.message
        response.checkpoint_id, response.previous_checkpoint_id = self.checkpoint_id, result.previous_checkpoint_id
        response.load_seconds, response.warmup_seconds = result.load_seconds, result.warmup_seconds
        return response

    def _on_set_instruction(self, request: SetInstruction.Request, response: SetInstruction.Response):
        response.previous_instruction = self.instruction
        if not request.instruction.strip():
            response.success = False
            response.message = f"refused: an empty instruction; the instruction stays {bounded(self.instruction, 80)!r}"
            self.get_logger().error(response.message)
            return response
        if len(request.instruction) > self.max_instruction_chars:
            response.success = False
            response.message = (
                f"refused: {len(request.instruction)} characters (max_instruction_chars "
                f"{self.max_instruction_chars}); the instruction stays {bounded(self.instruction, 80)!r}"
            )
            self.get_logger().error(response.message)
            return response
        self.instruction = request.instruction
        self.instruction_publisher.publish(String(data=request.instruction))
        response.success, response.message = True, f"instruction set to {request.instruction!r}"
        policy = self._policy
        if policy is not None and policy.instructions and request.instruction not in policy.instructions:
            # Served all the same (language generalisation is the model's to show), but said.
            response.message += f"; checkpoint {policy.checkpoint_id} was not trained on it"
            self.get_logger().warning(response.message)
        else:
            self.get_logger().info(response.message)
        return response

    # -- inference ------------------------------------------------------------------------

    def _on_observation(self, msg: Observation) -> None:
        with self._lock:
            self._latest = msg  # only the newest is ever served
            self._lock.notify()

    def _inference_loop(self) -> None:
        """Serve the newest observation; between two inferences, one warm-up pass of a
        pending checkpoint, which is swapped in (atomically, here) once warm."""
        while True:
            with self._lock:
                while not self._stopping and self._pending is None and (self._latest is None or self._policy is None):
                    self._lock.wait(timeout=0.5)
                if self._stopping:
                    if self._pending is not None:
                        self._pending.finish(RuntimeError("the policy node is shutting down"))
                    return
                obs, policy, pending = self._latest, self._policy, self._pending
                if policy is not None:
                    self._latest = None
            if obs is not None and policy is not None:
                try:
                    self._serve(obs, policy)
                except Exception as error:  # the worker must survive anything one inference does
                    self.get_logger().error(f"inference failed: {type(error).__name__}: {error}")
            if pending is not None and self._warm_up_step(pending):
                with self._lock:
                    self._pending = None
                    if pending.error is None:
                        self._policy = pending.policy
                pending.finish(pending.error)

    def _warm_up_step(self, pending: _PendingSwap) -> bool:
        """One warm-up pass of ``pending``; True when it is warm or has failed."""
        started = time.perf_counter()
        try:
            pending.policy.warmup_pass(pending.passes_done)
        except Exception as error:  # NaN/inf (NonFiniteOutputError) or anything the new model does
            pending.error = error
            return True
        finally:
            pending.seconds += time.perf_counter() - started
        pending.passes_done += 1
        return pending.passes_done >= pending.passes

    def _serve(self, obs: Observation, policy: Policy) -> None:
        age = now_seconds(self) - to_seconds(obs.header.stamp)
        if age > self.max_observation_age:
            self.counters.stale_observations += 1
            self.get_logger().warning(
                f"observation {obs.sequence} is {age:.3f} s old: refused", throttle_duration_sec=2.0
            )
            return
        if age < -self.future_tolerance:
            self.counters.future_observations += 1
            self.get_logger().warning(
                f"observation {obs.sequence} is stamped {-age:.3f} s in the future: refused", throttle_duration_sec=2.0
            )
            return
        stamp = to_seconds(obs.header.stamp)
        if stamp < self._last_served_stamp:  # the clock went back (a reset): start the rhythm again
            self._last_served_stamp = -float("inf")
        if stamp < self._last_served_stamp + self.replan_period - 1e-3:
            return  # the chunk in force still runs
        self._last_served_stamp = stamp
        try:
            images = {name: image_to_rgb(image) for name, image in zip(obs.camera_names, obs.images)}
            observation = {"images": images, "instruction": self.instruction}
            if policy.uses_state:
                observation["state"] = observation_state(obs, self.arms)
            output = policy.predict(observation, seed=None if self.seed < 0 else self.seed)
        except (ImageFormatError, ObservationError) as error:
            self.counters.bad_observations += 1
            self.get_logger().error(f"observation {obs.sequence} refused: {error}", throttle_duration_sec=2.0)
            return
        except NonFiniteOutputError as error:
            self.counters.nonfinite_outputs += 1
            self.get_logger().error(f"{error}: nothing published", throttle_duration_sec=2.0)
            return
        self.last_timings = output.timings
        chunk = ActionChunk()
        chunk.header.stamp = obs.header.stamp
        chunk.sequence = self.sequence
        chunk.observation_sequence = obs.sequence
        chunk.checkpoint_id = policy.checkpoint_id
        chunk.dt = to_duration(output.dt)
        chunk.horizon = output.actions.shape[0]
        chunk.action_names = list(output.action_names)
        chunk.actions = output.actions.astype(np.float32).ravel().tolist()
        chunk.latent_tokens, chunk.latent_dim = output.plan.shape[0], output.plan.shape[1]
        chunk.latent_plan = output.plan.astype(np.float32).ravel().tolist()
        chunk.inference_time = output.timings["total"]
        chunk.timings = [StageTiming(stage=k, seconds=v) for k, v in output.timings.items()]
        self.chunk_publisher.publish(chunk)
        self.path_publisher.publish(self._planned_path(chunk, output.actions, output.action_names))
        self.sequence += 1
        self.counters.chunks += 1

    def _planned_path(self, chunk: ActionChunk, actions: np.ndarray, names: tuple[str, ...]) -> MarkerArray:
        markers = MarkerArray()
        horizon_s = chunk.horizon * to_seconds(chunk.dt)
        for i, arm in enumerate(sorted({n.split("/")[0] for n in names if n.endswith("/x")})):
            xyz = [names.index(f"{arm}/{axis}") for axis in ("x", "y", "z")]
            marker = Marker(ns=topics.PLANNED_PATH, id=i, type=Marker.LINE_STRIP, action=Marker.ADD)
            marker.header.stamp = chunk.header.stamp
            marker.header.frame_id = f"{self.frame_prefix}{arm}_base_link"
            marker.scale.x = 0.005
            marker.color = ARM_COLOURS.get(arm, ColorRGBA(r=0.5, g=0.5, b=0.5, a=1.0))
            marker.pose.orientation.w = 1.0
            marker.points = [Point(x=float(p[0]), y=float(p[1]), z=float(p[2])) for p in actions[:, xyz]]
            marker.lifetime = to_duration(max(horizon_s, 0.5))
            markers.markers.append(marker)
        return markers

    def _publish_diagnostics(self) -> None:
        values = dataclasses.asdict(self.counters)
        values.update(
            checkpoint_id=self.checkpoint_id or "none",
            device=self.device,
            loading=self._loading.locked(),
            instruction=self.instruction,
        )
        values.update({f"last_{k}_s": v for k, v in self.last_timings.items() if not k.startswith("denoise_step")})
        if not values["checkpoint_id"] or values["checkpoint_id"] == "none":
            level, message = ERROR, "no checkpoint loaded"
        elif self.counters.nonfinite_outputs or self.counters.stale_observations:
            level, message = (
                WARN,
                (
                    f"{self.counters.nonfinite_outputs} non-finite outputs, "
                    f"{self.counters.stale_observations} stale observations refused"
                ),
            )
        else:
            level, message = OK, f"serving {values['checkpoint_id']}"
        self.diagnostics.publish(diagnostic_array(self, "rotvla/policy", level, message, values))

    def destroy_node(self):
        # Also for a node whose construction failed part way (a bad parameter): it has no
        # worker or lock yet, and rclpy destroys it all the same.
        lock, worker = getattr(self, "_lock", None), getattr(self, "_worker", None)
        if lock is not None:
            with lock:
                self._stopping = True
                lock.notify_all()
        if worker is not None and worker.is_alive():
            worker.join(timeout=5.0)
        return super().destroy_node()


def main(args=None):
    from .entry_points import policy_node

    policy_node(args)


if __name__ == "__main__":
    main()
