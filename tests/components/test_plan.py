"""The real program under mocks: what each stack would create, and how the catalog and config shape it."""

from __future__ import annotations

import json
import re

import pytest

from components.catalog import load_catalog
from components.errors import FleetError
from components.names import service_account_id
from fleet.cli import main
from fleet.program import PROJECT_DIR, Plan, evaluate
from tests.conftest import FEW_REGIONS, prod_in, region_entry

SERVICE = "gcp:cloudrunv2/service:Service"
SHARED_REGIONS = {"us-central1", "europe-west1", "asia-east1"}
CATALOG = load_catalog(PROJECT_DIR / "regions.yaml")


def services(plan: Plan, role: str | None = None) -> dict[str, dict]:
    return {r.name: r.inputs for r in plan.custom(SERVICE)
            if role is None or r.inputs["template"]["labels"]["role"] == role}


def scaling(inputs: dict) -> tuple[int, int]:
    s = inputs["template"]["scaling"]
    return int(s["minInstanceCount"]), int(s["maxInstanceCount"])


def test_prod_creates_exactly_these_resources(prod_plan):
    counts: dict[str, int] = {}
    for r in prod_plan.custom():
        counts[r.type] = counts.get(r.type, 0) + 1
    assert counts == {
        SERVICE: 46,
        "gcp:serviceaccount/account:Account": 4,  # one for the model's 43 endpoints, one per shared service
        # each reads the key digests; the 3 shared services' accounts also read the tenants file
        "gcp:secretmanager/secretIamMember:SecretIamMember": 7,
        "gcp:projects/iAMMember:IAMMember": 8,  # each service account writes its logs and metrics, nothing else
        "gcp:secretmanager/secret:Secret": 2,  # API key digests, tenants file
        "gcp:secretmanager/secretVersion:SecretVersion": 2,
        "gcp:artifactregistry/repository:Repository": 3,  # us, europe, asia
        "gcp:artifactregistry/repositoryIamMember:RepositoryIamMember": 3,  # Cloud Run's agent pulls from each
        "docker-build:index:Image": 1,
        "gcp:storage/bucket:Bucket": 3,  # tenant models, one per shared region
        "gcp:storage/bucketIAMMember:BucketIAMMember": 3,  # each shared service reads its own bucket
        "gcp:projects/iAMAuditConfig:IAMAuditConfig": 1,  # Data Access logs: who read which tenant's file
        # the shared API's balancer: a serverless NEG and a backend per region, HTTPS + HTTP->HTTPS redirect
        "gcp:compute/regionNetworkEndpointGroup:RegionNetworkEndpointGroup": 3,
        "gcp:compute/backendService:BackendService": 3,
        "gcp:compute/uRLMap:URLMap": 2,
        "gcp:compute/managedSslCertificate:ManagedSslCertificate": 1,
        "gcp:compute/globalAddress:GlobalAddress": 1,
        "gcp:compute/targetHttpsProxy:TargetHttpsProxy": 1,
        "gcp:compute/targetHttpProxy:TargetHttpProxy": 1,
        "gcp:compute/globalForwardingRule:GlobalForwardingRule": 2,
        "gcp:compute/sSLPolicy:SSLPolicy": 1,  # TLS 1.2+ on the HTTPS proxy
        "gcp:compute/securityPolicy:SecurityPolicy": 1,  # Cloud Armor: a rate limit per client on every backend
        "gcp:monitoring/alertPolicy:AlertPolicy": 138,  # error ratio, p95 latency, pinned at max: per service
        "gcp:monitoring/uptimeCheckConfig:UptimeCheckConfig": 4,  # only where min_instances > 0
        "gcp:monitoring/customService:CustomService": 46,  # SLOs are enabled in prod
        "gcp:monitoring/slo:Slo": 92,  # availability and latency per service
        "gcp:monitoring/dashboard:Dashboard": 1,
    }


def test_prod_has_43_dedicated_regions_and_3_shared(prod_plan):
    dedicated = services(prod_plan, "dedicated")
    assert len(dedicated) == 43
    assert {s["location"] for s in dedicated.values()} == {r.id for r in CATALOG.regions}
    shared = services(prod_plan, "shared")
    assert {s["location"] for s in shared.values()} == SHARED_REGIONS
    assert set(shared) == {"shared-iowa", "shared-st-ghislain", "shared-changhua-county"}


