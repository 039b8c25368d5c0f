"""yolo-fleet: dedicated YOLO endpoints in any Cloud Run region, plus the shared inference API.

Reads the stack config and the region catalog, resolves what runs where (stopping on the first
mistake, before any resource exists), then declares the image, the API key digests, every dedicated
endpoint, and the shared services with their model buckets and the load balancer in front of them.
"""

from pathlib import Path

import pulumi

from components.api_keys import ApiKeyDigests
from components.catalog import load_catalog
from components.endpoint import DedicatedEndpoint, DedicatedEndpointArgs
from components.errors import FleetError
from components.image import ServerImage, ServerImageArgs
from components.layout import plan_fleet
from components.monitoring import FleetDashboard, MonitoringInputs, notification_channels
from components.routing import SharedRouting, SharedRoutingArgs, plan_routes
from components.service import ServiceInputs
from components.shared import SharedInference, SharedInferenceArgs
from components.stack_config import load_stack_config

HERE = Path(__file__).resolve().parent

try:
    config = load_stack_config()
    catalog = load_catalog(HERE / config.catalog)
    layout = plan_fleet(catalog, config, f"Pulumi.{pulumi.get_stack()}.yaml")
    routes = plan_routes(config, layout.shared, f"Pulumi.{pulumi.get_stack()}.yaml")
    missing = sorted({m.file for m in config.models if not (HERE / m.file).is_file()})
    if missing:
        raise FleetError(f"Pulumi.{pulumi.get_stack()}.yaml: models: {', '.join(missing)} not found in the "
                         "repository; the image bakes each model file in")
except FleetError as error:
    raise pulumi.RunError(str(error)) from None  # a message, not a traceback

stack = pulumi.get_stack()
labels = {"managed-by": "yolo-fleet", "stack": stack.lower()}

image = ServerImage("server-image", ServerImageArgs(
    project=config.project,
    locations=sorted({catalog.registries[s.region.geography] for s in layout.services}),
    context=str(HERE),
    dockerfile=str(HERE / "inference_service" / "Dockerfile"),
    prebuilt=config.image,
    labels=labels,
    model_files=[m.file for m in config.models],
))
keys = ApiKeyDigests("api-keys", config.project, stack, config.api_key_sha256, labels)


channels = notification_channels(config.notification_channels, config.project)


def service_inputs(geography: str, uptime_host: str | None = None) -> ServiceInputs:
    return ServiceInputs(project=config.project, stack=stack, image=image.ref(catalog.registries[geography]),
                         api_keys_secret=keys.secret_id, deletion_protection=config.deletion_protection,
                         monitoring=MonitoringInputs(config.project, stack, channels, config.slo, uptime_host))


endpoints = [
    DedicatedEndpoint(plan.name, DedicatedEndpointArgs(plan, service_inputs(plan.region.geography)))
    for plan in layout.endpoints
]
shared = routing = None
if routes:  # the shared API: a service and bucket per shared region, behind one balancer
    shared = SharedInference("shared", SharedInferenceArgs(
        [(plan, service_inputs(plan.region.geography, uptime_host=routes.hosts[plan.region.id]))
         for plan in layout.shared], config.tenants, routes, labels))
    routing = SharedRouting("shared-lb", SharedRoutingArgs(
        config.project, stack, routes,
        {plan.region.id: (plan, shared.service_names[plan.region.id]) for plan in layout.shared}))

dashboard = FleetDashboard("dashboard", config.project, stack)

pulumi.export("endpoints", {plan.name: {"url": e.url, "region": e.region, "model": e.model}
                            for plan, e in zip(layout.endpoints, endpoints, strict=True)})
pulumi.export("shared", shared.urls if shared else {})
if routing:
    pulumi.export("shared_balancer", {"ip_address": routing.ip_address, "hosts": routing.hosts})
    pulumi.export("shared_buckets", shared.buckets)
pulumi.export("image_digest", image.digest)
