"""Plain-text tables for the terminal: the plan and the region catalog."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from components.catalog import GEOGRAPHIES, Catalog
from fleet.apis import required_apis, unknown_warning
from fleet.mocks import RecordedResource, resource_id
from fleet.program import ALERT_POLICY, CLOUD_RUN, Plan
from fleet.traffic import previous, revision

URL_MAP = "gcp:compute/uRLMap:URLMap"
BACKEND = "gcp:compute/backendService:BackendService"
NEG = "gcp:compute/regionNetworkEndpointGroup:RegionNetworkEndpointGroup"
BUCKET = "gcp:storage/bucket:Bucket"
SSL_POLICY = "gcp:compute/sSLPolicy:SSLPolicy"
SECURITY_POLICY = "gcp:compute/securityPolicy:SecurityPolicy"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells)


def _int(value: object) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def resource_regions(plan: Plan) -> dict[tuple[str, str], str]:
    """(type, name) -> region: its own `location` (or `region`), else that of the Cloud Run service it watches
    (monitoring labelled `service: <Cloud Run service name>`); anything else is global."""
    service_region = {r.inputs["name"]: str(r.inputs["location"]) for r in plan.custom(CLOUD_RUN)}
    return {(r.type, r.name): str(r.inputs.get("location") or r.inputs.get("region")
                                  or service_region.get((r.inputs.get("userLabels") or {}).get("service"), "global"))
            for r in plan.resources}


def monitoring_summary(plan: Plan) -> dict[str, str]:
    """Cloud Run service name -> '3 alerts, uptime, 2 SLOs': what watches it (resources labelled service=<name>)."""
    kinds = {ALERT_POLICY: "alerts", "gcp:monitoring/uptimeCheckConfig:UptimeCheckConfig":
             "uptime", "gcp:monitoring/slo:Slo": "SLOs"}
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for r in plan.custom():
        service = (r.inputs.get("userLabels") or {}).get("service")
        if r.type in kinds and service:
            counts[service][kinds[r.type]] += 1
    return {name: ", ".join("uptime" if kind == "uptime" else f"{c[kind]} {kind}"
                            for kind in ("alerts", "uptime", "SLOs") if c[kind])
            for name, c in counts.items()}


def service_rows(services: list[RecordedResource], outputs: dict[str, Any],
                 monitoring: dict[str, str]) -> list[list[object]]:
    urls = {name: e["url"] for name, e in outputs.get("endpoints", {}).items()}
    urls.update({f"shared@{rid}": url for rid, url in outputs.get("shared", {}).items()})
    rows = []
    for s in services:
        t = s.inputs["template"]
        limits = t["containers"][0]["resources"]["limits"]
        role = t["labels"]["role"]
        url = urls.get(s.name) or urls.get(f"shared@{s.inputs['location']}", "")
        rows.append([s.name, s.inputs["name"], role, t["labels"].get("model", "-"), s.inputs["location"],
                     _int(t["scaling"]["minInstanceCount"]), _int(t["scaling"]["maxInstanceCount"]),
                     limits["cpu"], limits["memory"], "l4" if "nvidia.com/gpu" in limits else "-",
                     monitoring.get(s.inputs["name"], "none"), url])
    return rows


def balancer_routes(plan: Plan) -> list[tuple[str, str, str, str]]:
    """(host, path, region, Cloud Run service) for every rule of the balancer's URL map, as declared. A model's
    host reaches the nearest healthy of its regions: its row names how many and their services."""
    negs = {resource_id(r.name): r.inputs for r in plan.custom(NEG)}
    backends = {resource_id(r.name): [negs[b["group"]] for b in r.inputs["backends"]] for r in plan.custom(BACKEND)}

    def target(backend_id: str) -> tuple[str, str]:
        groups = backends[backend_id]
        if len(groups) == 1:
            return groups[0]["region"], groups[0]["cloudRun"]["service"]
        services = [g["cloudRun"]["service"] for g in groups]
        return f"nearest healthy of {len(groups)}", f"{services[0]} ... {services[-1]}" if len(services) > 2 \
            else ", ".join(services)

    rows = []
    for url_map in (m for m in plan.custom(URL_MAP) if m.inputs.get("hostRules")):
        matchers = {m["name"]: m for m in url_map.inputs["pathMatchers"]}
        for rule in url_map.inputs["hostRules"]:
            matcher = matchers[rule["pathMatcher"]]
            for host in rule["hosts"]:
                rows += [(host, ", ".join(p["paths"]), *target(p["service"])) for p in matcher.get("pathRules", [])]
                rows.append((host, "* (default)", *target(matcher["defaultService"])))
    return rows


def render_routing(plan: Plan) -> list[str]:
    routes = balancer_routes(plan)
    if not routes:
        return []
    address = (plan.outputs.get("balancer") or plan.outputs.get("shared_balancer") or {}).get("ip_address", "")
    buckets = [[b.inputs["location"], b.inputs["name"], "read-only /models of that region's shared service"]
               for b in sorted(plan.custom(BUCKET), key=lambda b: b.inputs["location"])]
    tls = ", ".join(f"{r.inputs['minTlsVersion']} minimum ({r.inputs['profile']})" for r in plan.custom(SSL_POLICY))
    limits = [f"{rule['description']}{' (preview: logged, not enforced)' if rule.get('preview') else ''}"
              for r in plan.custom(SECURITY_POLICY) for rule in r.inputs["rules"] if rule.get("rateLimitOptions")]
    out = [f"Load balancer routing ({len({r[0] for r in routes})} hosts; HTTPS at {address}; point each host's DNS A "
           "record there)", f"  TLS: {tls or 'no SSL policy'}; Cloud Armor: {'; '.join(limits) or 'no rate limit'}",
           table(["HOST", "PATH", "REGION", "SERVICE"], routes), ""]
    if buckets:
        out += ["Tenant model buckets (models never leave their region)",
                table(["REGION", "BUCKET", "MOUNTED"], buckets), ""]
    return out


def render_models(plan: Plan) -> list[str]:
    """Each model file as its ONNX metadata describes it (the program exports what it read)."""
    models = plan.outputs.get("models", {})
    if not models:
        return []
    rows = [[name, m["file"], m["task"], {True: "end-to-end", False: "raw (NMS in the server)"}.get(m["end2end"], "-"),
             "x".join(map(str, m["imgsz"])) if m["imgsz"] else "-", "-" if m["classes"] is None else m["classes"]]
            for name, m in models.items()]
    return [f"Models ({len(rows)}, from their ONNX metadata)",
            table(["NAME", "FILE", "TASK", "EXPORT", "IMGSZ", "CLASSES"], rows), ""]


def render_revisions(services: list[RecordedResource]) -> list[str]:
    """Per dedicated service: the revision its template creates and, in a rollout wave, the old one beside it."""
    rows = []
    for s in services:
        if s.inputs["template"]["labels"]["role"] != "dedicated":
            continue
        old = previous(s.inputs)
        rows.append([s.name, s.inputs["location"], old[0] if old else "-", revision(s.inputs),
                     f"{old[1]:g}% / {100 - old[1]:g}% (canary)" if old else "- / 100%"])
    if not rows:
        return []
    waves = sum(row[2] != "-" for row in rows)
    title = (f"Revisions: {waves} service(s) in a rollout wave (the new revision also at its `canary` tag URL)"
             if waves else "Revisions (named by model, image and settings: README \"Rolling out a new model\")")
    return [title, table(["NAME", "REGION", "OLD REVISION", "NEW REVISION", "SPLIT OLD / NEW"], rows), ""]


def render_apis(plan: Plan) -> list[str]:
    apis, unknown = required_apis(plan)
    lines = [f"Google APIs the stack uses ({len(apis)}; enable them once per project: "
             f"`fleet apis --stack {plan.stack}` prints the gcloud line)", *(f"  {api}" for api in apis)]
    return [*lines, *([f"  warning: {unknown_warning(unknown)}"] if unknown else []), ""]


def render_plan(plan: Plan, catalog: Catalog) -> str:
    services = sorted(plan.custom(CLOUD_RUN), key=lambda s: (s.inputs["template"]["labels"]["role"], s.name))
    custom = plan.custom()
    regions = resource_regions(plan)
    geography = {r.id: r.geography for r in catalog.regions}
    out = [f"yolo-fleet plan for stack '{plan.stack}' (offline, under mocks): what `pulumi up` would create", ""]

    out += [f"Cloud Run services ({len(services)})",
            table(["NAME", "CLOUD RUN SERVICE", "ROLE", "MODEL", "REGION", "MIN", "MAX", "CPU", "MEMORY", "GPU",
                   "MONITORING", "URL (after deploy)"],
                  service_rows(services, plan.outputs, monitoring_summary(plan))), ""]

    out += render_models(plan)
    out += render_revisions(services)
    by_type = Counter(r.type for r in custom)
    out += render_routing(plan)
    out += ["Resources by type", table(["TYPE", "COUNT"], sorted(by_type.items())), ""]

    per_region: dict[str, Counter[str]] = defaultdict(Counter)
    for r in custom:
        per_region[regions[(r.type, r.name)]][r.type] += 1
    region_rows = [[rid, geography.get(rid, "-"), c[CLOUD_RUN], sum(c.values())]
                   for rid, c in sorted(per_region.items(), key=lambda kv: (kv[0] == "global", kv[0]))]
    out += ["Resources by region", table(["REGION", "GEOGRAPHY", "SERVICES", "RESOURCES"], region_rows), ""]
    out += render_apis(plan)

    dedicated = [s for s in services if s.inputs["template"]["labels"]["role"] == "dedicated"]
    warm = sum(int(s.inputs["template"]["scaling"]["minInstanceCount"]) for s in services)
    out.append(
        f"Summary: {len(custom)} resources to create; {len(services)} Cloud Run services "
        f"({len(dedicated)} dedicated in {len({s.inputs['location'] for s in dedicated})} regions, "
        f"{len(services) - len(dedicated)} shared); "
        + (f"{warm} instance{'s' if warm > 1 else ''} kept warm (min_instances), the rest scale to zero." if warm
           else "every service scales to zero (no min_instances)."))
    return "\n".join(out)


def render_regions(catalog: Catalog) -> str:
    shared = set(catalog.shared.regions)
    rows = [[r.id, r.city, r.country, r.geography, r.tier, "l4" if r.gpu_available else "-",
             "yes" if r.enabled else "no", "yes" if r.id in shared else "-",
             ", ".join(f"{k}={v}" for k, v in r.overrides.changes().items()) or "-"]
            for r in catalog.regions]
    counts = Counter(r.geography for r in catalog.regions)
    enabled = Counter(r.geography for r in catalog.enabled)
    per_geo = [[g, counts[g], enabled[g], catalog.registries.get(g, "-")] for g in GEOGRAPHIES if counts[g]]
    return "\n".join([
        table(["REGION", "CITY", "COUNTRY", "GEOGRAPHY", "TIER", "GPU", "ENABLED", "SHARED", "OVERRIDES"], rows),
        "",
        table(["GEOGRAPHY", "REGIONS", "ENABLED", "REGISTRY"], per_geo),
        "",
        f"{len(catalog.regions)} regions ({len(catalog.enabled)} enabled), "
        f"{sum(r.gpu_available for r in catalog.regions)} with nvidia-l4, shared inference in "
        f"{', '.join(catalog.shared.regions)}.",
    ])
