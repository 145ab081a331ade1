"""rotvla_eval and rotvla_record on the command line: seeds from splits that never overlap, every
argument checked with its name (issue 30, item 7), and a comparison with its p-value."""

from __future__ import annotations

import re

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import REPO_ROOT
from rotvla_ros.eval import cli
from rotvla_ros.eval.report import EpisodeResult, Summary
from rotvla_ros.eval.seeds import DEMONSTRATIONS, SPLITS, TEST, VALIDATION, split_seeds
from rotvla_ros.nodes import sim_episodes
from rotvla_ros.sim.tasks import TASKS

TINY = str(REPO_ROOT / "models" / "tiny-random")


def test_validation_test_and_demonstration_seeds_never_overlap():
    ranges = {"validation": VALIDATION, "test": TEST, "demonstrations": DEMONSTRATIONS}
    for a in ranges:
        for b in ranges:
            if a < b:
                assert not set(ranges[a]) & set(ranges[b]), (a, b)
    # The tutorial's recording commands, as the README gives them, record on demonstration seeds.
    commands = re.findall(r"rotvla_record .*--episodes (\d+) --first-seed (\d+)", (REPO_ROOT / "README.md").read_text())
    assert len(commands) == 2  # through the stack, and in process
    for command in commands:
        episodes, first = map(int, command)
        assert first in DEMONSTRATIONS and first + episodes - 1 in DEMONSTRATIONS
    assert split_seeds("test", 100) == list(range(TEST.start, TEST.start + 100))
    with pytest.raises(ValueError, match="not all in the test range"):
        split_seeds("test", 10, first_seed=0)
    assert set(SPLITS) == {"validation", "test"}


