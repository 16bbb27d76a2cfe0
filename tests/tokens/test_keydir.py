"""The key directory: layout, permissions, rotation, retirement, concurrency."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from agentsudo_tokens import (
    ConfigError,
    Issuer,
    JwksFile,
    KeyDirectory,
    Settings,
    SigningKey,
    UnknownKeyError,
    Verifier,
)
from agentsudo_tokens.tokens.keydir import GITIGNORE

_PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "k"}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _jwks(keydir: KeyDirectory) -> dict[str, dict[str, str]]:
    data = json.loads(keydir.jwks_path.read_text())
    assert set(data) == {"keys"}
    return {jwk["kid"]: jwk for jwk in data["keys"]}


def _assert_consistent(keydir: KeyDirectory) -> None:
    """Exactly one active key; jwks.json holds exactly the keys not retired; pems match."""
    infos = keydir.list()
    assert [info.status for info in infos].count("active") == 1
    trusted = {info.kid for info in infos if info.status != "retired"}
    assert set(_jwks(keydir)) == trusted
    pems = {path.stem for path in keydir.path.glob("*.pem")}
    assert pems == trusted
    assert keydir.signing_key().kid == keydir.active().kid
    assert len({info.kid for info in infos}) == len(infos)


def test_init_lays_out_the_directory(tmp_path: Path) -> None:
    keydir = KeyDirectory.init(tmp_path / "keys")
    assert _mode(keydir.path) == 0o700
    assert (keydir.path / ".gitignore").read_text() == "*\n!.gitignore\n!README.md\n" == GITIGNORE
    [info] = keydir.list()
    assert (info.alg, info.status, info.retired) == ("EdDSA", "active", None)
    pem = keydir.path / f"{info.kid}.pem"
    assert _mode(pem) == 0o600
    assert pem.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert _mode(keydir.path / "keys.json") == 0o600
    jwks = _jwks(keydir)
    assert list(jwks) == [info.kid]
    jwk = jwks[info.kid]
    assert (jwk["alg"], jwk["use"], jwk["kty"], jwk["crv"]) == ("EdDSA", "sig", "OKP", "Ed25519")
    assert not _PRIVATE_MEMBERS & set(jwk)
    assert keydir.signing_key().kid == info.kid
    assert keydir.public_keys()[info.kid] == keydir.signing_key().public


def test_init_makes_private_files_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        keydir = KeyDirectory.init(tmp_path / "keys")
    finally:
        os.umask(old)
    assert _mode(keydir.path) == 0o700
    assert _mode(keydir.path / f"{keydir.active().kid}.pem") == 0o600
    assert _mode(keydir.path / "keys.json") == 0o600


def test_init_twice_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    keydir = KeyDirectory.init(tmp_path / "keys")
    before = {p.name: p.read_bytes() for p in keydir.path.iterdir() if p.is_file()}
    with pytest.raises(ConfigError):
        KeyDirectory.init(tmp_path / "keys")
    after = {p.name: p.read_bytes() for p in keydir.path.iterdir() if p.is_file()}
    assert after == before


def test_a_private_key_is_never_written_over_an_existing_file(tmp_path: Path) -> None:
    """O_EXCL: a file (or a planted symlink) at the key's path is not written through."""
    from agentsudo_tokens.tokens.keydir import _write_private

    target = tmp_path / "victim"
    target.write_text("precious")
    link = tmp_path / "planted.pem"
    link.symlink_to(target)
    with pytest.raises(FileExistsError):
        _write_private(link, b"secret")
    with pytest.raises(FileExistsError):
        _write_private(target, b"secret")
    assert target.read_text() == "precious"


def test_init_keeps_an_existing_gitignore(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / ".gitignore").write_text("custom\n")
    KeyDirectory.init(tmp_path / "keys")
    assert (tmp_path / "keys" / ".gitignore").read_text() == "custom\n"


