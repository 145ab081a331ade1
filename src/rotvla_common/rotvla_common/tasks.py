"""The paper's three real-world tasks (appendix D): each one's name, the instruction the
policy is given and the arms it uses. The one owner of these facts: the bringup (which task
configuration, which instruction), the simulated cell's scenes and the evaluation read them.
ROS-free."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskSpec:
    name: str
    instruction: str
    arms: tuple[str, ...]


TASK_SPECS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec("block_to_plate", "put the block on the plate", ("left",)),
        TaskSpec("block_into_drawer", "put the block into the drawer and close it", ("left",)),
        TaskSpec(
            "cup_stacking",
            "put the yellow cup into the red cup, then place the green cup into the yellow cup",
            ("left", "right"),
        ),
    )
}
TASK_NAMES = tuple(TASK_SPECS)
