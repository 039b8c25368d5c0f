"""The policy pack `pulumi preview --policy-pack policy` runs. Constructing PolicyPack starts its server,
so nothing imports this file: the rules live in policy/policies.py, where tests and `fleet policy` use them.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the pack runs from policy/; rules import the project

from pulumi_policy import EnforcementLevel, PolicyPack

from policy.config import initial_config, load_pack_config
from policy.policies import POLICIES

PolicyPack(
    name="yolo-fleet",
    policies=[*POLICIES],  # a list of the base class, as PolicyPack declares it
    enforcement_level=EnforcementLevel.ADVISORY,
    initial_config=initial_config(load_pack_config()),
)
