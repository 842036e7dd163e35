"""Malformed settings: one line per bad variable on stderr, exit code 2, credentials masked.

Every ``MOMENTLY_*`` setting is tried with a bad value through the command line; a few rows
go through the real ``momently`` process for ``serve``, ``worker`` and ``demo``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from momently.cli import main
from momently.settings import Settings
from momently.settings_errors import InvalidSettings, mask_url

SECRET = "s3cr3t-Pa55"  # never printed, whatever the variable it is in

# (variable, bad value, the message after "VARIABLE: ")
MALFORMED = [
    ("MOMENTLY_DATABASE_URL", "mysql://app:" + SECRET + "@db/momently", "expected sqlite:///PATH or post"),
    ("MOMENTLY_DATABASE_URL", "not a url", "expected sqlite:///PATH or postgresql://USER@HOST/DB"),
    ("MOMENTLY_DATABASE_URL", "sqlite:///:memory:", "an in-memory SQLite database cannot be shared"),
    ("MOMENTLY_HOST", "no such host!", "expected an IP address or a host name, got 'no such host!'"),
    ("MOMENTLY_PORT", "abc", "expected an integer, got 'abc'"),
    ("MOMENTLY_PORT", "70000", "expected a value of at most 65535, got '70000'"),
    ("MOMENTLY_DEDUP_WINDOW_DAYS", "a week", "expected a number, got 'a week'"),
    ("MOMENTLY_DEDUP_WINDOW_DAYS", "inf", "expected a finite number, got 'inf'"),
    ("MOMENTLY_DEDUP_WINDOW_DAYS", "1e12", "expected a value of at most 3650, got '1e12'"),
    ("MOMENTLY_AUTH_CACHE_SECONDS", "-1", "expected a value of at least 0, got '-1'"),
    ("MOMENTLY_CORS_ORIGINS", "https://shop.example", "expected JSON, got 'https://shop.example'"),
    ("MOMENTLY_CORS_ORIGINS", '{"a": 1}', "expected a JSON list, got '{\"a\": 1}'"),
    ("MOMENTLY_RUN_ENGINE", "maybe", "expected true or false, got 'maybe'"),
    ("MOMENTLY_DEFAULT_TIMEZONE", "Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
    ("MOMENTLY_LOG_LEVEL", "loud", "expected one of critical, error, warning, info, debug, trace"),
    ("MOMENTLY_PUBLIC_URL", "shop.example", "expected an http:// or https:// URL, got 'shop.example'"),
    (
        "MOMENTLY_WEBHOOK_URL",
        "ftp://u:" + SECRET + "@h/x",
        "expected an http:// or https:// URL, got 'ftp://u:***@h/x'",
    ),
    ("MOMENTLY_WEBHOOK_SECRET", SECRET, "expected whsec_ followed by base64 (value not shown)"),
    ("MOMENTLY_WEBHOOK_TIMEOUT_SECONDS", "0", "expected a value greater than 0, got '0'"),
    ("MOMENTLY_ALLOW_PRIVATE_WEBHOOKS", "sometimes", "expected true or false"),
    ("MOMENTLY_VAPID_PRIVATE_KEY", SECRET, "expected a base64url VAPID private key"),
    ("MOMENTLY_VAPID_SUBJECT", "ops", "expected mailto:ADDRESS or an https:// URL, got 'ops'"),
    (
        "MOMENTLY_SMTP_URL",
        "smtp://mailer:" + SECRET + "@mail.example:99999",
        "expected a valid URL (Port out of range 0-65535), got 'smtp://mailer:***@mail.example:99999'",
    ),
    (
        "MOMENTLY_SMTP_URL",
        "smtp://mailer:" + SECRET + "@mail.example:abc",
        "expected a valid URL (Port could not be cast",
    ),
    ("MOMENTLY_SMTP_URL", "smtp://mailer:" + SECRET + "@mail.example:0", "expected a port from 1 to 65535"),
    (
        "MOMENTLY_DATABASE_URL",
        "postgresql://app:" + SECRET + "@[db/m",
        "expected a valid URL (Invalid IPv6 URL)",
    ),
    (
        "MOMENTLY_SMTP_URL",
        "mail.example:587",
        "expected smtp://HOST[:PORT], smtps://HOST[:PORT] or smtp+insecure://HOST[:PORT]",
    ),
    ("MOMENTLY_EMAIL_FROM", "nobody", "expected an address such as"),
    ("MOMENTLY_SMTP_TIMEOUT_SECONDS", "soon", "expected a number, got 'soon'"),
    ("MOMENTLY_SMS_BASE_URL", "api.twilio.com", "expected an http:// or https:// URL"),
    ("MOMENTLY_SMS_TIMEOUT_SECONDS", "nan", "expected a finite number, got 'nan'"),
    ("MOMENTLY_CHANNEL_RATE_LIMITS", "{sms: 10}", "expected JSON, got '{sms: 10}'"),
    ("MOMENTLY_SECRETS_KEY", SECRET, "expected 32 url-safe base64-encoded bytes"),
    ("MOMENTLY_LEDGER_KEY", "short", "expected at least 32 characters"),
    ("MOMENTLY_WEBHOOK_ALLOW_NETWORKS", '["10.0.0.0/33"]', "'10.0.0.0/33' is not a network"),
    ("MOMENTLY_PUSH_HOSTS", "5", "expected a JSON list, got '5'"),
    ("MOMENTLY_ADMIN_CORS_ORIGINS", "[", "expected JSON, got '['"),
    ("MOMENTLY_DISPATCH_LEASE_SECONDS", "0", "expected a value of at least 0.1, got '0'"),
    ("MOMENTLY_CHANNEL_RATE_LIMITS", '{"sms": "fast"}', "sms: expected a number, got 'fast'"),
    ("MOMENTLY_CHANNEL_RATE_LIMITS", '{"sms": 0}', "sms: expected a value greater than 0, got '0'"),
    ("MOMENTLY_SEND_MAX_AGE_HOURS", "1e300", "expected a value of at most 87600"),
    ("MOMENTLY_ENGINE_CACHE_PEOPLE", "1.5", "expected an integer, got '1.5'"),
    ("MOMENTLY_DISPATCH_MAX_ATTEMPTS", "0", "expected a value of at least 1, got '0'"),
    ("MOMENTLY_DISPATCH_BACKOFF_SECONDS", "-2", "expected a value greater than 0, got '-2'"),
    ("MOMENTLY_IDLE_POLL_SECONDS", "inf", "expected a finite number, got 'inf'"),
    ("MOMENTLY_HEALTH_MIN_FREE_DISK_MB", "lots", "expected a number, got 'lots'"),
]


def _clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOMENTLY_")}
    env["MOMENTLY_DATABASE_URL"] = f"sqlite:///{tmp_path}/m.db"
    env.update(extra)
    return env


def _assert_one_clear_line(stderr: str, variable: str, message: str) -> None:
    lines = stderr.strip().splitlines()
    assert lines == [lines[0]], stderr  # one line, no traceback
    assert lines[0].startswith(f"{variable}: "), stderr
    assert message in lines[0], stderr
    assert SECRET not in stderr


@pytest.mark.parametrize(
    ("variable", "value", "message"), MALFORMED, ids=[f"{v}={x}" for v, x, _ in MALFORMED]
)
def test_a_malformed_setting_is_one_line_naming_it(
    tmp_path: Path, variable: str, value: str, message: str
) -> None:
    # Given one malformed variable, when any command starts
    result = CliRunner().invoke(main, ["migrate"], env=_clean_env(tmp_path, **{variable: value}))
    # Then it exits 2 with one line naming the variable and what is wrong, the secret masked
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    _assert_one_clear_line(result.stderr, variable, message)
    assert not Path(tmp_path / "m.db").exists()  # nothing was done


@pytest.mark.parametrize(
    ("args", "variable", "value", "message"),
    [
        (
            ["serve"],
            "MOMENTLY_SMTP_URL",
            f"smtp://mailer:{SECRET}@mail.example:99999",
            "expected a valid URL",
        ),
        (["serve"], "MOMENTLY_PORT", "abc", "expected an integer, got 'abc'"),
        (["serve", "--workers", "2"], "MOMENTLY_CORS_ORIGINS", "*", "expected JSON, got '*'"),
        (["worker"], "MOMENTLY_CHANNEL_RATE_LIMITS", "sms=10", "expected JSON, got 'sms=10'"),
        (["worker"], "MOMENTLY_DATABASE_URL", f"postgresql://app:{SECRET}@db:notaport/m", "expected"),
        (["demo", "--exit"], "MOMENTLY_DEFAULT_TIMEZONE", "Europe/Atlantis", "unknown time zone"),
        (["demo", "--exit"], "MOMENTLY_VAPID_PRIVATE_KEY", SECRET, "expected a base64url VAPID private key"),
    ],
)
def test_the_real_commands_refuse_malformed_settings(
    tmp_path: Path, args: list[str], variable: str, value: str, message: str
) -> None:
    env = _clean_env(tmp_path, **{variable: value})
    done = subprocess.run(
        [sys.executable, "-m", "momently", *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    _assert_one_clear_line(done.stderr, variable, message)
    assert SECRET not in done.stdout


def test_a_database_url_that_cannot_parse_is_masked() -> None:
    # "db:notaport" makes urlsplit fail on the port: the password must still be hidden
    url = f"postgresql://app:{SECRET}@db:notaport/m"
    assert SECRET not in mask_url(url)
    with pytest.raises(InvalidSettings) as caught:
        Settings().with_overrides(database_url=url)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [("--port", "0", "--port: expected a value of at least 1, got '0'")],
)
def test_a_malformed_flag_is_named_as_the_flag(tmp_path: Path, flag: str, value: str, message: str) -> None:
    result = CliRunner().invoke(main, ["serve", flag, value], env=_clean_env(tmp_path))
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == message


def test_several_malformed_settings_are_all_named(tmp_path: Path) -> None:
    env = _clean_env(tmp_path, MOMENTLY_PORT="x", MOMENTLY_SMTP_URL=f"smtp://u:{SECRET}@h:0x")
    result = CliRunner().invoke(main, ["migrate"], env=env)
    assert result.exit_code == 2
    names = [line.split(":", 1)[0] for line in result.stderr.strip().splitlines()]
    assert names == ["MOMENTLY_PORT", "MOMENTLY_SMTP_URL"]
    assert SECRET not in result.stderr


def test_well_formed_values_pass(tmp_path: Path) -> None:
    env = _clean_env(
        tmp_path,
        MOMENTLY_CORS_ORIGINS='["https://shop.example"]',
        MOMENTLY_CHANNEL_RATE_LIMITS='{"sms": 10, "email": 50.5}',
        MOMENTLY_SMTP_URL=f"smtp+insecure://u:{SECRET}@mail.example:25",
        MOMENTLY_WEBHOOK_SECRET="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        MOMENTLY_LOG_LEVEL="WARNING",
        MOMENTLY_VAPID_SUBJECT="https://shop.example/contact",
        MOMENTLY_WEBHOOK_URL="",  # empty: unset, the channel off
        MOMENTLY_PORT="",
        MOMENTLY_HOST="::",
    )
    result = CliRunner().invoke(main, ["migrate"], env=env)
    assert result.exit_code == 0, result.output