@pytest.mark.parametrize(
    "arguments, named",
    [
        (["--episodes", "0"], "--episodes"),
        (["--episodes", "1.5"], "--episodes"),
        (["--policy-period", "nan"], "--policy-period"),
        (["--policy-period", "0"], "--policy-period"),
        (["--policy-period", "-1"], "--policy-period"),
        (["--time-limit", "0"], "--time-limit"),
        (["--time-limit", "inf"], "--time-limit"),
        (["--latency", "1e9"], "--latency"),
        (["--workers", "0"], "--workers"),
        (["--attach"], "--attach"),
        (["--output", "no/such/dir/results.json"], "--output"),
        (["--video-seeds", "1,x"], "--video-seeds"),
        (["--split", "train"], "--split"),
        (["--shift", "fog"], "--shift"),
        (["--shift", "all,fog"], "--shift"),
    ],
)
def test_rotvla_eval_refuses_each_bad_argument_by_name(arguments, named, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.parse([TINY, *arguments])
    assert stop.value.code == 2
    assert named in capsys.readouterr().err


def test_rotvla_eval_refuses_seeds_outside_the_split_and_a_missing_checkpoint(tmp_path, capsys):
    assert cli.main([TINY, "--split", "test", "--first-seed", "5", "--episodes", "3"]) == 2
    assert "not all in the test range" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.parse([str(tmp_path / "nothing")])
    assert "no directory" in capsys.readouterr().err


def test_rotvla_record_refuses_evaluation_seeds(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        sim_episodes.main(["--first-seed", "0", "--episodes", "10", "--output", str(tmp_path)])
    assert stop.value.code == 2 and "demonstration range" in capsys.readouterr().err


@pytest.mark.parametrize(
    "arguments, named",
    [(["--in-process", "--attach"], "--in-process runs no stack"), (["--overwrite"], "only --in-process")],
)
def test_rotvla_record_refuses_options_that_contradict_each_other(tmp_path, capsys, arguments, named):
    with pytest.raises(SystemExit) as stop:
        sim_episodes.main(["--episodes", "1", "--output", str(tmp_path / "ds"), *arguments])
    assert stop.value.code == 2 and named in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()


def test_rotvla_record_in_process_writes_perturbed_demonstrations_labelled_with_what_was_meant(tmp_path, capsys):
    output = tmp_path / "perturbed"
    arguments = ["--in-process", "--first-seed", "1000", "--episodes", "1", "--noise", "0.02", "--keep-failures"]
    arguments += ["--output", str(output)]
    assert sim_episodes.main(arguments) == 0
    assert "1 episodes" in capsys.readouterr().out
    data = pq.read_table(output / "data" / "chunk-000" / "file-000.parquet").to_pylist()
    state = np.array([r["observation.state"] for r in data])
    action = np.array([r["action"] for r in data])
    grippers, xyz = [9, 19], [0, 1, 2]
    assert np.allclose(action[:-1, grippers], state[1:, grippers])  # the grippers as measured
    # The arm as meant: off the executed (noisy) path by millimetres to centimetres, not on it.
    off = np.linalg.norm(action[:-1, xyz] - state[1:, xyz], axis=1)
    assert 0.002 < np.median(off) < 0.05, np.median(off)
    episode = pq.read_table(output / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pylist()[0]
    assert "perturbed: 0.02 rad" in episode["operator"]
    assert sim_episodes.main(arguments) == 1  # the dataset exists: --overwrite replaces it
    assert "exists" in capsys.readouterr().err
    assert sim_episodes.main([*arguments, "--overwrite"]) == 0  # and the same seeds give the same data
    assert pq.read_table(output / "data" / "chunk-000" / "file-000.parquet").to_pylist() == data


def _summary(path, successes: list[bool], seeds: list[int], name: str) -> None:
    results = [EpisodeResult("block_to_plate", s, ok, 5.0 if ok else None, 30.0) for s, ok in zip(seeds, successes)]
    Summary.of("block_to_plate", name, "in-process", results, {"split": "test"}).write(path)


def test_a_comparison_gives_both_intervals_and_the_paired_p_value(tmp_path, capsys):
    seeds = list(range(TEST.start, TEST.start + 100))
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    _summary(a, [k < 50 for k in range(100)], seeds, "actions-alone")
    _summary(b, [k < 70 for k in range(100)], seeds, "rotvla")  # 20 seeds flip to success, none back
    assert cli.main(["--compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "50/100 = 50% (95% CI 40-60%)" in out and "70/100 = 70%" in out and "test seeds" in out
    assert "+20 points" in out and "McNemar exact p = 1.91e-06" in out and "a difference" in out
    _summary(b, [k < 52 for k in range(100)], seeds, "rotvla")
    cli.main(["--compare", str(a), str(b)])
    assert "no difference at the 5% level" in capsys.readouterr().out
    _summary(b, [True] * 100, [s + 1 for s in seeds], "other seeds")
    assert cli.main(["--compare", str(a), str(b)]) == 2
    assert "other seeds" in capsys.readouterr().err


def test_an_evaluation_under_shift_runs_the_shifted_scenes_and_says_so(tmp_path, capsys, monkeypatch):
    """``--shift`` reaches the world of every episode and the result records it (one short
    episode of the random-weight checkpoint: what is checked is the plumbing, not success)."""
    from rotvla_ros.sim.world import SimWorld

    looks = []
    build = SimWorld.__init__

    def spied(self, *args, **kwargs):
        build(self, *args, **kwargs)
        looks.append(self.look)

    monkeypatch.setattr(SimWorld, "__init__", spied)
    output = tmp_path / "shifted.json"
    arguments = [TINY, "--task", "block_to_plate", "--episodes", "1", "--time-limit", "0.5", "--workers", "1"]
    assert cli.main([*arguments, "--shift", "distractors, lighting", "--output", str(output)]) == 0
    summary = Summary.read(output)
    assert summary.settings["shift"] == "lighting,distractors"
    assert "shift lighting,distractors" in capsys.readouterr().out
    assert len(looks) == 1 and looks[0].bodies_xml and len(looks[0].lights) >= 1
    assert looks[0].background is None  # only the kinds asked for


def test_a_checkpoint_is_evaluated_only_on_the_tasks_it_was_trained_on_unless_asked(tmp_path, capsys):
    """Issue 30 item 7: a drawer checkpoint was evaluated on block_to_plate without a word. A
    checkpoint records its training data's instructions; another task's is refused, by name,
    unless --unseen-task; a checkpoint that records none (older ones) is taken as it is."""
    import json
    import shutil

    checkpoint = tmp_path / "drawer"
    shutil.copytree(TINY, checkpoint)
    config = json.loads((checkpoint / "config.json").read_text())
    config["instructions"] = [TASKS["block_into_drawer"].instruction]
    (checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(SystemExit) as stop:
        cli.parse([str(checkpoint), "--task", "block_to_plate"])
    assert stop.value.code == 2 and "--task block_to_plate" in capsys.readouterr().err
    assert cli.parse([str(checkpoint), "--task", "block_to_plate", "--unseen-task"]).unseen_task
    assert cli.parse([str(checkpoint), "--task", "block_into_drawer"]).task == "block_into_drawer"
    config["instructions"] = "block"
    (checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(SystemExit):
        cli.parse([str(checkpoint), "--task", "block_into_drawer"])
    assert "instructions must be a list" in capsys.readouterr().err
    for task in TASKS:  # a checkpoint that does not say: any task
        assert cli.parse([TINY, "--task", task]).task == task
