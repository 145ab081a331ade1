"""ARX R5 trajectory executor: kinematics, chunk scheduling, safety, backends."""
