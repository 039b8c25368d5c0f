"""Who gets in, decided in-process: the key file, the Authorization header's scheme, and the tenants file of the
shared service. A key sent under another scheme, a malformed digest or a tenant outside the shared regions must
be refused; a rotated file must take effect, a broken rotation must not lock everyone out."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import pytest

from inference_service.auth import AuthError, KeyFileError, KeyStore, hash_key, read_digests
from inference_service.tenancy import TenantsError, TenantsFile, load_tenants, safe_segment

KEY = "s3cret-key"
REGIONS = ["us-central1", "europe-west4"]


def key_file(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "sha256.txt"
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def bump(path: Path, text: str) -> None:
    """A new version of a mounted secret, with a later mtime (coarse clocks can repeat one)."""
    before = path.stat().st_mtime
    path.write_text(text)
    os.utime(path, (before + 5, before + 5))


def test_a_key_file_line_is_the_keys_sha256_hex_digest() -> None:
    assert hash_key(KEY) == hashlib.sha256(KEY.encode()).hexdigest()
    assert hash_key("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_blank_lines_comments_case_and_spaces_are_tolerated(tmp_path: Path) -> None:
    path = key_file(tmp_path, "# rotated 2026-11", "", "  " + hash_key(KEY).upper() + "  ", hash_key("other"))
    assert read_digests(path) == {hash_key(KEY), hash_key("other")}


@pytest.mark.parametrize("line", [KEY, hash_key(KEY)[:-1], hash_key(KEY) + "0", "g" * 64, hash_key(KEY) + " x"])
def test_a_line_that_is_not_a_digest_stops_the_server_naming_file_and_line(tmp_path: Path, line: str) -> None:
    path = key_file(tmp_path, "# keys", hash_key("other"), line)
    with pytest.raises(KeyFileError) as e:
        read_digests(path)
    assert str(e.value) == (f"{path}:3: not a sha256 hex digest (64 hex characters); the key file holds digests of "
                            "keys, never a key itself: make the line with "
                            "printf %s \"$KEY\" | sha256sum | cut -d' ' -f1")


def test_a_key_file_with_an_epoch_mtime_is_read(tmp_path: Path) -> None:
    """Nix stores and some image builders set every mtime to 1 s after the epoch: the keys still count."""
    path = key_file(tmp_path, hash_key(KEY))
    os.utime(path, (1.0, 1.0))
    KeyStore(path).check(f"Bearer {KEY}")


@pytest.mark.parametrize("header", ["Bearer " + KEY, "bearer " + KEY, "BEARER " + KEY, f"Bearer  {KEY} "])
def test_the_key_under_the_bearer_scheme_gets_in(tmp_path: Path, header: str) -> None:
    KeyStore(key_file(tmp_path, hash_key(KEY))).check(header)


@pytest.mark.parametrize("header", [f"Basic {KEY}", f"Token {KEY}", KEY, f"Bearer{KEY}", "Bearer", "Bearer   ",
                                    "", None])
def test_a_valid_key_under_another_scheme_or_no_key_is_refused(tmp_path: Path, header: str | None) -> None:
    keys = KeyStore(key_file(tmp_path, hash_key(KEY)))
    with pytest.raises(AuthError, match=r"^missing API key: send 'Authorization: Bearer <key>'$"):
        keys.check(header)


@pytest.mark.parametrize("key", ["wrong", KEY + "x", KEY.upper(), hash_key(KEY)])
def test_a_key_not_in_the_file_is_invalid(tmp_path: Path, key: str) -> None:
    keys = KeyStore(key_file(tmp_path, hash_key(KEY), hash_key("other")))
    keys.check("Bearer other")
    with pytest.raises(AuthError, match=r"^invalid API key$"):
        keys.check(f"Bearer {key}")


def test_only_no_key_file_means_anonymous(tmp_path: Path) -> None:
    anonymous = KeyStore(None)
    assert anonymous.anonymous
    anonymous.check(None)
    anonymous.check("Basic whatever")
    assert not KeyStore(key_file(tmp_path, hash_key(KEY))).anonymous


def test_an_empty_key_file_lets_nobody_in(tmp_path: Path) -> None:
    with pytest.raises(AuthError, match="invalid API key"):
        KeyStore(key_file(tmp_path, "# no keys yet")).check(f"Bearer {KEY}")


def test_a_broken_rotation_keeps_the_previous_keys_and_a_later_good_one_lands(tmp_path: Path) -> None:
    path = key_file(tmp_path, hash_key(KEY))
    keys = KeyStore(path, recheck_seconds=0)
    bump(path, "half-written\n")
    keys.check(f"Bearer {KEY}")  # still served: the bad version is ignored
    path.unlink()
    keys.check(f"Bearer {KEY}")  # the volume briefly missing: same
    path.write_text(hash_key("new") + "\n")
    os.utime(path, (path.stat().st_mtime + 10,) * 2)
    keys.check("Bearer new")
    with pytest.raises(AuthError, match="invalid API key"):
        keys.check(f"Bearer {KEY}")


@pytest.mark.parametrize("name", ["acme", "a", "a" * 64, "acme.corp_eu-1", "0day", "A.b"])
def test_owner_and_model_names_that_name_a_child_directory(name: str) -> None:
    assert safe_segment(name)


@pytest.mark.parametrize("name", ["", "a" * 65, ".hidden", "-x", "_x", "a..b", "..", "a/b", "a\\b", "acme\n",
                                  "a b", "é"])
def test_names_that_could_leave_the_models_directory_or_are_odd_are_refused(name: str) -> None:
    assert not safe_segment(name)


def tenants_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tenants.yaml"
    path.write_text(text)
    return path


def test_tenants_map_keys_to_their_owner_and_region(tmp_path: Path) -> None:
    path = tenants_file(tmp_path, f"""tenants:
  acme: {{data_region: europe-west4, key_sha256: [{hash_key("acme-1").upper()}, {hash_key("acme-2")}]}}
  beta: {{data_region: us-central1, key_sha256: [{hash_key("beta-1")}]}}
  idle: {{data_region: us-central1}}
