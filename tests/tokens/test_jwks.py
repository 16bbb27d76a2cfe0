"""JWK Sets and the JWKS file a running verifier keeps reading."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agentsudo_tokens import ConfigError, JwksFile, KeyDirectory, KeySet, PublicKey, SigningKey
from agentsudo_tokens.tokens.jwks import MAX_JWKS_BYTES, load_key_source


def _jwk(kind: str = "EdDSA", **changes: Any) -> dict[str, Any]:
    jwk: dict[str, Any] = dict(SigningKey.generate(kind).public.to_jwk())
    jwk.update(changes)
    return {k: v for k, v in jwk.items() if v is not None}


def test_from_dict_keeps_signing_keys_of_both_algorithms() -> None:
    ed, ec = _jwk("EdDSA"), _jwk("ES256")
    keys = KeySet.from_dict({"keys": [ed, ec]})
    assert set(keys) == {ed["kid"], ec["kid"]} and len(keys) == 2
    assert isinstance(keys[ed["kid"]], PublicKey)
    assert keys.get(ec["kid"]).alg == "ES256"
    assert keys.get("missing") is None
    assert KeySet.from_dict(keys.to_dict()) == keys


@pytest.mark.parametrize(
    "ignored",
    [
        pytest.param(_jwk(use="enc"), id="use-enc"),
        pytest.param(_jwk(key_ops=["sign"]), id="key-ops-sign-only"),
        pytest.param(_jwk(key_ops=[]), id="key-ops-empty"),
        pytest.param(_jwk(key_ops="verify"), id="key-ops-not-a-list"),
        pytest.param(_jwk(alg="RS256"), id="alg-rs256"),
        pytest.param(_jwk(alg="HS256"), id="alg-hs256"),
        pytest.param(_jwk(alg="none"), id="alg-none"),
        pytest.param(_jwk(alg=None), id="alg-missing"),
        pytest.param(
            {"kty": "RSA", "kid": "r", "alg": "RS256", "n": "AQAB", "e": "AQAB"}, id="rsa"
        ),
    ],
)
def test_from_dict_ignores_keys_not_for_our_signatures(ignored: dict[str, Any]) -> None:
    kept = _jwk()
    keys = KeySet.from_dict({"keys": [ignored, kept]})
    assert list(keys) == [kept["kid"]]
    with pytest.raises(ConfigError):  # and alone, it leaves nothing usable
        KeySet.from_dict({"keys": [ignored]})


def test_from_dict_accepts_explicit_use_and_key_ops() -> None:
    jwk = _jwk(use="sig", key_ops=["verify"])
    assert list(KeySet.from_dict({"keys": [jwk]})) == [jwk["kid"]]
    no_use = _jwk(use=None)
    assert list(KeySet.from_dict({"keys": [no_use]})) == [no_use["kid"]]


def test_a_duplicate_kid_is_refused() -> None:
    first = _jwk()
    second = _jwk(kid=first["kid"])
    with pytest.raises(ConfigError):
        KeySet.from_dict({"keys": [first, second]})
    with pytest.raises(ConfigError):
        KeySet.from_dict({"keys": [first, first]})


@pytest.mark.parametrize(
    "jwks",
    [
        pytest.param({"keys": []}, id="no-keys"),
        pytest.param({}, id="no-keys-member"),
        pytest.param({"keys": {}}, id="keys-not-a-list"),
        pytest.param([], id="not-an-object"),
        pytest.param({"keys": ["x"]}, id="key-not-an-object"),
        pytest.param({"keys": [_jwk(d="nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")]}, id="d"),
    ],
)
def test_a_set_without_a_usable_key_is_refused(jwks: Any) -> None:
    with pytest.raises(ConfigError):
        KeySet.from_dict(jwks)


def test_a_private_member_next_to_good_keys_fails_the_whole_set() -> None:
    leaked = _jwk(d="nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")
    with pytest.raises(ConfigError) as info:
        KeySet.from_dict({"keys": [_jwk(), leaked]})
    assert "nWGxne" not in str(info.value)


def test_from_json_refuses_non_json_and_huge_input() -> None:
    for text in ("", "{", "not json", b"\xff\xfe", '{"keys": [NaN]}'):
        with pytest.raises(ConfigError):
            KeySet.from_json(text)
    huge = json.dumps({"keys": [_jwk()], "pad": "x" * MAX_JWKS_BYTES})
    with pytest.raises(ConfigError):
        KeySet.from_json(huge)


def test_keyset_repr_shows_kids_only() -> None:
    jwk = _jwk()
    assert repr(KeySet.from_dict({"keys": [jwk]})) == f"KeySet([{jwk['kid']!r}])"


# -- JwksFile -----------------------------------------------------------------------


def test_a_missing_or_broken_file_is_reported_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        JwksFile(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ConfigError):
        JwksFile(broken)


def test_jwks_file_picks_up_rotation_and_retirement(key_dir: KeyDirectory) -> None:
    source = JwksFile(key_dir.jwks_path, check_interval=0)
    old = key_dir.active().kid
    assert list(source.keys) == [old]
    new = key_dir.rotate().kid
    assert source.get(new) is not None and source.get(old) is not None
    key_dir.retire(old)
    assert source.get(old) is None
    assert list(source.keys) == [new]


def test_jwks_file_checks_at_most_once_per_interval(key_dir: KeyDirectory) -> None:
    source = JwksFile(key_dir.jwks_path, check_interval=3600)
    new = key_dir.rotate().kid
    assert source.get(new) is None  # not looked at again within the hour
    source.check_interval = 0
    assert source.get(new) is not None


def test_jwks_file_keeps_the_last_good_set(key_dir: KeyDirectory) -> None:
    source = JwksFile(key_dir.jwks_path, check_interval=0)
    kid = key_dir.active().kid
    good = key_dir.jwks_path.read_text()
    for garbage in ("{ not json", '{"keys": []}', "", json.dumps({"keys": [_jwk(d="AAAA")]})):
        key_dir.jwks_path.write_text(garbage)
        assert source.get(kid) is not None
        assert list(source.keys) == [kid]
    key_dir.jwks_path.unlink()
    assert source.get(kid) is not None
    other = _jwk()
    key_dir.jwks_path.write_text(json.dumps({"keys": [other]}))
    assert source.get(other["kid"]) is not None  # a good file again is picked up
    assert source.get(kid) is None
    key_dir.jwks_path.write_text(good)
    assert source.get(kid) is not None


def test_jwks_file_notices_a_change_of_content_with_the_same_size(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    first, second = _jwk(), _jwk()
    path.write_text(json.dumps({"keys": [first]}))
    source = JwksFile(path, check_interval=0)
    path.write_text(json.dumps({"keys": [second]}))
    assert path.stat().st_size == len(json.dumps({"keys": [first]}))
    assert source.get(second["kid"]) is not None
    assert source.get(first["kid"]) is None


def test_load_key_source(key_dir: KeyDirectory) -> None:
    source = load_key_source(str(key_dir.jwks_path))
    assert isinstance(source, JwksFile)
    assert source.get(key_dir.active().kid) is not None
    assert repr(source) == f"JwksFile({str(key_dir.jwks_path)!r})"
    with pytest.raises(ConfigError, match="loopback|https"):  # refused before any network
        load_key_source("http://issuer.example/jwks.json")
    with pytest.raises(ConfigError):
        load_key_source(os.fspath(key_dir.path / "nope.json"))


# --- who may write the JWKS: nobody but its owner, as for the signing side ---------------


def _jwks_in(directory: Path, *, dir_mode: int = 0o755, file_mode: int = 0o644) -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / "jwks.json"
    path.write_text(json.dumps({"keys": [_jwk()]}))
    path.chmod(file_mode)
    directory.chmod(dir_mode)
    return path


@pytest.mark.parametrize("mode", [0o666, 0o664, 0o646, 0o620, 0o602], ids=oct)
def test_a_jwks_file_others_may_write_is_refused(tmp_path: Path, mode: int) -> None:
    path = _jwks_in(tmp_path / "pub", file_mode=mode)
    with pytest.raises(ConfigError, match=r"JWKS file .* is writable by others \(mode 0"):
        JwksFile(path)
    with pytest.raises(ConfigError, match="writable by others"):
        load_key_source(str(path))


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757, 0o1777, 0o770], ids=oct)
def test_a_jwks_file_in_a_directory_others_may_write_is_refused(tmp_path: Path, mode: int) -> None:
    path = _jwks_in(tmp_path / "pub", dir_mode=mode)
    try:
        with pytest.raises(
            ConfigError, match="directory holding the JWKS file .* writable by others"
        ):
            JwksFile(path)
    finally:
        path.parent.chmod(0o755)


@pytest.mark.parametrize(
    ("dir_mode", "file_mode"), [(0o755, 0o644), (0o700, 0o600), (0o750, 0o640), (0o555, 0o444)]
)
def test_a_jwks_only_its_owner_may_write_is_accepted(
    tmp_path: Path, dir_mode: int, file_mode: int
) -> None:
    path = _jwks_in(tmp_path / "pub", dir_mode=dir_mode, file_mode=file_mode)
    try:
        assert len(JwksFile(path).keys) == 1
    finally:
        path.parent.chmod(0o755)


def test_a_symlink_to_a_jwks_in_a_world_writable_directory_is_refused(tmp_path: Path) -> None:
    target = _jwks_in(tmp_path / "shared", dir_mode=0o777)
    safe = tmp_path / "safe"
    safe.mkdir(mode=0o755)
    (safe / "jwks.json").symlink_to(target)
    try:
        with pytest.raises(ConfigError, match=r"directory holding the JWKS file .*shared"):
            JwksFile(safe / "jwks.json")
    finally:
        target.parent.chmod(0o755)


def test_a_symlink_in_a_world_writable_directory_is_refused(tmp_path: Path) -> None:
    target = _jwks_in(tmp_path / "safe")
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "jwks.json").symlink_to(target)
    shared.chmod(0o777)
    try:
        with pytest.raises(ConfigError, match=r"directory holding the JWKS file .*shared"):
            JwksFile(shared / "jwks.json")
    finally:
        shared.chmod(0o755)


def test_a_symlink_between_safe_directories_is_followed(tmp_path: Path) -> None:
    """As a Kubernetes ConfigMap mounts it: jwks.json -> ..data/jwks.json."""
    target = _jwks_in(tmp_path / "data")
    (tmp_path / "jwks.json").symlink_to(target)
    assert len(JwksFile(tmp_path / "jwks.json").keys) == 1


def test_a_running_verifier_ignores_a_jwks_rewritten_once_others_may_write_it(
    key_dir: KeyDirectory,
) -> None:
    source = JwksFile(key_dir.jwks_path, check_interval=0)
    kid = key_dir.active().kid
    planted = _jwk()
    key_dir.jwks_path.chmod(0o666)
    key_dir.jwks_path.write_text(json.dumps({"keys": [planted]}))
    assert source.get(planted["kid"]) is None  # the planted key is never trusted
    assert source.get(kid) is not None  # the last good set, read while the file was safe
    key_dir.jwks_path.chmod(0o644)
    assert source.get(planted["kid"]) is not None  # the owner made it safe: read again


def _unshare(*command: str) -> subprocess.CompletedProcess[str]:
    """Run ``command`` as root of a fresh user and mount namespace (no privilege needed)."""
    return subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", *command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1)")
def test_a_jwks_on_a_read_only_mount_is_trusted_whatever_its_modes(tmp_path: Path) -> None:
    """As Kubernetes mounts a ConfigMap: mode bits say 0777, but nobody can write there."""
    if _unshare("true").returncode != 0:
        pytest.skip("no unprivileged mount namespaces here")
    path = _jwks_in(tmp_path / "mounted", dir_mode=0o777, file_mode=0o666)
    with pytest.raises(ConfigError, match="writable by others"):
        JwksFile(path)  # the same files on a writable mount
    script = f"from agentsudo_tokens import JwksFile; print(len(JwksFile({str(path)!r}).keys))"
    remount_read_only = (
        'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && exec "$2" -c "$3"'
    )
    proc = _unshare("sh", "-c", remount_read_only, "sh", str(path.parent), sys.executable, script)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "1"