def test_dev_creates_two_models_in_a_few_regions(dev_plan):
    dedicated = services(dev_plan, "dedicated")
    assert sorted(dedicated) == ["demo-iowa", "demo-raw-iowa", "demo-st-ghislain", "demo-tokyo"]
    envs = {e["name"]: e["value"] for e in dedicated["demo-raw-iowa"]["template"]["containers"][0]["envs"]}
    assert envs["MODEL_PATH"] == "/app/models/demo-raw.onnx" and envs["MODEL_NAME"] == "demo-raw"
    assert len(services(dev_plan, "shared")) == 3
    assert all(scaling(s) == (0, 2) for s in services(dev_plan).values()), "dev: scale to zero, at most 2"
    assert all(not s["deletionProtection"] for s in services(dev_plan).values())


def test_endpoint_names_are_model_and_city(prod_plan):
    dedicated = services(prod_plan, "dedicated")
    for region in CATALOG.regions:
        name = f"demo-{region.city_slug}"
        assert dedicated[name]["location"] == region.id
        assert dedicated[name]["name"] == f"{name}-prod", "the Cloud Run service carries the stack"
    assert {"demo-iowa", "demo-sao-paulo", "demo-montreal", "demo-st-ghislain"} <= set(dedicated)


def test_scaling_follows_catalog_defaults_and_overrides(prod_plan):
    dedicated = services(prod_plan, "dedicated")
    assert scaling(dedicated["demo-iowa"]) == (1, 10)  # us-central1 override: warm
    assert scaling(dedicated["demo-eemshaven"]) == (0, 20)  # europe-west4 override: more headroom
    others = [s for n, s in dedicated.items() if n not in ("demo-iowa", "demo-eemshaven")]
    assert all(scaling(s) == (0, 10) for s in others), "everything else scales to zero by default"
    shared = services(prod_plan, "shared")
    assert all(scaling(s) == (1, 20) for s in shared.values())


def test_every_service_is_labelled_and_wired(prod_plan):
    for name, s in services(prod_plan).items():
        t = s["template"]
        labels = t["labels"]
        assert labels["region"] == s["location"] and labels["stack"] == "prod" and labels["managed-by"] == "yolo-fleet"
        assert s["labels"] == labels
        if labels["role"] == "dedicated":
            assert labels["model"] == "demo"
        c = t["containers"][0]
        assert c["startupProbe"]["httpGet"]["path"] == "/health"
        assert c["resources"]["startupCpuBoost"] is True
        assert t["maxInstanceRequestConcurrency"] == 4 if labels["role"] == "dedicated" else 8
        owner = labels["model"] if labels["role"] == "dedicated" else name  # a model's endpoints share its account
        assert t["serviceAccount"] == f"{service_account_id(owner, 'prod')}@my-gcp-project.iam.gserviceaccount.com"
        assert re.fullmatch(r".+-docker\.pkg\.dev/my-gcp-project/yolo-fleet-prod/inference-server@sha256:[0-9a-f]{64}",
                            c["image"]), "deployed by digest"
        envs = {e["name"]: e["value"] for e in c["envs"]}
        assert envs["API_KEY_FILE"] == "/secrets/api-keys/sha256.txt"
        if labels["role"] == "dedicated":
            assert envs["MODEL_PATH"] == "/app/models/demo-e2e.onnx"
        else:
            assert envs["MODE"] == "shared" and envs["MODELS_DIR"] == "/models" and "MODEL_PATH" not in envs
        assert s["deletionProtection"] is True


def test_every_service_starts_only_after_all_its_account_is_granted(prod_plan):
    """A revision that starts before its account may read the key digests (or its bucket, its tenants file) fails
    to start; so each service waits for every grant to its account, and shared ones wait for their reads too."""
    for service in prod_plan.custom(SERVICE):
        member = f"serviceAccount:{service.inputs['template']['serviceAccount']}"
        grants = {(r.type, r.name) for r in prod_plan.custom() if r.type.endswith("Member")
                  and r.inputs.get("member") == member}
        kinds = {t.rsplit(":", 1)[1] for t, _ in grants}
        shared = service.inputs["template"]["labels"]["role"] == "shared"
        assert kinds == ({"SecretIamMember", "IAMMember", "BucketIAMMember"} if shared
                         else {"SecretIamMember", "IAMMember"}), service.name
        assert len(grants) == (5 if shared else 3), service.name  # + a bucket and the tenants file
        assert grants <= service.depends_on, (service.name, grants - service.depends_on)


def test_images_are_pulled_from_the_nearest_registry(prod_plan):
    dedicated = services(prod_plan, "dedicated")
    host = {s["location"]: s["template"]["containers"][0]["image"].split("/")[0] for s in dedicated.values()}
    assert host["asia-east1"] == "asia-docker.pkg.dev"
    assert host["us-central1"] == host["southamerica-east1"] == "us-docker.pkg.dev"
    assert host["europe-west1"] == host["me-west1"] == host["africa-south1"] == "europe-docker.pkg.dev"
    digests = {s["template"]["containers"][0]["image"].split("@")[1] for s in dedicated.values()}
    assert len(digests) == 1, "one build, the same digest everywhere"


