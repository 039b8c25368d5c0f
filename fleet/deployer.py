"""How `fleet rollout` applies a stack: one small interface, so the rollout logic runs against a fake in tests.

The real one is the Pulumi Automation API (`pulumi.automation`) on this project directory: `pulumi up` for the
stack as its Pulumi.<stack>.yaml now says, with the policy pack. It needs the Pulumi CLI, a backend login and
Google credentials, none of which exist where the tests run, so it is never run there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from components.errors import FleetError


class DeployError(FleetError):
    """`pulumi up` did not succeed: the rollout stops where it is."""


class Deployer(Protocol):
    def apply(self, stack: str) -> None:
        """Bring `stack` to what its Pulumi.<stack>.yaml says now; DeployError if that fails."""


class AutomationDeployer:
    """`pulumi up` through the Automation API, in `work_dir`, with the policy pack at `policy_pack`."""

    def __init__(self, work_dir: Path, policy_pack: Path) -> None:
        self.work_dir, self.policy_pack = work_dir, policy_pack

    def apply(self, stack: str) -> None:
        from pulumi import automation

        try:
            selected = automation.select_stack(stack_name=stack, work_dir=str(self.work_dir))
            result = selected.up(on_output=print, policy_packs=[str(self.policy_pack)])
        except automation.errors.CommandError as error:
            raise DeployError(f"pulumi up for stack {stack} failed: {error}") from None
        if result.summary.result != "succeeded":
            raise DeployError(f"pulumi up for stack {stack} ended {result.summary.result}")