def test_init_refuses_an_unknown_algorithm(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        KeyDirectory.init(tmp_path / "keys", alg="RS256")
    assert not (tmp_path / "keys").exists()


def test_a_missing_directory_is_a_config_error(tmp_path: Path) -> None:
    keydir = KeyDirectory(tmp_path / "nowhere")
    for call in (keydir.list, keydir.active, keydir.signing_key, keydir.public_keys, keydir.rotate):
        with pytest.raises(ConfigError):
            call()


def test_es256_directory(tmp_path: Path) -> None:
    keydir = KeyDirectory.init(tmp_path / "keys", alg="ES256")
    key = keydir.signing_key()
    assert key.alg == "ES256" == keydir.active().alg
    jwk = _jwks(keydir)[key.kid]
    assert (jwk["alg"], jwk["kty"], jwk["crv"], jwk["use"]) == ("ES256", "EC", "P-256", "sig")
    assert not _PRIVATE_MEMBERS & set(jwk)
    assert keydir.rotate().alg == "ES256"  # rotation keeps the algorithm
    assert keydir.rotate(alg="EdDSA").alg == "EdDSA"
    _assert_consistent(keydir)
    with pytest.raises(ConfigError):
        keydir.rotate(alg="HS256")
    _assert_consistent(keydir)


def test_rotate_makes_a_new_active_key_and_keeps_the_old_one_trusted(
    key_dir: KeyDirectory,
) -> None:
    old = key_dir.active()
    new = key_dir.rotate()
    assert new.kid != old.kid and new.status == "active"
    statuses = {info.kid: info.status for info in key_dir.list()}
    assert statuses == {old.kid: "verifying", new.kid: "active"}
    assert set(_jwks(key_dir)) == {old.kid, new.kid}
    assert key_dir.signing_key().kid == new.kid
    assert _mode(key_dir.path / f"{new.kid}.pem") == 0o600
    _assert_consistent(key_dir)


def test_tokens_survive_rotation_until_their_key_is_retired(key_dir: KeyDirectory) -> None:
    verifier = Verifier(JwksFile(key_dir.jwks_path, check_interval=0), cache_size=0)
    old_kid = key_dir.active().kid
    before = Issuer(key_dir.signing_key()).issue("SupportBot", "read:orders").token
    assert verifier.verify(before).kid == old_kid

    key_dir.rotate()
    after = Issuer(key_dir.signing_key()).issue("SupportBot", "read:orders").token
    assert verifier.verify(before).kid == old_kid
    assert verifier.verify(after).kid == key_dir.active().kid != old_kid

    retired = key_dir.retire(old_kid)
    assert (retired.kid, retired.status) == (old_kid, "retired")
    assert retired.retired is not None
    assert old_kid not in _jwks(key_dir)
    assert not (key_dir.path / f"{old_kid}.pem").exists()
    with pytest.raises(UnknownKeyError):
        verifier.verify(before)
    assert verifier.verify(after).subject == "SupportBot"
    _assert_consistent(key_dir)


def test_a_retire_that_leaves_the_file_the_same_size_is_noticed(key_dir: KeyDirectory) -> None:
    """{A} -> {A, B} -> {B}: same size as before, and yet another key set."""
    source = JwksFile(key_dir.jwks_path, check_interval=0)
    old_kid = key_dir.active().kid
    assert source.get(old_kid) is not None
    size = key_dir.jwks_path.stat().st_size
    new_kid = key_dir.rotate().kid
    key_dir.retire(old_kid)
    assert key_dir.jwks_path.stat().st_size == size
    assert source.get(old_kid) is None
    assert source.get(new_kid) is not None


def test_retiring_the_active_or_an_unknown_key_is_refused(key_dir: KeyDirectory) -> None:
    active = key_dir.active().kid
    with pytest.raises(ConfigError):
        key_dir.retire(active)
    with pytest.raises(ConfigError):
        key_dir.retire("no-such-kid")
    with pytest.raises(ConfigError):
        key_dir.retire("../../etc/passwd")
    _assert_consistent(key_dir)
    assert (key_dir.path / f"{active}.pem").exists()
    key_dir.rotate()
    key_dir.retire(active)
    with pytest.raises(ConfigError):  # and only once
        key_dir.retire(active)
    _assert_consistent(key_dir)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o700 | 0o044])
