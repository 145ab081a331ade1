"""Closed-loop evaluation of a checkpoint on the simulated tasks: seeded episodes in one
process (``episodes``) or through the ROS stack (``rotvla_ros.nodes.sim_episodes``), reported
with a confidence interval (``report``). ``rotvla_eval`` (``cli``) runs either."""