""")
    tenants = load_tenants(path, REGIONS)
    assert set(tenants.by_owner) == {"acme", "beta", "idle"}
    acme = tenants.owner_of_key("acme-1")
    assert acme is not None and (acme.owner, acme.data_region) == ("acme", "europe-west4")
    assert tenants.owner_of_key("acme-2") is acme
    beta = tenants.owner_of_key("beta-1")
    assert beta is not None and beta.owner == "beta"
    assert tenants.by_owner["idle"].digests == frozenset()
    assert tenants.owner_of_key("nobody") is None
    assert tenants.owner_of_key(hash_key("acme-1")) is None, "the digest itself is not a key"


@pytest.mark.parametrize(("text", "message"), [
    ("tenants: [", "is not valid YAML (line 1, column 11): expected the node content, but found"),
    ("tenants: {acme\x00: {}}\n", "is not valid YAML: unacceptable character #x0000"),
    (f"tenants: {{acme: {{data_region: us-central1, key_sha265: [{hash_key('k')}]}}}}\n",
     "tenant 'acme': unknown key 'key_sha265'; did you mean 'key_sha256'?"),
    ("tenants: {acme: {data_region: us-central1, keys: []}}\n",
     "tenant 'acme': unknown key 'keys'; a tenant has data_region and key_sha256"),
    ("- acme\n", "expected a top-level 'tenants:' mapping of owner -> settings"),
    ("owners: {}\n", "expected a top-level 'tenants:' mapping of owner -> settings"),
    ("tenants: [acme]\n", "expected a top-level 'tenants:' mapping of owner -> settings"),
    ("tenants: {'../etc': {data_region: us-central1}}\n", "tenant '../etc': the owner name must be 1-64 letters, "
     "digits, '.', '_' or '-' (no '..'), as it is a directory of the models dir"),
    ("tenants: {7: {data_region: us-central1}}\n", "tenant 7: the owner name must be"),
    ("tenants: {acme: us-central1}\n", "tenant 'acme': expected a mapping with data_region and key_sha256"),
    ("tenants: {acme: {data_region: asia-east1}}\n",
     "tenant 'acme': data_region 'asia-east1' is not a shared region; use one of us-central1, europe-west4"),
    ("tenants: {acme: {key_sha256: []}}\n", "tenant 'acme': data_region None is not a shared region"),
    ("tenants: {acme: {data_region: us-central1, key_sha256: [not-a-digest]}}\n",
     "tenant 'acme': key_sha256 must be a list of sha256 hex digests (64 hex characters)"),
    (f"tenants: {{acme: {{data_region: us-central1, key_sha256: {hash_key('k')}}}}}\n",
     "tenant 'acme': key_sha256 must be a list of sha256 hex digests"),
    ("tenants: {acme: {data_region: us-central1, key_sha256: [7]}}\n",
     "tenant 'acme': key_sha256 must be a list of sha256 hex digests"),
])
def test_every_tenants_file_mistake_names_the_file_and_tenant(tmp_path: Path, text: str, message: str) -> None:
    path = tenants_file(tmp_path, text)
    with pytest.raises(TenantsError) as e:
        load_tenants(path, REGIONS)
    assert f"tenants file {path}" in str(e.value)
    assert message in str(e.value)
    assert "\n" not in str(e.value), "one line"


def test_a_missing_tenants_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TenantsError, match=r"cannot read tenants file .*missing\.yaml: No such file or directory"):
        load_tenants(tmp_path / "missing.yaml", REGIONS)


def test_a_new_tenants_version_lands_and_a_bad_one_is_logged_and_ignored(tmp_path: Path, caplog) -> None:
    path = tenants_file(tmp_path, f"tenants: {{acme: {{data_region: us-central1, key_sha256: [{hash_key('a')}]}}}}\n")
    live = TenantsFile(path, REGIONS, recheck_seconds=0)
    assert live.current().owner_of_key("a") is not None
    bump(path, f"tenants: {{beta: {{data_region: europe-west4, key_sha256: [{hash_key('b')}]}}}}\n")
    assert live.current().owner_of_key("a") is None
    assert live.current().owner_of_key("b").owner == "beta"  # type: ignore[union-attr]
    with caplog.at_level(logging.WARNING, logger="inference_service"):
        bump(path, "tenants: {beta: {data_region: mars-north1}}\n")
        assert live.current().owner_of_key("b").owner == "beta"  # type: ignore[union-attr]
        assert live.current().owner_of_key("b").owner == "beta"  # type: ignore[union-attr]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, "a bad version is reported once, not on every request"
    assert warnings[0].startswith("tenants file not reloaded, keeping the previous tenants: tenants file ")
    assert "mars-north1" in warnings[0]
    path.unlink()
    assert live.current().owner_of_key("b") is not None, "a briefly missing volume keeps the tenants"


def test_a_tenants_version_of_the_same_mtime_but_another_size_lands(tmp_path: Path) -> None:
    path = tenants_file(tmp_path, "tenants: {}\n")
    live = TenantsFile(path, REGIONS, recheck_seconds=0)
    stamp = path.stat().st_mtime_ns
    path.write_text(f"tenants: {{acme: {{data_region: us-central1, key_sha256: [{hash_key('a')}]}}}}\n")
    os.utime(path, ns=(stamp, stamp))
    assert live.current().owner_of_key("a") is not None


def test_a_tenants_file_that_is_not_text_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_bytes(b"tenants: {acme: {data_region: \xff\xfe}}\n")
    with pytest.raises(TenantsError, match=r"^tenants file .*tenants\.yaml is not UTF-8 text$"):
        load_tenants(path, REGIONS)