def test_a_private_key_others_can_read_is_refused(key_dir: KeyDirectory, mode: int) -> None:
    pem = key_dir.path / f"{key_dir.active().kid}.pem"
    pem.chmod(mode)
    with pytest.raises(ConfigError) as info:
        key_dir.signing_key()
    assert info.value.expected == "0600"
    assert "PRIVATE KEY" not in str(info.value)
    pem.chmod(0o600)
    assert key_dir.signing_key().kid == key_dir.active().kid


def test_a_private_key_behind_a_symlink_is_refused(key_dir: KeyDirectory, tmp_path: Path) -> None:
    pem = key_dir.path / f"{key_dir.active().kid}.pem"
    elsewhere = tmp_path / "elsewhere.pem"
    pem.rename(elsewhere)
    pem.symlink_to(elsewhere)
    with pytest.raises(ConfigError):
        key_dir.signing_key()


def test_a_private_key_that_does_not_match_its_kid_is_refused(key_dir: KeyDirectory) -> None:
    pem = key_dir.path / f"{key_dir.active().kid}.pem"
    pem.unlink()
    fd = os.open(pem, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(SigningKey.generate().to_pem())
    with pytest.raises(ConfigError) as info:
        key_dir.signing_key()
    assert info.value.expected == key_dir.active().kid


@pytest.mark.parametrize(
    "state",
    [
        "not json",
        '{"keys": "nope"}',
        '{"keys": []}',
        '{"keys": [{"kid": "a", "alg": "EdDSA", "status": "verifying", "created": "x"}]}',
        '{"keys": [{"kid": "a", "alg": "EdDSA", "status": "active", "created": "x"},'
        ' {"kid": "b", "alg": "EdDSA", "status": "active", "created": "x"}]}',
        '{"keys": [{"kid": "../a", "alg": "EdDSA", "status": "active", "created": "x"}]}',
        '{"keys": [{"kid": "a", "alg": "EdDSA", "status": "boss", "created": "x"}]}',
        '{"keys": [{"kid": "a", "alg": "EdDSA", "status": "active", "created": "x", "y": 1}]}',
    ],
    ids=[
        "not-json",
        "keys-not-list",
        "no-keys",
        "no-active",
        "two-active",
        "path-in-kid",
        "bad-status",
        "unknown-field",
    ],
)
def test_a_broken_state_file_is_a_config_error(key_dir: KeyDirectory, state: str) -> None:
    (key_dir.path / "keys.json").write_text(state)
    with pytest.raises(ConfigError):
        key_dir.signing_key()
    with pytest.raises(ConfigError):
        key_dir.rotate()


def test_describe_and_repr(key_dir: KeyDirectory) -> None:
    [record] = key_dir.describe()
    assert set(record) == {"kid", "alg", "status", "created", "retired"}
    assert record["status"] == "active"
    assert repr(key_dir) == f"KeyDirectory({str(key_dir.path)!r})"


def test_concurrent_rotations_from_threads_leave_a_consistent_directory(
    key_dir: KeyDirectory,
) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def rotate_twice() -> None:
        try:
            start.wait()
            KeyDirectory(key_dir.path).rotate()
            KeyDirectory(key_dir.path).rotate()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=rotate_twice) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(key_dir.list()) == 1 + 12
    _assert_consistent(key_dir)


