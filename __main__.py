"""yolo-fleet: dedicated YOLO endpoints in any Cloud Run region, plus the shared inference API.

Reads the stack config and the region catalog, resolves what runs where (stopping on the first
mistake, before any resource exists), then declares the image, the API key digests, every dedicated
endpoint, and the shared services with their model buckets and the load balancer in front of them.
"""

from pathlib import Path

import pulumi

from components import names
from components.api_keys import ApiKeyDigests, ApiKeyDigestsArgs
from components.catalog import load_catalog
from components.endpoint import DedicatedEndpoint, DedicatedEndpointArgs
from components.errors import FleetError
from components.image import ServerImage, ServerImageArgs, check_prebuilt
from components.layout import ServicePlan, plan_fleet
from components.model_files import check_model_files
from components.monitoring import FleetDashboard, FleetDashboardArgs, MonitoringInputs, notification_channels
from components.routing import BalancerArgs, LoadBalancer, plan_balancer
from components.service import ServiceInputs, declare_account
from components.shared import SharedInference, SharedInferenceArgs
from components.stack_config import load_stack_config

HERE = Path(__file__).resolve().parent

try:
    config = load_stack_config()
    catalog = load_catalog(HERE / config.catalog)
    layout = plan_fleet(catalog, config, f"Pulumi.{pulumi.get_stack()}.yaml", pulumi.get_stack())
    balancer = plan_balancer(config, layout, f"Pulumi.{pulumi.get_stack()}.yaml", pulumi.get_stack())
    model_files = check_model_files(config.models, HERE, f"Pulumi.{pulumi.get_stack()}.yaml")
    gpu_services = [s.name for s in layout.services if s.settings.gpu]
    check_prebuilt(config.image, config.gpu_image, gpu_services, f"Pulumi.{pulumi.get_stack()}.yaml")
except FleetError as error:
    raise pulumi.RunError(str(error)) from None  # a message, not a traceback

stack = pulumi.get_stack()
labels = {"managed-by": "yolo-fleet", "stack": names.label_value(stack)}

image = ServerImage("server-image", ServerImageArgs(
    project=config.project,
    locations=sorted({catalog.registries[s.region.geography] for s in layout.services}),
    repository_id=names.repository_id(stack),
    context=str(HERE),
    dockerfile=str(HERE / "inference_service" / "Dockerfile"),
    stack=stack,
    prebuilt=config.image,
    labels=labels,
    model_files=[m.file for m in config.models],
    gpu=bool(gpu_services),  # the GPU variant only when some service asks for a GPU
    prebuilt_gpu=config.gpu_image,
))
keys = ApiKeyDigests("api-keys", ApiKeyDigestsArgs(config.project, stack, config.api_key_sha256, labels))


channels = notification_channels(config.notification_channels, config.project)


def service_inputs(plan: ServicePlan, uptime_host: str | None = None) -> ServiceInputs:
    """GPU services run the GPU variant of the image, the others the small CPU one."""
    return ServiceInputs(project=config.project, stack=stack,
                         image=image.ref(catalog.registries[plan.region.geography], gpu=plan.settings.gpu),
                         api_keys_secret=keys.secret_id, deletion_protection=config.deletion_protection,
                         monitoring=MonitoringInputs(config.project, stack, channels, config.slo, uptime_host))


# One account per model, shared by its endpoints: they all read the same API keys secret and nothing else.
model_accounts = {
    model: declare_account(account_id, f"Runs the dedicated inference endpoints of model {model} (stack {stack})",
                           config.project, keys.secret_id)
    for model, account_id in layout.model_accounts.items()
}
endpoints = [
    DedicatedEndpoint(plan.name, DedicatedEndpointArgs(plan, service_inputs(plan), model_accounts[plan.model.name]))
    for plan in layout.endpoints if plan.model
]
shared = routing = None
routes = balancer.shared if balancer else None
if routes:  # the shared API: a service and bucket per shared region, behind the balancer
    shared = SharedInference("shared", SharedInferenceArgs(
        [(plan, service_inputs(plan, uptime_host=routes.hosts[plan.region.id]))
         for plan in layout.shared], config.tenants, routes, labels))
if balancer:  # one global balancer: the shared API's hosts and, with `domain`, a host per model and endpoint
    routing = LoadBalancer("lb", BalancerArgs(
        config.project, stack, balancer, config.tls, config.rate_limit,
        shared={plan.region.id: (plan, shared.service_names[plan.region.id]) for plan in layout.shared} if shared
        else {},
        endpoints={plan.name: (plan, e.service_name) for plan, e in zip(layout.endpoints, endpoints, strict=True)},
        monitoring=MonitoringInputs(config.project, stack, channels, config.slo)))

dashboard = FleetDashboard("dashboard", FleetDashboardArgs(
    config.project, stack, layout.services, url_map=names.compute_name(stack) if balancer else None))

pulumi.export("endpoints", {plan.name: {"url": e.url, "region": e.region, "model": e.model,
                                         "service": plan.service_name}
                            for plan, e in zip(layout.endpoints, endpoints, strict=True)})
pulumi.export("shared", shared.urls if shared else {})
if routing and shared:
    pulumi.export("shared_balancer", {"ip_address": routing.ip_address, "hosts": routing.shared_hosts})
    pulumi.export("shared_buckets", shared.buckets)
if routing and balancer and balancer.domain:  # the custom URLs: create each host's DNS A record at the address
    pulumi.export("balancer", {"ip_address": routing.ip_address, "models": routing.model_urls,
                               "endpoints": routing.endpoint_urls})
pulumi.export("image_digest", image.digest)
if image.gpu_digest is not None:
    pulumi.export("gpu_image_digest", image.gpu_digest)
pulumi.export("models", {m.name: {"file": m.file, "task": m.task, "imgsz": list(m.imgsz) if m.imgsz else None,
                                  "classes": m.classes, "end2end": m.end2end} for m in model_files})
