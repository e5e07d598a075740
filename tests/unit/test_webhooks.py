"""Webhook signing, the URL check (SSRF), backoff and the settings' rules: pure functions."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from assistant.errors import InvalidRequestError
from assistant.webhooks.service import check_events
from assistant.webhooks.settings import WebhookSettings
from assistant.webhooks.signing import new_secret, sign, signature, verify
from assistant.webhooks.urls import check_destination, check_url, is_public
from assistant.webhooks.worker import backoff_s

BODY = b'{"id":"evt_1","type":"ping"}'


def test_a_signature_verifies_and_any_change_breaks_it():
    secret = new_secret()
    header = sign(secret, BODY, timestamp=1_700_000_000)
    assert header.startswith("t=1700000000,v1=")
    assert verify(secret, header, BODY, now=1_700_000_010)
    assert not verify(secret, header, BODY + b" ", now=1_700_000_010)
    assert not verify(new_secret(), header, BODY, now=1_700_000_010)
    forged = header.replace("t=1700000000", "t=1700000005")
    assert not verify(secret, forged, BODY, now=1_700_000_010)


def test_an_old_or_malformed_header_is_refused():
    secret = new_secret()
    header = sign(secret, BODY, timestamp=1_700_000_000)
    assert not verify(secret, header, BODY, tolerance_s=300, now=1_700_000_301)
    assert verify(secret, header, BODY, tolerance_s=300, now=1_700_000_300)
    for bad in (None, "", "v1=abc", "t=1700000000", "t=x,v1=" + "0" * 64):
        assert not verify(secret, bad, BODY, now=1_700_000_000)


def test_any_v1_of_several_may_match_while_a_secret_rotates():
    old, new = new_secret(), new_secret()
    header = f"t=5,v1={signature(old, 5, BODY)},v1={signature(new, 5, BODY)}"
    assert verify(new, header, BODY, now=5) and verify(old, header, BODY, now=5)


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body():
    import hashlib
    import hmac

    expected = hmac.new(b"k", b"42." + BODY, hashlib.sha256).hexdigest()
    assert signature("k", 42, BODY) == expected


@pytest.mark.parametrize("url", ["ftp://example.com/x", "file:///etc/passwd", "example.com/x",
                                 "http:///x", "https://user:pw@example.com/", "http://[::1"])  # fmt: skip
def test_a_url_of_the_wrong_form_is_invalid_webhook_url(url):
    with pytest.raises(InvalidRequestError) as caught:
        check_url(url, WebhookSettings())
    assert caught.value.code == "invalid_webhook_url"


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "192.168.0.1", "169.254.169.254",
                                     "::1", "::ffff:127.0.0.1", "0.0.0.0", "fe80::1%eth0"])  # fmt: skip
def test_private_loopback_and_link_local_addresses_are_not_public(address):
    assert not is_public(address)


def test_public_addresses_are():
    assert is_public("93.184.215.14") and is_public("2606:2800:21f:cb07:6820:80da:af6b:8b2c")


async def test_a_loopback_webhook_is_refused_unless_allowed():
    with pytest.raises(InvalidRequestError) as caught:
        await check_destination("http://127.0.0.1:9/hook", WebhookSettings())
    assert caught.value.code == "webhook_url_not_allowed"
    with pytest.raises(InvalidRequestError) as caught:
        await check_destination("http://localhost:9/hook", WebhookSettings())
    assert caught.value.code == "webhook_url_not_allowed"
    await check_destination(
        "http://127.0.0.1:9/hook", WebhookSettings(allow_private_addresses=True)
    )


async def test_a_host_that_does_not_resolve_is_invalid():
    with pytest.raises(InvalidRequestError) as caught:
        await check_destination("https://no-such-host.invalid/hook", WebhookSettings())
    assert caught.value.code == "invalid_webhook_url"


def test_backoff_doubles_up_to_its_ceiling_with_jitter_in_its_upper_half():
    settings = WebhookSettings(backoff_base_s=1, backoff_max_s=10)
    assert [backoff_s(n, settings, lambda: 1.0) for n in (1, 2, 3, 4, 5, 60)] == [
        1,
        2,
        4,
        8,
        10,
        10,
    ]
    assert [backoff_s(n, settings, lambda: 0.0) for n in (1, 2, 5)] == [0.5, 1, 5]


def test_settings_keep_the_lease_longer_than_an_attempt():
    with pytest.raises(ValidationError):
        WebhookSettings(timeout_s=10, lease_s=5)
    with pytest.raises(ValidationError):
        WebhookSettings(backoff_base_s=10, backoff_max_s=1)


def test_events_must_be_known_and_are_kept_once():
    assert check_events(["message.created", "message.created"]) == ("message.created",)
    for bad in ([], ["ping"], ["message.deleted"]):
        with pytest.raises(InvalidRequestError):
            check_events(bad)


def test_the_readmes_stdlib_verify_agrees_with_ours():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = next(b for b in readme.split("```python")[1:] if "def verify(secret: str, header" in b)
    namespace: dict = {}
    exec(block.split("```", 1)[0], namespace)
    theirs = namespace["verify"]
    assert theirs.__module__ != "assistant.webhooks.signing"  # the copy, not the import
    secret = new_secret()
    header = sign(secret, BODY)
    assert theirs(secret, header, BODY) and verify(secret, header, BODY)
    assert not theirs(secret, header, BODY + b"x") and not theirs(new_secret(), header, BODY)
    assert not theirs(secret, sign(secret, BODY, timestamp=1), BODY)
