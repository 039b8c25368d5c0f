"""The pack's enforcement levels and policy settings: the `config:` key of policy/PulumiPolicy.yaml.

One file drives both `pulumi preview --policy-pack policy` (as the pack's initial config) and
`fleet policy` / `fleet diff`, so a level changed there changes it everywhere.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pulumi_policy import EnforcementLevel

from components.catalog import read_yaml
from components.errors import FleetError, file_label
from policy.policies import POLICIES

PACK_FILE = Path(__file__).with_name("PulumiPolicy.yaml")
LEVELS = {level.value: level for level in EnforcementLevel if level is not EnforcementLevel.REMEDIATE}


class PackConfigError(FleetError):
    """policy/PulumiPolicy.yaml's config names an unknown policy, level or setting."""


@dataclass(frozen=True)
class PolicySetting:
    level: EnforcementLevel
    options: dict[str, Any] = field(default_factory=dict)


def load_pack_config(path: Path = PACK_FILE) -> dict[str, PolicySetting]:
    """Every policy's level and options: the policy's own default, then the file's `config:` entry."""
    data = read_yaml(path, PackConfigError)
    config = data.get("config") or {} if isinstance(data, dict) else None
    if not isinstance(config, dict):
        raise PackConfigError(f"{path}: config: expected a mapping of policy name to level or settings")
    policies = {p.name: p for p in POLICIES}
    settings = {p.name: PolicySetting(p.enforcement_level or EnforcementLevel.ADVISORY) for p in POLICIES}
    shown = file_label(path)
    for name, value in config.items():
        where = f"{shown}: config.{name}"
        if name not in policies:
            guess = difflib.get_close_matches(str(name), policies, n=1)
            hint = f" (did you mean '{guess[0]}'?)" if guess else ""
            raise PackConfigError(f"{where}: unknown policy{hint}; policies: {', '.join(policies)}")
        options = dict(value) if isinstance(value, dict) else {"enforcementLevel": value}
        level = options.pop("enforcementLevel", settings[name].level.value)
        if level not in LEVELS:
            raise PackConfigError(f"{where}: enforcement level must be one of {', '.join(LEVELS)} (got {level!r})")
        schema = policies[name].config_schema
        known = set(schema.properties) if schema else set()
        unknown = sorted(set(options) - known)
        if unknown:
            raise PackConfigError(f"{where}: unknown setting(s) {', '.join(unknown)}; this policy takes "
                                  f"{', '.join(sorted(known)) or 'only enforcementLevel'}")
        settings[name] = PolicySetting(LEVELS[level], options)
    return settings


def initial_config(settings: dict[str, PolicySetting]) -> dict[str, EnforcementLevel | dict[str, Any]]:
    """The settings in the form pulumi_policy.PolicyPack(initial_config=...) takes."""
    return {name: {"enforcementLevel": s.level, **s.options} for name, s in settings.items()}
