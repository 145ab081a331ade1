"""Stand-in for ``arx_r5_sdk.single_arm.SingleArm``: same methods and parameters as the vendor's
(tests/test_sdk_backend.py checks them), joints that follow their commands, and a log of the
arms opened (``$ARX_SDK_STAND_IN_LOG``: one JSON line per arm, its config)."""

from __future__ import annotations

import json
import os


class SingleArm:
    def __init__(self, config):
        self.config = dict(config)
        self.joints = [0.0] * 6 + [0.0]
        log = os.environ.get("ARX_SDK_STAND_IN_LOG")
        if log:
            with open(log, "a") as file:
                file.write(json.dumps(self.config) + "\n")

    def get_joint_positions(self, joint_names=None):
        return list(self.joints)

    def set_joint_positions(self, positions, **kwargs):
        self.joints[:6] = [float(p) for p in positions][:6]

    def set_catch_pos(self, pos):
        self.joints[6] = float(pos)

    def gravity_compensation(self):
        pass

    def go_home(self):
        self.joints[:6] = [0.0] * 6

    def protect_mode(self):
        pass