def test_region_override_wins_over_defaults_and_stack_settings_and_forced_settings_win_over_all(write_catalog):
    path = write_catalog(lambda d: region_entry(d, "us-east1").update(overrides={"max_instances": 3, "cpu": 4}))
    plan = evaluate("prod", catalog=path, config_overrides=prod_in())
    s = services(plan)["demo-south-carolina"]
    assert scaling(s) == (0, 3)
    assert s["template"]["containers"][0]["resources"]["limits"] == {"cpu": "4", "memory": "4Gi"}
    assert scaling(services(plan)["demo-oregon"]) == (0, 10)

    plan = evaluate("prod", catalog=path, config_overrides={
        "yolo-fleet:settings": json.dumps({"max_instances": 5}),
        "yolo-fleet:models": json.dumps([{"name": "demo", "regions": FEW_REGIONS, "settings": {"min_instances": 2}}])})
    assert scaling(services(plan)["demo-south-carolina"]) == (2, 3), "the region's own max beats the stack's"
    assert scaling(services(plan)["demo-oregon"]) == (2, 5), "the stack's settings fill what the region leaves"
    assert scaling(services(plan)["shared-iowa"]) == (1, 20), "the catalog's shared settings beat the stack's"

    plan = evaluate("prod", catalog=path, config_overrides={**prod_in(), "yolo-fleet:forced_settings": json.dumps(
        {"max_instances": 5})})
    assert scaling(services(plan)["demo-south-carolina"]) == (0, 5), "forced beats the region's override"
    assert scaling(services(plan)["shared-iowa"]) == (1, 5), "and the shared services' settings"


def test_turning_a_region_off_removes_exactly_its_resources(write_catalog):
    plan = evaluate("prod", catalog=write_catalog(lambda d: region_entry(d, "us-east1").update(enabled=False)),
                    config_overrides=prod_in())
    before = {(r.type, r.name) for r in evaluate("prod", config_overrides=prod_in()).resources}
    after = {(r.type, r.name) for r in plan.resources}
    assert after < before
    assert before - after == {
        ("yolo-fleet:index:DedicatedEndpoint", "demo-south-carolina"),
        (SERVICE, "demo-south-carolina"),
        *(("gcp:monitoring/alertPolicy:AlertPolicy", f"demo-south-carolina-{kind}")
          for kind in ("error-ratio", "latency-p95", "max-instances")),
        ("gcp:monitoring/customService:CustomService", "demo-south-carolina"),
        ("gcp:monitoring/slo:Slo", "demo-south-carolina-availability"),
        ("gcp:monitoring/slo:Slo", "demo-south-carolina-latency"),
    }


def test_turning_a_shared_region_off_removes_its_shared_service(write_catalog):
    catalog = write_catalog(lambda d: region_entry(d, "asia-east1").update(enabled=False))
    with pytest.raises(FleetError, match=r"tenants\.initech\.data_region: 'asia-east1' is not a shared region"):
        evaluate("prod", catalog=catalog)  # a tenant's data lives there: move the tenant first
    tenants = {"acme": {"data_region": "us-central1", "key_sha256": ["1" * 64]}}
    plan = evaluate("prod", catalog=catalog, config_overrides={
        **prod_in([*FEW_REGIONS, "asia-east1"]), "yolo-fleet:tenants": json.dumps(tenants)})
    assert {s["location"] for s in services(plan, "shared").values()} == {"us-central1", "europe-west1"}
    assert {s["location"] for s in services(plan, "dedicated").values()} == set(FEW_REGIONS), "nor an endpoint there"


def test_model_region_sets(tmp_path):
    models = [{"name": "eu", "regions": "europe"}, {"name": "pair", "regions": ["us-central1", "asia-east1"]}]
    plan = evaluate("dev", config_overrides={"yolo-fleet:models": json.dumps(models)})
    dedicated = services(plan, "dedicated")
    assert {s["location"] for n, s in dedicated.items() if n.startswith("eu-")} == \
        {r.id for r in CATALOG.regions if r.geography == "europe"}
    assert {n for n in dedicated if n.startswith("pair-")} == {"pair-iowa", "pair-changhua-county"}


