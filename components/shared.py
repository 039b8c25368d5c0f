"""The shared multi-tenant inference service: one Cloud Run service in each shared region.

Multi-tenant routing (buckets of tenant models, the global load balancer) builds on these services.
Until the server's shared mode exists they run the bundled demo model so each region answers health.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from components.layout import ServicePlan
from components.service import ServiceInputs, declare_service


@dataclass(frozen=True)
class SharedInferenceArgs:
    regions: list[tuple[ServicePlan, ServiceInputs]]  # one service per shared region, with its inputs


class SharedInference(pulumi.ComponentResource):
    """Outputs `urls`, `service_names` and `regions`, each keyed by region id."""

    def __init__(self, name: str, args: SharedInferenceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("yolo-fleet:index:SharedInference", name, None, opts)
        declared = {plan.region.id: declare_service(plan, inputs, parent=self) for plan, inputs in args.regions}
        self.urls = {rid: d.service.uri for rid, d in declared.items()}
        self.service_names = {rid: d.service.name for rid, d in declared.items()}
        self.regions = list(declared)
        self.register_outputs({"urls": self.urls, "service_names": self.service_names, "regions": self.regions})
