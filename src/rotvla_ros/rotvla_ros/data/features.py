"""The column and feature names of a LeRobot v3 dataset that the converter writes and the
reader reads: LeRobot's, and ours beside them (who drove each frame)."""

STATE_KEY, ACTION_KEY = "observation.state", "action"
INDEX_COLUMNS = ("episode_index", "frame_index", "index", "task_index")  # LeRobot's int64 bookkeeping
# Ours: the source of each frame's action (an index into rotvla_common.contract.CONTROL_SOURCES)
# and whether an operator drove it in an episode the policy also drove. Other tools' files
# lack them; a reader takes their absence as "not an intervention".
SOURCE_KEY, INTERVENTION_KEY = "action_source", "intervention"