def test_gpu_endpoint_gets_an_l4(tmp_path):
    gpu = {"gpu": True, "cpu": 4, "memory": "16Gi", "cpu_idle": False}
    plan = evaluate("prod", config_overrides={"yolo-fleet:models": json.dumps(
        [{"name": "big", "regions": ["europe-west4"], "settings": gpu}])})
    t = services(plan)["big-eemshaven"]["template"]
    assert t["nodeSelector"] == {"accelerator": "nvidia-l4"}
    assert t["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert t["containers"][0]["resources"]["cpuIdle"] is False
    assert t["gpuZonalRedundancyDisabled"] is True
    assert "nodeSelector" not in services(plan)["shared-iowa"]["template"]


def test_prebuilt_image_skips_the_build():
    ref = "us-docker.pkg.dev/other/images/server@sha256:" + "a" * 64
    plan = evaluate("prod", config_overrides={**prod_in(), "yolo-fleet:image": ref})
    assert not plan.custom("docker-build:index:Image") and not plan.custom("gcp:artifactregistry/repository:Repository")
    assert {s["template"]["containers"][0]["image"] for s in services(plan).values()} == {ref}


def test_service_account_ids_fit_gcp_limits():
    for name in ["a", "demo", "shared-changhua-county", "a-very-long-model-name-x", "x" * 49]:
        sa = service_account_id(name, "Stg.EU_1")
        assert re.fullmatch(r"[a-z][a-z0-9-]{4,28}[a-z0-9]", sa), sa
    assert service_account_id("a-very-long-model-name-x", "prod") != service_account_id(
        "a-very-long-model-name-y", "prod"), "truncation keeps names distinct"


def test_api_key_digests_are_stored_not_keys(prod_plan):
    version = prod_plan.custom("gcp:secretmanager/secretVersion:SecretVersion")[0]
    assert version.inputs["secretData"]["value"].strip() == "0" * 64  # the placeholder digest from Pulumi.prod.yaml
    printed = next(r for r in prod_plan.to_json()["resources"] if r["type"] == version.type)
    assert printed["inputs"]["secretData"] == "[secret]"


def test_plan_json_is_what_the_provider_receives(capsys):
    assert main(["plan", "--stack", "prod", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["stack"] == "prod"
    run = [r for r in data["resources"] if r["type"] == SERVICE]
    assert len(run) == 46
    dedicated = [r for r in run if r["inputs"]["template"]["labels"]["role"] == "dedicated"]
    assert len({r["inputs"]["location"] for r in dedicated}) == 43
    assert {r["inputs"]["location"] for r in run} - {r["inputs"]["location"] for r in dedicated} == set()
    assert sorted(r["inputs"]["location"] for r in run if r["inputs"]["template"]["labels"]["role"] == "shared") == \
        sorted(SHARED_REGIONS)
    assert "maxInstanceCount" in dedicated[0]["inputs"]["template"]["scaling"], "camelCase, as the provider gets it"
    assert data["outputs"]["endpoints"]["demo-iowa"]["url"] == "https://demo-iowa-prod-PROJECT_NUMBER.us-central1.run.app"
    assert data["outputs"]["endpoints"]["demo-iowa"]["service"] == "demo-iowa-prod"
    assert set(data["outputs"]["shared"]) == SHARED_REGIONS
    assert all(set(r) == {"type", "name", "inputs"} for r in data["resources"])


def test_plan_table_for_people(capsys):
    assert main(["plan", "--stack", "prod"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^demo-iowa\s+demo-iowa-prod\s+dedicated\s+demo\s+us-central1\s+1\s+10\s+2\s+4Gi\s+-\s+"
                     r"3 alerts, uptime, 2 SLOs\s+"
                     r"https://demo-iowa-prod-",
                     out, re.M)
    assert re.search(r"^shared-st-ghislain\s+shared-st-ghislain-prod\s+shared\s+-\s+europe-west1\s+1\s+20\s+4\s+8Gi",
                     out, re.M)
    assert re.search(r"^europe-west1\s+europe\s+2\s+", out, re.M), "per-region table: endpoint + shared service"
    assert "46 Cloud Run services (43 dedicated in 43 regions, 3 shared)" in out
    assert "4 instances kept warm" in out
    assert main(["plan", "--stack", "dev"]) == 0  # dev forces min_instances 0 everywhere
    assert capsys.readouterr().out.rstrip().endswith("every service scales to zero (no min_instances).")


def test_regions_command_counts_geographies(capsys):
    assert main(["regions"]) == 0
    out = capsys.readouterr().out
    for geo, n in {"americas": 14, "europe": 13, "asia-pacific": 12, "middle-east": 3, "africa": 1}.items():
        assert re.search(rf"^{geo}\s+{n}\s+{n}\s", out, re.M)
    assert "43 regions (43 enabled), 6 with nvidia-l4" in out


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_every_stack_plans(stack):
    assert evaluate(stack).custom(SERVICE)
