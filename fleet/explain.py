"""`fleet plan --explain REGION`: every setting of every service in a region, with the layer that set it.

Read from the same resolved layout the program declares its services from (components/layout.py), so the
explanation cannot disagree with the plan; what a setting beat is listed too, since a value that silently wins
over a region's own override is what this command exists to show.
"""

from __future__ import annotations

import difflib
from typing import Any

from components.catalog import Catalog, Region, slug
from components.errors import FleetError
from components.layout import FleetLayout, ServicePlan
from components.precedence import BUILT_IN_LAYER, applied
from components.settings import EndpointSettings
from fleet.render import table

GPU_QUOTA_FIT = "fitted to the GPU quota"
GPU_QUOTA_SOURCE = "yolo-fleet:gpu_quota_per_region (a region's GPU services share it: components/layout.py)"


def _text(value: object) -> str:
    """Values as they are written in YAML: true/false, 4Gi, 0.05."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def find_region(catalog: Catalog, layout: FleetLayout, wanted: str, stack: str, catalog_file: str) -> Region:
    """The catalog region `wanted` names (its id, or its city as in endpoint names); FleetError with a hint if it
    names none, or if none of the stack's services runs there."""
    by_name = {**{r.city_slug: r for r in catalog.regions}, **{r.id: r for r in catalog.regions}}
    region = by_name.get(wanted) or by_name.get(wanted.lower()) or by_name.get(slug(wanted))  # "St. Ghislain"
    if region is None:
        close = difflib.get_close_matches(wanted.lower(), by_name, n=3, cutoff=0.6)
        hint = (f"did you mean {' or '.join(dict.fromkeys(by_name[c].id for c in close))}?" if close
                else "`fleet regions` lists them")
        raise FleetError(f"--explain {wanted}: no such region in {catalog_file}; {hint}")
    if not any(s.region.id == region.id for s in layout.services):
        used = sorted({s.region.id for s in layout.services})
        why = (f"it is disabled in {catalog_file} (enabled: false)" if not region.enabled
               else "no model of the stack is deployed there and it is not a shared region")
        raise FleetError(f"--explain {wanted}: stack {stack} runs no service in {region.id}: {why}; its services "
                         f"run in {len(used)} regions, e.g. {', '.join(used[:5])}")
    return region


def explain_service(service: ServicePlan) -> list[dict[str, Any]]:
    """One row per setting: its value, the layer that set it, and the lower layers whose value it beat (only
    layers that apply: a service without a GPU never had the catalog's gpu_defaults to beat)."""
    origin = service.origins()
    layers = applied(service.layers)
    changes = [layer.values.changes() for layer in layers]  # what each layer sets, asked once per service
    built_in = EndpointSettings()  # the values no layer sets
    rows = []
    for name in type(service.settings).model_fields:
        value = getattr(service.settings, name)
        layer = origin[name]
        at = next((i for i, each in enumerate(layers) if each is layer), None)  # None: the built-in default
        beaten = [{"layer": lower.kind, "source": lower.source, "value": set_by[name]}
                  for lower, set_by in zip(layers[:at or 0], changes[:at or 0], strict=True)
                  if name in set_by and set_by[name] != value]
        kind, source = layer.kind, layer.source
        layered = (changes[at] if at is not None else {}).get(name, getattr(built_in, name))
        if layered != value:  # changed after the layers: a GPU service's max_instances fitted to the quota
            beaten = [{"layer": kind, "source": source, "value": layered}, *beaten]
            kind, source = GPU_QUOTA_FIT, GPU_QUOTA_SOURCE
        rows.append({"setting": name, "value": value, "layer": kind, "source": source, "beats": beaten})
    return rows


def explain(layout: FleetLayout, region: Region) -> dict[str, list[dict[str, Any]]]:
    """Service name -> its settings' rows, for every service of the layout in `region`."""
    return {s.name: explain_service(s) for s in layout.services if s.region.id == region.id}


def render_explain(layout: FleetLayout, region: Region, stack: str) -> str:
    out = [f"Settings of stack '{stack}' in {region.id} ({region.city}): lowest layer first, the most specific "
           "wins and forced_settings over all (README \"Settings and their precedence\")", ""]
    services = {s.name: s for s in layout.services}
    for name, rows in explain(layout, region).items():
        service = services[name]
        role = f"dedicated, model {service.model.name}" if service.model else "shared"
        order = " < ".join(layer.kind for layer in (BUILT_IN_LAYER, *applied(service.layers)))
        out += [f"{name} ({service.service_name}, {role}): {order}",
                table(["SETTING", "VALUE", "SET BY", "WHERE", "BEATS"],
                      [[r["setting"], _text(r["value"]), r["layer"], r["source"],
                        ", ".join(f"{b['layer']} {_text(b['value'])}" for b in r["beats"]) or "-"] for r in rows]),
                ""]
    return "\n".join(out).rstrip()
