"""The OpenAPI document, generated from the same method schemas the protocol uses."""

from __future__ import annotations

from typing import Any

import msgspec

from dari import __version__
from dari.protocol.methods import METHODS


def build_openapi() -> dict[str, Any]:
    names = [n for n in METHODS if n != "session.open"]
    schemas, components = msgspec.json.schema_components([METHODS[n].params for n in names],
                                                         ref_template="#/components/schemas/{name}")
    error = {"type": "object", "properties": {"error": {"type": "object", "properties": {
        "code": {"type": "string"}, "message": {"type": "string"}, "details": {"type": "object"}},
        "required": ["code", "message"]}}}
    paths: dict[str, Any] = {}
    for name, schema in zip(names, schemas, strict=True):
        spec = METHODS[name]
        op: dict[str, Any] = {
            "operationId": name.replace(".", "_"),
            "summary": spec.summary,
            "tags": [name.split(".")[0]],
            "requestBody": {"required": False, "content": {"application/json": {"schema": schema}}},
            "responses": {
                "200": {"description": "the method's result",
                        "content": {"application/json": {"schema": {"type": "object",
                                                                    "properties": {"result": {}}}}}},
                "default": {"description": "a structured error",
                            "content": {"application/json": {"schema": error}}},
            },
        }
        if spec.auth:
            op["security"] = [{"bearer": []}]
        paths[f"/api/v1/{name}"] = {"post": op}
    return {
        "openapi": "3.1.0",
        "info": {"title": "dari", "version": __version__,
                 "description": "REST mapping of the dari protocol; see docs/protocol.md."},
        "paths": paths,
        "components": {"schemas": components,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
