"""What the nodes of this package share. The generic helpers (parameters with descriptors,
stamps, QoS profiles, diagnostics, the node main) live in ``rotvla_common.ros``, shared with
the ARX R5 executor; they are re-exported here for this package's nodes."""

from __future__ import annotations

from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

from rotvla_common.ros import (  # noqa: F401
    ERROR,
    LATCHED_QOS,
    OK,
    RELIABLE_QOS,
    SENSOR_QOS,
    STALE,
    WARN,
    Param,
    declare,
    declare_table,
    diagnostic_array,
    now_seconds,
    run_node,
    to_duration,
    to_seconds,
    to_time,
)

# Observations: only the newest matters, so best effort: a lost sample is simply skipped.
# Reliable delivery of these large messages stalled the whole stream for seconds when one
# sample was lost under load (the reader holds later samples back until the writer repairs
# the gap), measured on a 2-core machine during checkpoint loads.
OBSERVATION_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)

# The instruction in force, latched (the camera ingestion node copies it into observations).
