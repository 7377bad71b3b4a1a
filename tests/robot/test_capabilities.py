"""Which rig declares which capability (robot/capabilities.py), and that each declared member is
really implemented by the rig: a rig that subclasses a protocol and forgets a member would inherit
the protocol's empty body and answer None."""

from __future__ import annotations

import inspect

import pytest

from robot import capabilities as cap
from robot.real_rig import AlohaRig
from robot.sim.sim_rig import SimRig
from robot.sim_leaders import SimLeadersRig

CAPABILITIES = (cap.Startable, cap.Resettable, cap.HasLeaders, cap.LeadersFollow, cap.Calibratable, cap.ReportsHealth,
                cap.EvaluatesTask, cap.Simulation)
DECLARED = {
    SimRig: {cap.Resettable, cap.EvaluatesTask, cap.Simulation},
    SimLeadersRig: {cap.Resettable, cap.EvaluatesTask, cap.Simulation, cap.Startable, cap.HasLeaders, cap.ReportsHealth},
    AlohaRig: {cap.Startable, cap.HasLeaders, cap.LeadersFollow, cap.ReportsHealth, cap.Calibratable},
}


def protocol_members(protocol) -> set[str]:
    return {name for name in vars(protocol) if not name.startswith("_")}


@pytest.mark.parametrize("rig_class", list(DECLARED), ids=lambda c: c.__name__)
def test_each_rig_declares_its_capabilities(rig_class):
    declared = {p for p in CAPABILITIES if p in rig_class.__mro__}  # explicit bases, not structure
    assert declared == DECLARED[rig_class]


@pytest.mark.parametrize("rig_class", list(DECLARED), ids=lambda c: c.__name__)
def test_every_declared_member_is_implemented_by_the_rig(rig_class):
    for protocol in DECLARED[rig_class]:
        for name in protocol_members(protocol):
            owner = next(k for k in rig_class.__mro__ if name in vars(k))
            assert owner not in CAPABILITIES, f"{rig_class.__name__}.{name} is the empty body of {owner.__name__}"
            assert not inspect.isabstract(owner)
