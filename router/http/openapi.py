"""The OpenAPI 3.1 document of the HTTP endpoints, served at `/openapi.json`.

The phone number and credential schemas are generated from the config
models, so they always match what the config file accepts. Secret fields
are marked `writeOnly`, because they may appear in a config file but never
in a response.
"""

from functools import cache
from importlib import metadata
from typing import Any

from pydantic.json_schema import models_json_schema

from router.calls.record import CallState
from router.config import PhoneNumber, SipTrunkCredential, WebhookCredential

_REF = "#/components/schemas/{model}"
_ADMIN = [{"adminToken": []}]
_JSON = "application/json"


@cache
def openapi_document() -> dict[str, Any]:
    """Build the OpenAPI document, once, because it depends on the code only."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "cozmox-router HTTP API",
            "version": _version(),
            "description": "Health, readiness, metrics and the admin API of "
            "one router. Admin paths need `Authorization: Bearer "
            "<router.http.adminToken>`; without a configured token they "
            "answer 403.",
        },
        "components": {
            "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}},
            "schemas": _schemas(),
        },
        "paths": _paths(),
    }


def _version() -> str:
    try:
        return metadata.version("cozmox-router")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def _schemas() -> dict[str, Any]:
    _, generated = models_json_schema(
        [
            (PhoneNumber, "serialization"),
            (SipTrunkCredential, "serialization"),
            (WebhookCredential, "serialization"),
        ],
        by_alias=True,
        ref_template=_REF,
    )
    schemas = dict(generated["$defs"])
    schemas["Credential"] = {
        "oneOf": [_ref("SipTrunkCredential"), _ref("WebhookCredential")],
        "discriminator": {"propertyName": "provider"},
    }
    schemas.update(_hand_written_schemas())
    return schemas


def _hand_written_schemas() -> dict[str, Any]:
    text_or_null = {"type": ["string", "null"]}
    return {
        "Error": _object({"error": {"type": "string"}}, required=["error"]),
        "CallRecord": _object(
            {
                "id": {"type": "string"},
                "status": {"enum": [state.value for state in CallState]},
                "createdAt": {"type": "string", "format": "date-time"},
                "phoneCallProviderId": {"type": "string"},
                "phoneNumberId": text_or_null,
                "credentialId": text_or_null,
                "customer": _object(
                    {
                        "number": text_or_null,
                        "name": text_or_null,
                        "sipUri": text_or_null,
                    }
                ),
                "sipHeaders": {
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                },
                "route": {
                    "oneOf": [
                        _object(
                            {
                                "kind": {"enum": ["assistant", "squad", "workflow"]},
                                "id": text_or_null,
                                "inline": {"type": ["object", "null"]},
                                "overrides": {"type": ["object", "null"]},
                            }
                        ),
                        {"type": "null"},
                    ]
                },
                "destination": {"type": ["object", "null"]},
                "endedReason": text_or_null,
            },
            required=["id", "status", "createdAt"],
        ),
        "Readiness": _object(
            {
                "ready": {"type": "boolean"},
                "draining": {"type": "boolean"},
                "sip": {"type": "object"},
                "registrations": {
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                },
            },
            required=["ready"],
        ),
        "ReloadResult": _object(
            {
                "result": {"enum": ["applied", "rejected"]},
                "errors": {"type": "array", "items": {"type": "string"}},
                "restartRequired": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "Settings that changed in the file but keep "
                    "their running value until a restart.",
                },
            },
            required=["result", "errors", "restartRequired"],
        ),
    }


def _paths() -> dict[str, Any]:
    return {
        "/healthz": {"get": _public("Liveness: 200 while the process runs", None)},
        "/readyz": {
            "get": _public(
                "Readiness: 200 once the config is loaded and SIP is bound, "
                "503 before that and while draining",
                "Readiness",
                extra={"503": _json_response("Not ready", "Readiness")},
            )
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics in the text exposition format",
                "responses": {
                    "200": {
                        "description": "Metrics",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {"get": _public("This document", None)},
        "/calls": {
            "get": _admin(
                "Calls in progress",
                _object({"calls": {"type": "array", "items": _ref("CallRecord")}}),
            )
        },
        "/calls/{id}": _item("A call in progress or recently ended", "CallRecord"),
        "/phone-number": {
            "get": _admin("Phone numbers in force", _array("PhoneNumber"))
        },
        "/phone-number/{id}": _item("One phone number", "PhoneNumber"),
        "/credential": {
            "get": _admin("Credentials in force, without secrets", _array("Credential"))
        },
        "/credential/{id}": _item("One credential, without secrets", "Credential"),
        "/admin/reload": {
            "post": _admin(
                "Read the config file again; calls in progress keep the old one",
                _ref("ReloadResult"),
                extra={
                    "422": _json_response(
                        "The file is invalid; the old config stays", "ReloadResult"
                    )
                },
            )
        },
    }


def _public(
    summary: str, schema: str | None, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    body = _ref(schema) if schema else {"type": "object"}
    return {
        "summary": summary,
        "responses": {"200": _json_schema_response("OK", body), **(extra or {})},
    }


def _admin(
    summary: str, schema: dict[str, Any], extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "summary": summary,
        "security": _ADMIN,
        "responses": {
            "200": _json_schema_response("OK", schema),
            "401": _json_response("Missing or invalid bearer token", "Error"),
            "403": _json_response("router.http.adminToken is not set", "Error"),
            **(extra or {}),
        },
    }


def _item(summary: str, schema: str) -> dict[str, Any]:
    operation = _admin(
        summary,
        _ref(schema),
        extra={"404": _json_response("No such id", "Error")},
    )
    parameter = {
        "name": "id",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
    }
    return {"parameters": [parameter], "get": operation}


def _json_response(description: str, schema: str) -> dict[str, Any]:
    return _json_schema_response(description, _ref(schema))


def _json_schema_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": schema}}}


def _object(
    properties: dict[str, Any], required: list[str] | None = None
) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


def _array(schema: str) -> dict[str, Any]:
    return {"type": "array", "items": _ref(schema)}


def _ref(schema: str) -> dict[str, Any]:
    return {"$ref": _REF.format(model=schema)}
