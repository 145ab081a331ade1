"""The deploy -> correct -> retrain -> swap loop (issue 28 item 4): the takeover rules on
their own, and one round of rotvla_dagger in simulation on the tiny checkpoint, end to end
through the stack."""

from collections import deque

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import REPO_ROOT

pytest.importorskip("rclpy")

from rotvla_common.contract import CONTROL_SOURCES  # noqa: E402
from rotvla_ros.nodes.dagger import TakeoverRules, run_loop  # noqa: E402


def _history(seconds: float, tips, grippers, period: float = 0.1) -> deque:
    """(t, tips (A, 3), grippers (A,)) every ``period`` s; ``tips(t)``, ``grippers(t)``."""
    return deque((t, np.atleast_2d(tips(t)), np.atleast_1d(grippers(t))) for t in np.arange(0, seconds, period))


def test_each_takeover_rule_fires_on_what_it_names_and_not_before():
    rules = TakeoverRules(
        grace=2.0, stall_seconds=3.0, stall_distance=0.01, closed=0.003, closed_seconds=1.0, budget=20.0
    )
    still = lambda t: np.zeros(3)  # noqa: E731
    moving = lambda t: np.array([0.05 * np.sin(t), 0.0, 0.0])  # noqa: E731
    open_ = lambda t: 0.04  # noqa: E731
    assert rules.verdict(_history(3.5, still, open_), 3.5).startswith("stalled")
    assert rules.verdict(_history(2.5, still, open_), 2.5) == ""  # not 3 s of history yet
    assert rules.verdict(_history(3.5, still, open_), 1.5) == ""  # within the grace
    assert rules.verdict(_history(8.0, moving, open_), 8.0) == ""
    closing = lambda t: 0.04 if t < 5.0 else 0.001  # noqa: E731
    assert rules.verdict(_history(5.5, moving, closing), 5.5) == ""  # closed for 0.5 s: grasping
    assert rules.verdict(_history(6.2, moving, closing), 6.2).startswith("empty grasp")
    holding = lambda t: 0.04 if t < 5.0 else 0.039  # noqa: E731  (a block between the fingers)
    assert rules.verdict(_history(8.0, moving, holding), 8.0) == ""
    assert rules.verdict(_history(8.0, moving, open_), 20.0).startswith("budget")


@pytest.mark.timeout(600)
def test_one_round_takes_over_records_the_correction_retrains_and_swaps_it_in(tmp_path, rclpy_context):
    """The tiny random policy drives block_to_plate; its budget (4 s) runs out, the simulated
    operator takes over and finishes; the episode converts with its intervention frames; Stage
    III fine-tunes the served checkpoint on it, the simulation paused; the policy node swaps
    the result in."""
    history = run_loop(
        "block_to_plate",
        REPO_ROOT / "models" / "tiny-random",
        tmp_path / "dagger",
        datasets=[],
        rounds=1,
        episodes=1,
        first_seed=6000,
        steps=2,
        config=REPO_ROOT / "config" / "train" / "stage3.yaml",
        rules=TakeoverRules(budget=4.0),
        settings=["batch_size=2", "num_workers=0", "warmup_steps=0", "save_every=2", "device=cpu"],
    )
    (round_,) = history
    (episode,) = round_.episodes
    assert episode.takeover and episode.takeover_at >= 2.0 and episode.success, episode
    assert round_.intervention_rate == 1.0
    data = pq.read_table(tmp_path / "dagger" / "corrections-0" / "data" / "chunk-000" / "file-000.parquet")
    intervention = np.array(data.column("intervention").to_pylist())
    source = np.array(data.column("action_source").to_pylist())
    # The operator's frames are marked; the policy's, where it moved the arms at all before the
    # takeover (a stalled policy's frames are the idle start the converter leaves out), are not.
    assert intervention.any() and np.array_equal(intervention, source == CONTROL_SOURCES.index("teleop"))
    assert (tmp_path / "dagger" / "round-0" / "last" / "model.safetensors").is_file()
    assert round_.trained_id and not round_.trained_id.startswith("tiny-random")
    assert round_.sim_seconds_training < 0.05  # the simulation stood still while it trained
    assert (tmp_path / "dagger" / "rounds.json").is_file()
