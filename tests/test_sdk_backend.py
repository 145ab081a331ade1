"""The ARX SDK backend, against a recording fake of ``SingleArm`` whose methods are checked
against the vendor's installed source: if ARX renames or re-signs a method we call, this
fails (the compiled SDK cannot be imported here: it is built for CPython 3.12)."""

import ast
import importlib.util
import inspect
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from arx_r5_driver.backends.sdk import R5_ARM_TYPE, SdkArm

USED = (
    "__init__",
    "get_joint_positions",
    "set_joint_positions",
    "set_catch_pos",
    "gravity_compensation",
    "go_home",
    "protect_mode",
)


def vendor_methods() -> dict[str, list[str]]:
    """SingleArm's methods in the installed vendor source: name -> parameter names."""
    spec = importlib.util.find_spec("arx_r5_sdk")
    source = (Path(next(iter(spec.submodule_search_locations))) / "single_arm.py").read_text()
    tree = ast.parse(source)
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "SingleArm")
    return {
        f.name: [a.arg for a in f.args.args] + (["**" + f.args.kwarg.arg] if f.args.kwarg else [])
        for f in cls.body
        if isinstance(f, ast.FunctionDef)
    }


class FakeSingleArm:
    """Records calls; same method names and parameters as the vendor's SingleArm."""

    def __init__(self, config):
        self.config = config
        self.calls = []
        self.joints = [0.1, -0.2, 0.3, 0.0, 0.1, -0.1, 2.5]

    def get_joint_positions(self, joint_names=None):
        self.calls.append(("get_joint_positions",))
        return self.joints

    def set_joint_positions(self, positions, **kwargs):
        self.calls.append(("set_joint_positions", np.asarray(positions).copy()))

    def set_catch_pos(self, pos):
        self.calls.append(("set_catch_pos", pos))

    def gravity_compensation(self):
        self.calls.append(("gravity_compensation",))

    def go_home(self):
        self.calls.append(("go_home",))

    def protect_mode(self):
        self.calls.append(("protect_mode",))


def test_the_fake_matches_the_vendor_api_we_use():
    vendor = vendor_methods()
    for name in USED:
        assert name in vendor, f"SingleArm.{name} is gone from the vendor SDK"
        fake = inspect.signature(getattr(FakeSingleArm, name))
        fake_params = [("**" + p.name) if p.kind is p.VAR_KEYWORD else p.name for p in fake.parameters.values()]
        assert fake_params == vendor[name], f"SingleArm.{name}{vendor[name]} changed (fake: {fake_params})"


@pytest.fixture
def arm(monkeypatch):
    module = types.ModuleType("arx_r5_sdk.single_arm")
    module.SingleArm = FakeSingleArm
    monkeypatch.setitem(sys.modules, "arx_r5_sdk.single_arm", module)
    return SdkArm("can1", control_period=0.005)


def test_the_adapter_configures_an_r5_and_maps_units(arm):
    assert arm.arm.config == {"can_port": "can1", "type": R5_ARM_TYPE, "num_joints": 6, "dt": 0.005}
    joints, gripper = arm.read()
    np.testing.assert_allclose(joints, [0.1, -0.2, 0.3, 0.0, 0.1, -0.1])
    assert gripper == pytest.approx(0.04)  # SDK 2.5 of 5 -> 40 mm
    arm.command(np.array([0.2, -0.3, 0.4, 0.0, 0.0, 0.1]), gripper=0.08)
    name, sent = arm.arm.calls[-2]
    assert name == "set_joint_positions"
    np.testing.assert_allclose(sent, [0.2, -0.3, 0.4, 0.0, 0.0, 0.1])
    assert arm.arm.calls[-1] == ("set_catch_pos", 5.0)
    arm.gravity_compensation()
    arm.close()
    assert [c[0] for c in arm.arm.calls[-2:]] == ["gravity_compensation", "protect_mode"]


def test_the_sdk_is_imported_only_when_the_backend_is_built():
    import subprocess

    code = "import sys, arx_r5_driver.backends.sdk; assert 'arx_r5_sdk.single_arm' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