def test_concurrent_rotations_and_retirements_from_processes(key_dir: KeyDirectory) -> None:
    first = key_dir.active().kid
    key_dir.rotate()
    script = (
        "import sys\n"
        "from agentsudo_tokens import KeyDirectory, ConfigError\n"
        "keydir = KeyDirectory(sys.argv[1])\n"
        "for _ in range(3):\n"
        "    keydir.rotate()\n"
        "try:\n"
        "    keydir.retire(sys.argv[2])\n"
        "except ConfigError:\n"
        "    pass\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(key_dir.path), first]) for _ in range(4)
    ]
    assert [proc.wait(timeout=60) for proc in procs] == [0, 0, 0, 0]
    infos = key_dir.list()
    assert len(infos) == 2 + 12
    assert [info.kid for info in infos if info.status == "retired"] == [first]
    _assert_consistent(key_dir)


def test_staged_rotation_publishes_before_signing(tmp_path: Path) -> None:
    from agentsudo_tokens import Issuer, JwksFile, Verifier

    keydir = KeyDirectory.init(tmp_path / "keys")
    first = keydir.active().kid
    staged = keydir.rotate(stage=True)
    assert staged.status == "staged"
    assert keydir.active().kid == first  # still signing with the old key
    assert staged.kid in keydir.public_keys()  # but verifiers can already fetch the new one
    verifier = Verifier(JwksFile(keydir.jwks_path, check_interval=0))
    keydir.activate(staged.kid)
    assert keydir.active().kid == staged.kid
    statuses = {info.kid: info.status for info in keydir.list()}
    assert statuses == {first: "verifying", staged.kid: "active"}
    token = Issuer(keydir.signing_key()).issue("Bot", "read:x").token
    assert verifier.verify(token).kid == staged.kid
    with pytest.raises(ConfigError, match="not staged"):
        keydir.activate(first)
    with pytest.raises(ConfigError, match="not staged"):
        keydir.activate("no-such-kid")


# --- the verifying side refuses what the signing side refuses --------------------------


@pytest.mark.parametrize("mode", [0o664, 0o666], ids=oct)
def test_public_keys_refuses_a_jwks_others_may_write(key_dir: KeyDirectory, mode: int) -> None:
    key_dir.jwks_path.chmod(mode)
    with pytest.raises(ConfigError, match="JWKS file .* writable by others"):
        key_dir.public_keys()
    with pytest.raises(ConfigError, match="writable by others"):
        Verifier.from_settings(Settings.from_env({"AGENTSUDO_KEYS_DIR": str(key_dir.path)}))


def test_the_writable_check_is_shared_with_the_signing_side(key_dir: KeyDirectory) -> None:
    key_dir.path.chmod(0o775)
    try:
        with pytest.raises(ConfigError, match="key directory .* writable by others"):
            key_dir.signing_key()
        with pytest.raises(ConfigError, match="directory holding the JWKS file .* writable"):
            JwksFile(key_dir.jwks_path)
    finally:
        key_dir.path.chmod(0o700)


def _agentsudo(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSUDO_")}
    return subprocess.run(
        [str(Path(sys.executable).parent / "agentsudo"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("what", "mode"),
    [("jwks.json", 0o666), ("jwks.json", 0o664), (".", 0o777), (".", 0o775)],
    ids=["jwks-world-writable", "jwks-group-writable", "dir-world-writable", "dir-group-writable"],
)
def test_agentsudo_verify_refuses_keys_others_may_write(
    tmp_path: Path, what: str, mode: int
) -> None:
    """Default configuration, real processes: ./keys made by keys init, then loosened."""
    assert _agentsudo("keys", "init", cwd=tmp_path).returncode == 0
    issued = _agentsudo("issue", "--agent", "SupportBot", "--scopes", "read:orders", cwd=tmp_path)
    token = issued.stdout.strip()
    assert _agentsudo("verify", token, cwd=tmp_path).returncode == 0
    (tmp_path / "keys" / what).chmod(mode)
    try:
        proc = _agentsudo("verify", token, cwd=tmp_path)
    finally:
        (tmp_path / "keys" / what).chmod(0o644 if what == "jwks.json" else 0o700)
    assert proc.returncode == 2, proc.stdout
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "writable by others" in proc.stderr and f"mode {mode:04o}" in proc.stderr
