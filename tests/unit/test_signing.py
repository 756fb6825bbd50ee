import base64
import hashlib
import hmac

import pytest

from router.config import Config, Server
from router.webhooks.signing import auth_headers

URL = "http://127.0.0.1:8090/webhook"
BODY = b'{"message":{"type":"assistant-request"}}'
NOW = 1714564800.75
TIMESTAMP = "1714564800"


def fixed_now() -> float:
    return NOW


def make_config(*plans: dict) -> Config:
    credentials = [
        {
            "provider": "webhook",
            "id": f"hook-{index}",
            "name": f"hook {index}",
            "authenticationPlan": plan,
        }
        for index, plan in enumerate(plans)
    ]
    return Config.model_validate({"credentials": credentials})


def make_server(**fields) -> Server:
    return Server.model_validate({"url": URL, **fields})


def expected_hmac(key: str, payload: bytes, algorithm: str = "sha256") -> bytes:
    return hmac.new(key.encode(), payload, getattr(hashlib, algorithm)).digest()


def test_no_auth_sends_only_extra_headers():
    server = make_server(headers={"X-Team": "sales"})

    headers = auth_headers(server, make_config(), BODY)

    assert headers == {"X-Team": "sales"}


def test_secret_shorthand_header():
    server = make_server(secret="shh")

    headers = auth_headers(server, make_config(), BODY)

    assert headers == {"X-Cozmox-Secret": "shh"}


def test_bearer_with_prefix_default_header():
    config = make_config({"type": "bearer", "token": "tok-1"})
    server = make_server(credentialId="hook-0")

    headers = auth_headers(server, config, BODY)

    assert headers == {"Authorization": "Bearer tok-1"}


def test_bearer_custom_header_without_prefix():
    config = make_config(
        {
            "type": "bearer",
            "token": "tok-2",
            "headerName": "X-Api-Key",
            "bearerPrefixEnabled": False,
        }
    )
    server = make_server(credentialId="hook-0")

    headers = auth_headers(server, config, BODY)

    assert headers == {"X-Api-Key": "tok-2"}


def test_credential_replaces_extra_header_case_insensitively():
    config = make_config({"type": "bearer", "token": "tok-3"})
    server = make_server(
        credentialId="hook-0",
        headers={"authorization": "Bearer stale", "X-Team": "a"},
    )

    headers = auth_headers(server, config, BODY)

    assert headers == {"X-Team": "a", "Authorization": "Bearer tok-3"}


def test_secret_extra_header_and_bearer_together():
    config = make_config({"type": "bearer", "token": "tok-4"})
    server = make_server(credentialId="hook-0", secret="shh", headers={"X-A": "1"})

    headers = auth_headers(server, config, BODY)

    assert headers == {
        "X-A": "1",
        "X-Cozmox-Secret": "shh",
        "Authorization": "Bearer tok-4",
    }


def test_hmac_default_format_hex_sha256():
    config = make_config({"type": "hmac", "secretKey": "key-1", "algorithm": "sha256"})
    server = make_server(credentialId="hook-0")

    headers = auth_headers(server, config, BODY, now=fixed_now)

    payload = TIMESTAMP.encode() + b"." + BODY
    assert headers["x-signature"] == expected_hmac("key-1", payload).hex()
    assert headers["x-timestamp"] == TIMESTAMP
    assert set(headers) == {"x-signature", "x-timestamp"}


@pytest.mark.parametrize("algorithm", ["sha256", "sha512", "sha1"])
def test_hmac_each_algorithm_base64(algorithm):
    config = make_config(
        {
            "type": "hmac",
            "secretKey": "key-2",
            "algorithm": algorithm,
            "signatureEncoding": "base64",
            "payloadFormat": "{body}",
        }
    )
    server = make_server(credentialId="hook-0")

    headers = auth_headers(server, config, BODY, now=fixed_now)

    digest = expected_hmac("key-2", BODY, algorithm)
    assert headers["x-signature"] == base64.b64encode(digest).decode()


def test_hmac_all_placeholders_prefix_and_custom_headers():
    config = make_config(
        {
            "type": "hmac",
            "secretKey": "key-3",
            "algorithm": "sha256",
            "signatureHeader": "X-Hub-Signature-256",
            "timestampHeader": "X-Request-Time",
            "payloadFormat": "v1:{method}:{url}:{timestamp}:{body}",
            "signaturePrefix": "sha256=",
        }
    )
    server = make_server(credentialId="hook-0")

    headers = auth_headers(server, config, BODY, method="post", now=fixed_now)

    payload = f"v1:POST:{URL}:{TIMESTAMP}:".encode() + BODY
    signature = "sha256=" + expected_hmac("key-3", payload).hex()
    assert headers == {
        "X-Hub-Signature-256": signature,
        "X-Request-Time": TIMESTAMP,
    }


def test_hmac_explicit_url_is_signed():
    config = make_config(
        {
            "type": "hmac",
            "secretKey": "key-4",
            "algorithm": "sha256",
            "payloadFormat": "{url}",
        }
    )
    server = make_server(credentialId="hook-0")
    other_url = "http://127.0.0.1:8090/other?x=1"

    headers = auth_headers(server, config, BODY, url=other_url, now=fixed_now)

    assert headers["x-signature"] == expected_hmac("key-4", other_url.encode()).hex()


def test_hmac_without_timestamp_header():
    config = make_config(
        {
            "type": "hmac",
            "secretKey": "key-5",
            "algorithm": "sha256",
            "includeTimestamp": False,
            "payloadFormat": "{body}",
        }
    )
    server = make_server(credentialId="hook-0")

    headers = auth_headers(server, config, BODY, now=fixed_now)

    assert headers == {"x-signature": expected_hmac("key-5", BODY).hex()}


def test_hmac_placeholders_inside_body_stay_literal():
    config = make_config({"type": "hmac", "secretKey": "key-6", "algorithm": "sha256"})
    server = make_server(credentialId="hook-0")
    body = b'{"text":"{timestamp} {url} {body}"}'

    headers = auth_headers(server, config, body, now=fixed_now)

    payload = TIMESTAMP.encode() + b"." + body
    assert headers["x-signature"] == expected_hmac("key-6", payload).hex()


def test_hmac_non_ascii_body_bytes_signed_as_sent():
    config = make_config({"type": "hmac", "secretKey": "kéy", "algorithm": "sha256"})
    server = make_server(credentialId="hook-0")
    body = '{"name":"Zoë"}'.encode()

    headers = auth_headers(server, config, body, now=fixed_now)

    payload = TIMESTAMP.encode() + b"." + body
    assert headers["x-signature"] == expected_hmac("kéy", payload).hex()


def test_timestamp_changes_with_clock():
    config = make_config({"type": "hmac", "secretKey": "key-7", "algorithm": "sha256"})
    server = make_server(credentialId="hook-0")

    first = auth_headers(server, config, BODY, now=lambda: 100.0)
    second = auth_headers(server, config, BODY, now=lambda: 101.0)

    assert first["x-timestamp"] == "100"
    assert second["x-timestamp"] == "101"
    assert first["x-signature"] != second["x-signature"]


def test_unknown_credential_raises_lookup_error():
    server = make_server(credentialId="missing")

    with pytest.raises(LookupError, match="webhook credential 'missing' not found"):
        auth_headers(server, make_config(), BODY)
