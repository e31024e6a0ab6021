"""The tenant registry is validated once, at load, with errors naming the tenant and field."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from streams.runtime.signing import TENANT_REQUEST, Signer, new_keypair, public_key_id
from streams.runtime.tenants import TenantEntry, TenantRegistry, TenantRegistryError

PSEUDONYM = "5f" * 16


def document(**tenants: dict) -> dict:
    return {"version": 1, "tenants": tenants}


def test_a_valid_registry_maps_keys_to_tenants_exactly() -> None:
    acme_old, acme_new, globex = new_keypair(), new_keypair(), new_keypair()
    registry = TenantRegistry.from_mapping(
        document(
            acme={"pseudonym_key_id": PSEUDONYM, "public_keys": [acme_new[1], acme_old[1]]},
            globex={"pseudonym_key_id": "6e" * 16, "public_keys": [globex[1]]},
        )
    )
    verifier = registry.verifier()
    for private, tenant in ((acme_old[0], "acme"), (acme_new[0], "acme"), (globex[0], "globex")):
        headers = Signer.from_secret(private, "k", TENANT_REQUEST).headers("t", b"k", b"v")
        assert registry.tenant_of_key(verifier.verify("t", b"k", b"v", headers)) == tenant
    assert registry.pseudonym_key_id("acme") == PSEUDONYM
    assert registry.entry("Acme") is None and registry.pseudonym_key_id("ACME") is None


@pytest.mark.parametrize(
    ("tenants", "expected"),
    [
        ({"acme": {"public_keys": ["x"]}}, r"acme\.pseudonym_key_id: Field required"),
        (
            {"acme": {"pseudonym_key_id": "acme", "public_keys": [new_keypair()[1]]}},
            r"acme\.pseudonym_key_id: .*32 lowercase hex",
        ),
        ({"acme": {"pseudonym_key_id": PSEUDONYM, "public_keys": []}}, r"acme\.public_keys"),
        (
            {"acme": {"pseudonym_key_id": PSEUDONYM, "public_keys": ["bm90IGEga2V5"]}},
            r"tenants\.acme\.public_keys\[0\] is not base64 of a raw 32-byte",
        ),
        (
            {"acme": {"pseudonym_key_id": PSEUDONYM, "public_keys": ["k"], "role": "admin"}},
            r"acme\.role: unknown key",
        ),
        (
            {"../etc": {"pseudonym_key_id": PSEUDONYM, "public_keys": [new_keypair()[1]]}},
            r"'\.\./etc' is not a valid tenant id",
        ),
    ],
)
def test_problems_name_the_tenant_and_the_field(tenants: dict, expected: str) -> None:
    with pytest.raises(TenantRegistryError, match=expected):
        TenantRegistry.from_mapping(document(**tenants), "tenants.yaml")


def test_a_key_or_pseudonym_key_id_proves_one_tenant_only() -> None:
    shared = new_keypair()[1]
    with pytest.raises(
        TenantRegistryError,
        match=r"globex\.public_keys: key [0-9a-f]{16} is also a key of tenant acme",
    ):
        TenantRegistry.from_mapping(
            document(
                acme={"pseudonym_key_id": PSEUDONYM, "public_keys": [shared]},
                globex={"pseudonym_key_id": "6e" * 16, "public_keys": [shared]},
            )
        )
    with pytest.raises(TenantRegistryError, match=r"globex\.pseudonym_key_id is also acme's"):
        TenantRegistry.from_mapping(
            document(
                acme={"pseudonym_key_id": PSEUDONYM, "public_keys": [new_keypair()[1]]},
                globex={"pseudonym_key_id": PSEUDONYM, "public_keys": [new_keypair()[1]]},
            )
        )


def test_load_says_which_setting_to_set_or_file_to_fix(tmp_path: Path) -> None:
    with pytest.raises(TenantRegistryError, match="SLUICE_GUARD__TENANTS_PATH is not set"):
        TenantRegistry.load(None)
    with pytest.raises(TenantRegistryError, match="cannot read the tenant registry"):
        TenantRegistry.load(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("tenants: [", encoding="utf-8")
    with pytest.raises(TenantRegistryError, match="not valid YAML"):
        TenantRegistry.load(tmp_path / "bad.yaml")
    (tmp_path / "v2.yaml").write_text("version: 2\n", encoding="utf-8")
    with pytest.raises(TenantRegistryError, match="version 2 is not supported"):
        TenantRegistry.load(tmp_path / "v2.yaml")


def test_save_writes_0600_and_loads_back_the_same(tmp_path: Path) -> None:
    public = new_keypair()[1]
    registry = TenantRegistry.empty().with_tenant(
        "NorthBank", TenantEntry(pseudonym_key_id=PSEUDONYM, public_keys=[public])
    )
    path = tmp_path / "secrets" / "tenants.yaml"
    registry.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = TenantRegistry.load(path)
    assert loaded.tenants == registry.tenants
    [key_id] = loaded.verifier().keys
    assert loaded.tenant_of_key(key_id) == "NorthBank"
    assert key_id == public_key_id(base64.b64decode(public))
    with pytest.raises(TenantRegistryError, match="tenant id"):
        registry.with_tenant("a/b", TenantEntry(pseudonym_key_id="7d" * 16, public_keys=[public]))


def test_a_registry_others_may_read_is_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "tenants.yaml"
    TenantRegistry.empty().save(path)
    TenantRegistry.load(path)
    assert "readable by others" not in caplog.text
    path.chmod(0o644)
    TenantRegistry.load(path)
    assert "readable by others (mode 644)" in caplog.text
