"""The simulated dual-arm ARX R5 (MuJoCo): the scene, the three tasks of the paper's
appendix D with success detectors, rendered cameras, scripted experts. ROS-free."""
