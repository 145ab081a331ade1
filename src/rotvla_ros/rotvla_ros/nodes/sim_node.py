"""The MuJoCo cell as a ROS node: it owns sim time and everything that lives in the
simulation.

- Physics advances in steps of ``clock_period`` of sim time, paced to ``real_time_factor``
  x the wall clock (0: as fast as it can); ``/clock`` is published every step, so every
  node with ``use_sim_time`` runs on it and the stack behaves the same on a slow machine.
- The arms take joint position commands on ``/sim/joint_commands`` and report their state
  on ``/sim/joint_states`` (the executor's ``topic`` backend): the simulation is where the
  joints live.
- Three cameras render one frame per ``step_period`` (sim time) and publish what realsense2_camera
  would for three D405s: ``<namespace>/<camera>/<color_topic>`` (rgb8) and
  ``<namespace>/<camera>/color/camera_info``, frame ``<camera>_color_optical_frame``.
- ``expert: true`` runs the task's scripted expert and publishes its joint targets on
  ``/rotvla/teleop/joint_targets`` while the executor's latched ``/rotvla/control_source``
  says teleop (the executor then follows them, through its safety filter): the
  demonstrations that get recorded, and the simulated operator who takes over from a policy
  (on the switch the expert re-plans the rest of the task from where the arms and objects
  are, starting from the executor's last command).
- Task success is reported on ``/sim/task_success`` with every camera frame, and on
  ``/diagnostics`` (``rotvla/sim``).
- ``/sim/pause`` (std_srvs/SetBool) stops sim time until called with false: every node on
  it idles (``rotvla_dagger`` trains in the meantime).
- ``camera_delay`` and ``command_delay`` inject latency on purpose, in sim time: a frame is
  published (and stamped) that long after it was rendered, as a camera's exposure-to-stamp
  latency would; a joint command takes effect that long after its stamp, or on arrival if
  later (a link of fixed latency). What ``rotvla_calibrate_latency`` must recover; settable
  while the cell runs.
- ``/sim/reset`` (rotvla_msgs/ResetSimulation) draws the task's scene again from a seed (or
  another task's: a multi-task policy switched by its instruction), the arms at home, and
  restarts sim time at 0: the clock jumps back, which every node on sim
  time takes as a new world (the executor resynchronises with the arms, the camera ingestion
  forgets its frames). Evaluation and demo recording run episode after episode this way.
  Joint commands stamped after the sim's clock (sent before a reset) are ignored.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import deque

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import SetBool

from arx_r5_driver.backends.topic import JointStateCache
from arx_r5_driver.configuration import ARM_PARAMETERS, PARAMETERS
from arx_r5_driver.kinematics import ArmKinematics, joint_names
from rotvla_common import topics
from rotvla_common.action_space import CAMERA_NAMES
from rotvla_common.contract import STEP_PERIOD, TELEOP
from rotvla_msgs.srv import ResetSimulation

from ..ingest.images import fill_image
from ..sim.experts import EXPERT_DELAY, ExecutionNoise, ScriptedExpert
from ..sim.link import CommandLink
from ..sim.scene import scene_of
from ..sim.shift import SHIFT_KINDS, describe, parse_shift
from ..sim.tasks import TASK_NAMES
from ..sim.world import SimWorld
from .common import (
    LATCHED_QOS,
    OK,
    RELIABLE_QOS,
    SENSOR_QOS,
    WARN,
    Param,
    declare,
    declare_table,
    diagnostic_array,
    run_node,
    to_time,
)

# Latency injected on purpose (the calibration's test), s of sim time; settable at run time.
DELAYS = {
    "camera_delay": Param(
        0.0, "Frames are published, and stamped, this long after they are rendered, s.", low=0.0, high=0.5
    ),
    "command_delay": Param(
        0.0, "Joint commands take effect this long after their stamp (or on arrival if later), s.", low=0.0, high=0.5
    ),
}


class SimNode(Node):
    RUNTIME_PARAMETERS = tuple(DELAYS)  # read at every step: a test sets them while the cell runs

    def __init__(self, **kwargs):
        super().__init__("sim", **kwargs)
        p = functools.partial(declare, self)
        task = p("task", "block_to_plate", f"The task (sim.tasks): {', '.join(TASK_NAMES)}.", read_only=True)
        if task not in TASK_NAMES:
            raise ValueError(f"parameter task: {task!r} is not one of {', '.join(TASK_NAMES)}")
        seed = p("seed", 0, "Seed of the task's randomisation (object poses, colours).", read_only=True)
        shift = p(
            "shift",
            "none",
            "Domain shift of every scene, drawn from its seed (evaluation): none, all or a comma-separated "
            f"list of {', '.join(SHIFT_KINDS)}.",
            read_only=True,
        )
        self.shift = parse_shift(shift)  # ValueError: the node refuses to start, naming the value
        self.clock_period = p(
            "clock_period", 0.005, "Sim time per /clock message (physics steps in between), s.", read_only=True
        )
        self.real_time_factor = p(
            "real_time_factor", 1.0, "Pace: sim seconds per wall second (0: as fast as possible)."
        )
        self.camera_rate = 1.0 / p(
            "step_period", STEP_PERIOD, "The robot's step period, s: the cameras render one frame a step of sim time."
        )
        self.width = p("width", 320, "Rendered image width.", read_only=True)
        self.height = p("height", 240, "Rendered image height.", read_only=True)
        namespace = p("camera_namespace", topics.CAMERAS, "Cameras publish under <namespace>/<camera>.", read_only=True)
        colour_topic = p(
            "color_topic", "color/image_raw", "Colour image topic under each camera (realsense2_camera's)."
        )
        expert = p(
            "expert",
            False,
            "Run the task's scripted expert, the simulated operator: its targets go out on "
            "/rotvla/teleop/joint_targets while the executor's control source is teleop.",
            read_only=True,
        )
        expert_delay = p("expert_delay", EXPERT_DELAY, "Sim seconds before the expert starts.", read_only=True)
        expert_noise = p(
            "expert_noise",
            0.0,
            "Perturbed demonstrations: std (rad) of a slowly varying offset added to the expert's "
            "executed joint targets; its own targets go out on /rotvla/teleop/intended_joint_targets.",
            read_only=True,
        )
        if not (np.isfinite(expert_noise) and 0.0 <= expert_noise <= 0.2):
            raise ValueError(f"expert_noise must be between 0 and 0.2 rad, not {expert_noise}")

        mounts = {"arms": p("arms", PARAMETERS["arms"][0], "Arms of the cell.", read_only=True)}
        for arm in mounts["arms"]:
            for key in ("base_xyz", "base_rpy"):
                mounts[f"{arm}.{key}"] = p(f"{arm}.{key}", *ARM_PARAMETERS[key], read_only=True)
        self.task, self.seed, self.scene_config = task, seed, scene_of(mounts)
        self.expert_enabled, self.expert_delay, self.expert_noise = expert, expert_delay, expert_noise
        self.delays = declare_table(self, DELAYS)
        self.add_on_set_parameters_callback(self._on_parameters)
        self._frames: deque[tuple[float, dict[str, np.ndarray]]] = deque()  # (due, camera -> rgb), rendered
        self.command_ages: deque[float] = deque(maxlen=400)  # sim time from a command's stamp to its arrival, s
        self.world = SimWorld(task, seed, self.scene_config, shift=self.shift)
        self.links = {arm: CommandLink() for arm in self.world.arm_names}  # each arm's commands in flight
        self.instruction = self.world.scene.instruction
        self._reset_lock = threading.Lock()
        self._reset_request: tuple[int, str, threading.Event, dict] | None = None
        self.clock_publisher = self.create_publisher(Clock, topics.CLOCK, RELIABLE_QOS)
        self.state_publisher = self.create_publisher(JointState, topics.SIM_JOINT_STATES, SENSOR_QOS)
        self.success_publisher = self.create_publisher(Bool, topics.SIM_TASK_SUCCESS, RELIABLE_QOS)
        self.diagnostics = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, RELIABLE_QOS)
        self.image_publishers = {
            c: self.create_publisher(Image, f"{namespace}/{c}/{colour_topic}", SENSOR_QOS) for c in CAMERA_NAMES
        }
        self.info_publishers = {
            c: self.create_publisher(CameraInfo, f"{namespace}/{c}/color/camera_info", SENSOR_QOS) for c in CAMERA_NAMES
        }
        self.commands = JointStateCache(now=lambda: self.world.time)
        self.create_subscription(JointState, topics.SIM_JOINT_COMMANDS, self.commands.update, RELIABLE_QOS)
        self.create_service(ResetSimulation, topics.SIM_RESET, self._on_reset)
        self._paused = threading.Event()
        self.create_service(SetBool, topics.SIM_PAUSE, self._on_pause)
        self.expert = self._new_expert()
        # Who drives, as the executor announces it (latched): the expert's targets go out only
        # while teleop drives, and a takeover engages it from the arms' command in force.
        self._source: str | None = None  # unknown until the executor says
        self._takeover = threading.Event()
        if expert:
            self.expert_publisher = self.create_publisher(JointState, topics.TELEOP_JOINT_TARGETS, RELIABLE_QOS)
            self.intended_publisher = self.create_publisher(JointState, topics.TELEOP_INTENDED, RELIABLE_QOS)
            self.create_subscription(String, topics.CONTROL_SOURCE, self._on_control_source, LATCHED_QOS)
        self.render_seconds: list[float] = []
        self.steps = 0
        self.failed: Exception | None = None
        self.fatal_error = ""
        self._stop = threading.Event()
        self.create_timer(1.0, self._publish_diagnostics)  # wall-clock: the sim's own clock is what it publishes
        self._publish_clock()
        self._thread = threading.Thread(target=self._loop, name="mujoco", daemon=True)
        self._thread.start()
        self.get_logger().info(
            f"task {task} (seed {seed}, shift {describe(self.shift)}): {self.instruction!r}; "
            f"cameras {self.width}x{self.height} "
            f"at {self.camera_rate:g} Hz of sim time; real-time factor {self.real_time_factor:g}"
        )

    def _on_parameters(self, parameters) -> SetParametersResult:
        # Ranges are the descriptors' (checked before this); only the delays are read back here.
        for parameter in parameters:
            if parameter.name in DELAYS:
                self.delays[parameter.name] = float(parameter.value)
        return SetParametersResult(successful=True)

    def _new_expert(self) -> ScriptedExpert | None:
        if not self.expert_enabled:
            return None
        kinematics = {m.name: ArmKinematics(base_xyz=m.base_xyz, base_rpy=m.base_rpy) for m in self.world.config.arms}
        self.noise = ExecutionNoise(self.expert_noise, self.seed)  # each episode its own draw, from its seed
        return ScriptedExpert(self.world, kinematics, start_time=self.expert_delay)

    @property
    def _operator_drives(self) -> bool:
        return self._source == TELEOP

    def _on_control_source(self, msg: String) -> None:
        # A switch from another source, not a start in teleop (recording), where the expert
        # keeps its own start delay.
        if msg.data == TELEOP and self._source not in (None, TELEOP):
            self._takeover.set()  # engaged in the simulation thread, between steps
        self._source = msg.data

    def _engage_expert(self) -> None:
        """The operator takes over now, from the executor's last command (else where the arms are)."""
        commands = {}
        for arm in self.world.arm_names:
            received = self.commands.get(joint_names(arm))
            commands[arm] = (received[0][:6], float(received[0][6])) if received is not None else self.world.read(arm)
        self.expert.engage(self.world.time, commands)

    def _on_pause(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        """Sim time stops while paused: no clock, no frames, so the stack idles (a 2-core machine
        trains beside it at full speed); on resume it runs on from where it stopped."""
        if request.data:
            self._paused.set()
        else:
            self._paused.clear()
        response.success, response.message = (
            True,
            f"paused at sim time {self.world.time:.3f}" if request.data else "running",
        )
        self.get_logger().info(response.message)
        return response

    def _on_reset(self, request: ResetSimulation.Request, response: ResetSimulation.Response):
        task = request.task or self.task
        if task not in TASK_NAMES:
            response.success = False
            response.message = f"reset refused: task {task[:40]!r} is not one of {', '.join(TASK_NAMES)}"
            response.task, response.instruction = self.task, self.instruction
            return response
        done, outcome = threading.Event(), {}
        with self._reset_lock:
            self._reset_request = (int(request.seed), task, done, outcome)
        if not done.wait(timeout=30.0) or "error" in outcome:
            response.success = False
            response.message = f"reset failed: {outcome.get('error', 'the simulation did not answer in 30 s')}"
        else:
            response.success, response.message = True, f"{task} seed {request.seed}: sim time restarted at 0"
        response.task, response.instruction = self.task, self.instruction
        self.get_logger().info(response.message)
        return response

    def _apply_reset(self) -> bool:
        """In the simulation thread, between steps: a new world from the requested seed."""
        with self._reset_lock:
            request, self._reset_request = self._reset_request, None
        if request is None:
            return False
        seed, task, done, outcome = request
        try:
            world = SimWorld(task, seed, self.scene_config, shift=self.shift)
        except Exception as error:  # a seed the scene cannot be drawn from: the old world stays
            outcome["error"] = f"{type(error).__name__}: {error}"
            done.set()
            return False
        self.world.close()
        self.world, self.seed, self.task, self.instruction = world, seed, task, world.scene.instruction
        self.commands.clear()
        for link in self.links.values():  # the arms are the cell's, whatever the task
            link.clear()
        self._frames.clear()
        self.expert = self._new_expert()
        self._publish_state()  # the new state before the new time, for whoever resynchronises on it
        self._publish_clock()
        done.set()
        return True

    def _publish_clock(self) -> None:
        self.clock_publisher.publish(Clock(clock=to_time(self.world.time)))

    def _loop(self) -> None:
        try:
            self._run()
        except Exception as error:  # the simulation is dead: the node ends (run_node), the bringup with it
            self.failed = error
            self.fatal_error = f"the simulation stopped: {type(error).__name__}: {error}"

    def _run(self) -> None:
        next_frame, ticks = 0.0, 0
        wall_start, sim_start = time.monotonic(), self.world.time
        while not self._stop.is_set():
            if self._apply_reset():
                next_frame, ticks = 0.0, 0
                wall_start, sim_start = time.monotonic(), self.world.time
            if self._paused.is_set():
                self._stop.wait(0.05)
                wall_start, sim_start = time.monotonic(), self.world.time  # no catching up afterwards
                continue
            for arm, command in self._commands_in_force().items():
                self.world.command(arm, command[:6], command[6])
            ticks += 1
            self.world.step_to(ticks * self.clock_period)  # on a fixed grid: rounding to physics steps never drifts
            self.steps += 1
            self._publish_state()  # before the clock that makes it current
            self._publish_clock()
            if self.expert is not None and self._takeover.is_set():
                self._takeover.clear()
                self._engage_expert()
            if self.expert is not None and self._operator_drives:
                self._publish_expert()
            frame_due = self.world.time + 1e-9 >= next_frame
            if frame_due:
                self._frames.append((self.world.time + self.delays["camera_delay"], self._render()))
                next_frame += 1.0 / self.camera_rate
            while self._frames and self._frames[0][0] <= self.world.time + 1e-9:
                self._publish_cameras(*self._frames.popleft())
            if frame_due:
                self.success_publisher.publish(Bool(data=self.world.success()))
            if self.real_time_factor > 0:  # pace: sim time runs at most real_time_factor x wall time
                ahead = (self.world.time - sim_start) / self.real_time_factor - (time.monotonic() - wall_start)
                if ahead > 0:
                    self._stop.wait(ahead)

    def _commands_in_force(self) -> dict[str, np.ndarray]:
        """Per arm, the newest command that has come through its link (``CommandLink``)."""
        in_force = {}
        for arm in self.world.arm_names:
            link = self.links[arm]
            received = self.commands.get(joint_names(arm))
            if received is not None and (age := link.receive(self.world.time, received[1], received[0])) is not None:
                self.command_ages.append(age)
            command = link.in_force(self.world.time, self.delays["command_delay"])
            if command is not None:
                in_force[arm] = command
        return in_force

    def _joint_state(self, positions: dict[str, tuple[np.ndarray, float]]) -> JointState:
        msg = JointState(
            name=[n for arm in positions for n in joint_names(arm)],
            position=[float(v) for joints, gripper in positions.values() for v in (*joints, gripper)],
        )
        msg.header.stamp = to_time(self.world.time)
        return msg

    def _publish_state(self) -> None:
        self.state_publisher.publish(self._joint_state({arm: self.world.read(arm) for arm in self.world.arm_names}))

    def _publish_expert(self) -> None:
        intended = self.expert.targets(self.world.time)
        self.intended_publisher.publish(self._joint_state(intended))
        self.expert_publisher.publish(self._joint_state(self.noise(intended, self.world.time)))

    def _render(self) -> dict[str, np.ndarray]:
        frames = {}
        for camera in CAMERA_NAMES:
            started = time.perf_counter()
            frames[camera] = self.world.render(camera, self.width, self.height)
            self.render_seconds.append(time.perf_counter() - started)
        return frames

    def _publish_cameras(self, at: float, frames: dict[str, np.ndarray]) -> None:
        stamp = to_time(at)
        for camera, rgb in frames.items():
            image = fill_image(Image(), rgb, encoding="rgb8")
            image.header.stamp = stamp
            image.header.frame_id = f"{camera}_color_optical_frame"
            self.image_publishers[camera].publish(image)
            fx, fy, cx, cy = self.world.camera_intrinsics(camera, self.width, self.height)
            info = CameraInfo(
                width=self.width,
                height=self.height,
                distortion_model="plumb_bob",
                d=[0.0] * 5,
                k=[fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0],
                r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                p=[fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0],
            )
            info.header = image.header
            self.info_publishers[camera].publish(info)

    def _publish_diagnostics(self) -> None:
        success = self.world.success()
        renders = np.array(self.render_seconds[-30:]) if self.render_seconds else np.zeros(1)
        ages = np.array(tuple(self.command_ages) or (0.0,))  # a copy taken at once: the sim thread appends
        values = {
            "sim_time": self.world.time,
            "steps": self.steps,
            "task": self.world.task.name,
            "success": success,
            "render_ms_per_camera_p50": float(np.median(renders) * 1e3),
            "command_age_ms_p50": float(np.median(ages) * 1e3),
            "command_age_ms_max": float(ages.max() * 1e3),
        }
        if self.expert is not None:
            values["expert_done"] = self.expert.done(self.world.time)
            values["expert_ik_failures"] = self.expert.ik_failures
            values["expert_recoveries"] = self.expert.recoveries
            values["operator_drives"] = self._operator_drives
        self.diagnostics.publish(
            diagnostic_array(
                self,
                "rotvla/sim",
                OK if success or self.expert is None else WARN,
                "success" if success else "running",
                values,
            )
        )

    def destroy_node(self):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
        self.world.close()
        super().destroy_node()


def main(args=None):
    run_node(SimNode, args, num_threads=1)


if __name__ == "__main__":
    main()
