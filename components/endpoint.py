"""A dedicated endpoint: one model in one region, single tenant, its own URL; it runs as its model's account."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pulumi

from components.image import image_path
from components.layout import ServicePlan
from components.service import RuntimeAccount, ServiceInputs, declare_service


def model_path_in_image(repo_file: str) -> str:
    """models/demo-e2e.onnx in the repository is /app/models/demo-e2e.onnx in the image, weights/a/x.onnx is
    /app/weights/a/x.onnx: the image keeps repository paths (components/image.py)."""
    return str(image_path(repo_file))


@dataclass(frozen=True)
class DedicatedEndpointArgs:
    plan: ServicePlan
    service: ServiceInputs
    account: RuntimeAccount  # its model's: declared once, shared by the model's endpoints


class DedicatedEndpoint(pulumi.ComponentResource):
    """Cloud Run v2 service for `model` in `region`; outputs url, service_name, region, service_account."""

    url: pulumi.Output[str]
    service_name: pulumi.Output[str]
    service_account: pulumi.Output[str]
    region: str
    model: str

    def __init__(self, name: str, args: DedicatedEndpointArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("yolo-fleet:index:DedicatedEndpoint", name, None, opts)
        plan = args.plan
        assert plan.model is not None, "a dedicated endpoint serves one model"
        inputs = replace(
            args.service,
            server={**args.service.server, "model_path": model_path_in_image(plan.model.file)},
            labels={**args.service.labels, "model": plan.model.name})
        service = declare_service(plan, inputs, args.account, parent=self)
        self.url = service.uri
        self.service_name = service.name
        self.service_account = args.account.email
        self.region = plan.region.id
        self.model = plan.model.name
        self.register_outputs({"url": self.url, "service_name": self.service_name, "region": self.region,
                               "service_account": self.service_account})
