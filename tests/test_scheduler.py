"""Chunk scheduling: due times, stale steps, seams (ours vs naive switching), running dry."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from arx_r5_driver.chunks import Chunk
from arx_r5_driver.scheduler import ActionLayout, ChunkScheduler, Setpoint
from rotvla_common.action_space import DUAL_ARM_EEF_ACTION_NAMES as NAMES

LAYOUT = ActionLayout.from_names(NAMES)
CONTROL_PERIOD = 0.005  # 200 Hz
DT = 0.05


def make_chunk(stamp, horizon=20, x0=0.30, speed=0.2, yaw_rate=0.0):
    """Both arms moving along x at ``speed`` m/s (and turning about z), gripper half open."""
    actions = np.zeros((horizon, len(NAMES)))
    steps = np.arange(horizon) * DT
    yaw = Rotation.from_euler("z", (yaw_rate * steps)[:, None]).as_matrix()  # (H, 3, 3)
    for base in (0, 10):
        actions[:, base] = x0 + speed * steps
        actions[:, base + 1], actions[:, base + 2] = 0.1, 0.2
        actions[:, base + 3 : base + 6] = yaw[:, :, 0]
        actions[:, base + 6 : base + 9] = yaw[:, :, 1]
        actions[:, base + 9] = 0.04
    return Chunk(stamp, DT, actions)


def rest(x=0.30):
    return Setpoint(
        np.array([[x, 0.1, 0.2, 0.04]] * 2),
        np.zeros((2, 4)),
        Rotation.concatenate([Rotation.identity()] * 2),
        np.zeros((2, 3)),
    )


def test_knots_are_reached_at_their_due_times_and_past_steps_dropped():
    scheduler = ChunkScheduler(LAYOUT, latency_compensation=0.03)
    chunk = make_chunk(stamp=10.0)
    taken = scheduler.submit(chunk, now=10.1, current=rest(0.30 + 0.2 * 0.1))
    due = chunk.due_times(0.03)
    assert taken == int((due > 10.1).sum()) == 19  # step 0, due at 10.08, is past
    for i in range(5, 20):  # beyond the start: exactly the chunk's values at its due times
        setpoint = scheduler.sample(due[i])
        assert setpoint.linear[0, 0] == pytest.approx(chunk.actions[i, 0], abs=1e-9)
    assert scheduler.sample(10.05).linear[0, 0] == pytest.approx(0.32, abs=1e-3)  # no step from the past replayed


def run(scheduler, chunks, start, end, naive=False):
    """Sample at the control rate; each (time, chunk) is submitted when its time comes."""
    pending = list(chunks)
    times = np.arange(start, end, CONTROL_PERIOD)
    xs, current = [], rest()
    naive_chunk = None
    for t in times:
        while pending and pending[0][0] <= t:
            _, chunk = pending.pop(0)
            if naive:
                naive_chunk = chunk
            else:
                scheduler.submit(chunk, t, rest())  # used for the first chunk only
        if naive:  # switch at once to the new chunk, linear between its steps
            due = naive_chunk.due_times(0.0)
            xs.append(np.interp(t, due, naive_chunk.actions[:, 0]))
        else:
            current = scheduler.sample(t)
            xs.append(current.linear[0, 0])
    x = np.array(xs)
    velocity = np.diff(x) / CONTROL_PERIOD
    return np.abs(np.diff(x)).max(), np.abs(np.diff(velocity)).max()


def test_seams_between_disagreeing_chunks_keep_position_and_velocity_continuous():
    """The second chunk disagrees with the first by 5 cm; ours blends, naive jumps."""
    chunks = [(0.0, make_chunk(0.0)), (0.5, make_chunk(0.45, x0=0.30 + 0.2 * 0.45 + 0.05))]
    ours_step, ours_jump = run(ChunkScheduler(LAYOUT, overlap_steps=4), chunks, 0.0, 1.2)
    naive_step, naive_jump = run(None, chunks, 0.0, 1.2, naive=True)
    print(
        f"max position step per period: ours {ours_step * 1e3:.2f} mm, naive {naive_step * 1e3:.2f} mm; "
        f"max velocity jump per period: ours {ours_jump:.3f} m/s, naive {naive_jump:.3f} m/s"
    )
    # Within one control period: no position step beyond what 1 m/s allows, and no
    # velocity jump beyond what 20 m/s^2 of acceleration allows (naive: 10 m/s in one period).
    assert ours_step <= 1.0 * CONTROL_PERIOD
    assert ours_jump <= 20.0 * CONTROL_PERIOD
    assert naive_step > 10 * ours_step and naive_jump > 10 * ours_jump


def test_rotations_are_blended_on_so3_and_stay_rotations():
    scheduler = ChunkScheduler(LAYOUT, overlap_steps=4)
    scheduler.submit(make_chunk(0.0, yaw_rate=0.5), 0.0, rest())
    current = scheduler.sample(0.3)
    # The next chunk is turned by 0.3 rad about z relative to the first: blended, not jumped.
    other = make_chunk(0.3, x0=0.30 + 0.2 * 0.3, yaw_rate=0.5)
    turned = other.actions.copy()
    extra = Rotation.from_euler("z", 0.3)
    for base in (3, 13):
        matrices = np.stack([turned[:, base : base + 3], turned[:, base + 3 : base + 6]], axis=-1)
        full = np.concatenate([matrices, np.cross(matrices[..., 0], matrices[..., 1])[..., None]], axis=-1)
        rotated = (extra * Rotation.from_matrix(full)).as_matrix()
        turned[:, base : base + 3], turned[:, base + 3 : base + 6] = rotated[:, :, 0], rotated[:, :, 1]
    scheduler.submit(Chunk(0.3, DT, turned), 0.3)
    previous = current.rotation
    for t in np.arange(0.3, 1.0, CONTROL_PERIOD):
        rotation = scheduler.sample(t).rotation
        matrix = rotation.as_matrix()
        assert np.allclose(matrix @ matrix.transpose(0, 2, 1), np.eye(3), atol=1e-9)
        assert ((previous.inv() * rotation).magnitude() <= 0.02).all()  # < 4 rad/s at 200 Hz
        previous = rotation


def test_a_dry_queue_decelerates_into_a_hold():
    scheduler = ChunkScheduler(LAYOUT)
    chunk = make_chunk(0.0, horizon=10)
    scheduler.submit(chunk, 0.0, rest())
    end = scheduler.end_time()
    assert end == pytest.approx(chunk.due_times(0.0)[-1])
    final = scheduler.sample(end)
    assert np.allclose(final.linear_velocity, 0) and final.linear[0, 0] == pytest.approx(chunk.actions[-1, 0])
    later = scheduler.sample(end + 1.0)
    assert np.allclose(later.linear, final.linear) and np.allclose(later.linear_velocity, 0)
    # The last step is reached with zero velocity along a smooth cubic: never faster than a
    # third above the chunk's own speed (0.2 m/s), and slowing to zero over the last step.
    speeds = [abs(scheduler.sample(t).linear_velocity[0, 0]) for t in np.linspace(end - DT, end, 11)]
    assert max(speeds) <= 0.2 * 4 / 3 + 1e-9 and speeds[-1] == 0.0 and speeds[-2] < speeds[len(speeds) // 2]
