"""The shared services under mocks: a model bucket per region, mounted only there, reachable via the balancer."""

from __future__ import annotations

import yaml

from fleet.program import Plan

SERVICE = "gcp:cloudrunv2/service:Service"
BUCKET = "gcp:storage/bucket:Bucket"
BUCKET_IAM = "gcp:storage/bucketIAMMember:BucketIAMMember"
SHARED_REGIONS = {"us-central1", "europe-west1", "asia-east1"}
HOSTS = {"us-central1": "https://us.inference.example.com", "europe-west1": "https://eu.inference.example.com",
         "asia-east1": "https://ap.inference.example.com"}


def shared_services(plan: Plan) -> dict[str, dict]:
    """region id -> the shared Cloud Run service's inputs."""
    return {r.inputs["location"]: r.inputs for r in plan.custom(SERVICE)
            if r.inputs["template"]["labels"]["role"] == "shared"}


def buckets(plan: Plan) -> dict[str, dict]:
    """bucket name -> inputs."""
    return {r.inputs["name"]: r.inputs for r in plan.custom(BUCKET)}


def envs(service: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in service["template"]["containers"][0]["envs"]}


def test_one_private_versioned_bucket_in_each_shared_region(prod_plan):
    by_region = {b["location"]: b for b in buckets(prod_plan).values()}
    assert set(by_region) == SHARED_REGIONS and len(buckets(prod_plan)) == 3
    for region, b in by_region.items():
        assert b["name"] == f"my-gcp-project-prod-models-{region}"
        assert b["uniformBucketLevelAccess"] is True
        assert b["versioning"] == {"enabled": True}
        assert b["publicAccessPrevention"] == "enforced"
        assert b["forceDestroy"] is False, "deleting the stack must not delete tenants' models"


def test_each_shared_service_mounts_only_its_own_regions_bucket_read_only(prod_plan):
    names = {b["location"]: name for name, b in buckets(prod_plan).items()}
    for region, s in shared_services(prod_plan).items():
        gcs = [v for v in s["template"]["volumes"] if "gcs" in v]
        assert [v["gcs"] for v in gcs] == [{"bucket": names[region], "readOnly": True}]
        mounts = {m["name"]: m["mountPath"] for m in s["template"]["containers"][0]["volumeMounts"]}
        assert mounts[gcs[0]["name"]] == "/models"
        assert envs(s)["MODELS_DIR"] == "/models"


def test_each_shared_service_account_can_read_only_its_own_bucket(prod_plan):
    names = {b["location"]: name for name, b in buckets(prod_plan).items()}
    grants = [r.inputs for r in prod_plan.custom(BUCKET_IAM)]
    for region, s in shared_services(prod_plan).items():
        member = f"serviceAccount:{s['template']['serviceAccount']}"
        mine = [g for g in grants if g["member"] == member]
        assert mine == [{"bucket": names[region], "role": "roles/storage.objectViewer", "member": member}]
    assert len(grants) == 3, "no dedicated endpoint gets bucket access"


def test_shared_services_are_reachable_only_through_the_balancer(prod_plan):
    ingress = {r.inputs["name"]: r.inputs["ingress"] for r in prod_plan.custom(SERVICE)}
    shared = {s["name"] for s in shared_services(prod_plan).values()}
    assert {ingress[n] for n in shared} == {"INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"}
    assert {v for n, v in ingress.items() if n not in shared} == {"INGRESS_TRAFFIC_ALL"}, "endpoints unaffected"


def test_shared_services_run_in_shared_mode_with_their_region_and_peers(prod_plan):
    for region, s in shared_services(prod_plan).items():
        e = envs(s)
        assert e["MODE"] == "shared" and e["REGION"] == region
        assert e["TENANTS_FILE"] == "/secrets/tenants/tenants.yaml"
        peers = dict(p.split("=", 1) for p in e["PEERS"].split(","))
        assert peers == {rid: url for rid, url in HOSTS.items() if rid != region}
        assert "MODEL_PATH" not in e
        assert e["MODEL_CACHE_MB"] == str(8 * 1024 - 768), "8Gi instances keep ~7.2 GiB of tenant models loaded"


def test_tenants_file_holds_digests_from_config_and_is_mounted_for_shared_services_only(prod_plan):
    version = next(r for r in prod_plan.custom("gcp:secretmanager/secretVersion:SecretVersion")
                   if r.name == "shared-tenants")
    tenants = yaml.safe_load(version.inputs["secretData"]["value"])["tenants"]
    assert tenants == {
        "acme": {"data_region": "us-central1", "key_sha256": ["1" * 64]},
        "globex": {"data_region": "europe-west1", "key_sha256": ["2" * 64]},
        "initech": {"data_region": "asia-east1", "key_sha256": ["3" * 64]},
    }
    printed = next(r for r in prod_plan.to_json()["resources"] if r["name"] == "shared-tenants"
                   and r["type"] == version.type)
    assert printed["inputs"]["secretData"] == "[secret]"

    secret_id = "yolo-fleet-prod-tenants"
    readers = {r.inputs["member"] for r in prod_plan.custom("gcp:secretmanager/secretIamMember:SecretIamMember")
               if r.inputs["secretId"] == secret_id}
    assert readers == {f"serviceAccount:{s['template']['serviceAccount']}"
                       for s in shared_services(prod_plan).values()}
    for s in shared_services(prod_plan).values():
        [volume] = [v for v in s["template"]["volumes"] if v.get("secret", {}).get("secret") == secret_id]
        assert volume["secret"]["items"] == [{"path": "tenants.yaml", "version": "latest"}]
        mounts = {m["name"]: m["mountPath"] for m in s["template"]["containers"][0]["volumeMounts"]}
        assert mounts[volume["name"]] == "/secrets/tenants"
