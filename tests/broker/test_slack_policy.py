"""``[slack]`` in the policy, as ``agentsudo policy check`` (the installed command) reads it:
each Slack user must be an admin, each secret file readable by the broker's user alone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from installed_cli import sh
from slack_standin import HOOK_SECRET, SIGNING_SECRET, secret_file, slack_policy

from agentsudo_tokens.broker.policy import load_policy

HOOK = f"https://hooks.slack.com/services/{HOOK_SECRET}"


def written(root: Path, users: dict[str, str], admins: str | None = None) -> Path:
    root.chmod(0o700)
    secret_file(root / "slack-webhook", HOOK)
    secret_file(root / "slack-signing-secret", SIGNING_SECRET)
    path = root / "agentsudo.toml"
    text = slack_policy(users) if admins is None else slack_policy(users, admins)
    path.write_text(text)
    return path


def check(path: Path) -> tuple[int, str]:
    done = sh("policy", "check", str(path), cwd=path.parent)
    assert HOOK_SECRET not in done.stderr + done.stdout
    assert SIGNING_SECRET not in done.stderr + done.stdout
    return done.returncode, done.stderr


def line_of(path: Path, text: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def test_a_policy_whose_slack_users_are_admins_is_accepted(tmp_path: Path) -> None:
    users = {"U0ALICE1": "alice", "U0ROOT11": "uid:0", "W0ROOT22": "user:root", "U0BARE33": "root"}
    path = written(tmp_path, users, '"credential:alice", "uid:0"')
    assert check(path) == (0, "")
    slack = load_policy(path).slack
    assert slack is not None
    assert slack.webhook_url == HOOK and slack.signing_secret == SIGNING_SECRET.encode()
    shown = {user: (admin.name, str(admin.principal)) for user, admin in slack.users.items()}
    assert shown == {
        "U0ALICE1": ("alice", "credential:alice"),
        "U0ROOT11": ("uid:0", "uid:0"),
        "W0ROOT22": ("root", "user:root"),
        "U0BARE33": ("root", "user:root"),  # alice is a credential; root is a user here
    }
    assert HOOK_SECRET not in repr(load_policy(path))


def test_an_admin_through_a_group_may_answer(tmp_path: Path) -> None:
    path = written(tmp_path, {"U0ROOT11": "user:root"}, '"group:root"')
    assert check(path) == (0, "")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("bob", "expected a user that exists on this system"),
        ("credential:bob", "'credential:bob' is not in [broker] admins"),
        ("uid:4242", "'uid:4242' is not in [broker] admins"),
        ("group:root", "expected one person (uid, user or credential)"),
        ("user:*", "no wildcard principal"),
        ("", "expected a user that exists on this system"),
    ],
)
def test_a_slack_user_who_is_not_an_admin_is_a_line_numbered_error(
    tmp_path: Path, name: str, expected: str
) -> None:
    path = written(tmp_path, {"U0ALICE1": "alice", "U0MALLORY": name})
    status, stderr = check(path)
    assert status == 1
    where = f"{path}:{line_of(path, 'U0MALLORY')}: slack.users.U0MALLORY: expected an admin"
    assert stderr.startswith(f"agentsudo: {where}"), stderr
    assert expected in stderr and len(stderr.splitlines()) == 1


@pytest.mark.parametrize("user", ["u0alice1", "alice", "U0", "C0CHANNEL", "U0ALICE1\u200b"])
def test_a_key_that_is_no_slack_user_id_is_refused(tmp_path: Path, user: str) -> None:
    path = written(tmp_path, {f'"{user}"': "alice"})
    status, stderr = check(path)
    assert status == 1
    assert "expected a Slack user id like U0123ABC" in stderr, stderr


def test_a_signing_secret_others_may_read_is_refused(tmp_path: Path) -> None:
    path = written(tmp_path, {"U0ALICE1": "alice"})
    (tmp_path / "slack-signing-secret").chmod(0o640)
    status, stderr = check(path)
    assert status == 1
    assert f"{path}:{line_of(path, 'signing_secret_file')}: slack.signing_secret_file:" in stderr
    assert "is readable by others (mode 0640); expected 0600 or 0400" in stderr


def test_a_webhook_file_others_may_read_is_refused(tmp_path: Path) -> None:
    path = written(tmp_path, {"U0ALICE1": "alice"})
    (tmp_path / "slack-webhook").chmod(0o604)
    status, stderr = check(path)
    assert status == 1 and "slack.webhook_url_file:" in stderr
    assert "readable by others (mode 0604)" in stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file away needs root")
def test_a_secret_file_of_another_user_is_refused(tmp_path: Path) -> None:
    path = written(tmp_path, {"U0ALICE1": "alice"})
    os.chown(tmp_path / "slack-signing-secret", 65534, 65534)
    status, stderr = check(path)
    assert status == 1 and "belongs to uid 65534" in stderr


def test_a_secret_in_a_directory_others_may_write_is_refused(tmp_path: Path) -> None:
    path = written(tmp_path, {"U0ALICE1": "alice"})
    shared = tmp_path / "shared"
    shared.mkdir()
    secret_file(shared / "secret", SIGNING_SECRET)
    shared.chmod(0o777)
    path.write_text(path.read_text().replace('"slack-signing-secret"', '"shared/secret"'))
    status, stderr = check(path)
    assert status == 1 and "is writable by others" in stderr, stderr


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("short", "expected a signing secret of at least 16 characters, found 5"),
        ("two words in it here", "expected one line of printable ASCII"),
        ("", "expected one line of printable ASCII"),
    ],
)
def test_an_unusable_signing_secret_is_refused(tmp_path: Path, content: str, expected: str) -> None:
    path = written(tmp_path, {"U0ALICE1": "alice"})
    secret_file(tmp_path / "slack-signing-secret", content)
    status, stderr = check(path)
    assert status == 1 and "slack.signing_secret_file:" in stderr and expected in stderr


@pytest.mark.parametrize(
    "url",
    [
        f"http://hooks.slack.com/services/{HOOK_SECRET}",
        f"https://user:pw@hooks.slack.com/services/{HOOK_SECRET}",
        f"ftp://127.0.0.1/services/{HOOK_SECRET}",
    ],
)
def test_an_unusable_webhook_url_is_refused_without_showing_it(tmp_path: Path, url: str) -> None:
    path = written(tmp_path, {"U0ALICE1": "alice"})
    secret_file(tmp_path / "slack-webhook", url)
    status, stderr = check(path)  # and the secret path is not in its output
    assert status == 1 and "slack.webhook_url_file: the URL it holds: expected an https" in stderr


def test_a_missing_secret_file_or_key_is_refused(tmp_path: Path) -> None:
    path = written(tmp_path, {"U0ALICE1": "alice"})
    (tmp_path / "slack-webhook").unlink()
    status, stderr = check(path)
    assert status == 1 and "slack.webhook_url_file: cannot read" in stderr
    path.write_text(path.read_text().replace('webhook_url_file = "slack-webhook"', ""))
    status, stderr = check(path)
    assert status == 1 and "slack.webhook_url_file: expected a value, found nothing" in stderr
    path.write_text(path.read_text().replace("[slack.users]", "[slack.users]\nteam = 3"))
    status, stderr = check(path)
    assert status == 1


def test_an_unknown_slack_key_is_named(tmp_path: Path) -> None:
    path = written(tmp_path, {"U0ALICE1": "alice"})
    path.write_text(path.read_text().replace("[slack.users]", 'channel = "C0"\n[slack.users]'))
    status, stderr = check(path)
    assert status == 1
    assert "expected one of webhook_url_file, signing_secret_file, users" in stderr
    assert "unknown key 'channel'" in stderr


def test_the_broker_does_not_start_with_a_bad_secret_file(tmp_path: Path) -> None:
    path = written(tmp_path, {"U0ALICE1": "alice"})
    (tmp_path / "slack-signing-secret").chmod(0o644)
    assert sh("keys", "init", "--keys-dir", str(tmp_path / "keys"), cwd=tmp_path).returncode == 0
    done = sh(
        "serve", "--policy", str(path), "--keys-dir", str(tmp_path / "keys"),
        "--socket", str(tmp_path / "broker.sock"), cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode != 0
    assert "slack.signing_secret_file" in done.stderr and "readable by others" in done.stderr
