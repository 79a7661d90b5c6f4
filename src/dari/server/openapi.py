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
    paths.update(_public_boards(error))
    return {
        "openapi": "3.1.0",
        "info": {"title": "dari", "version": __version__,
                 "description": "REST mapping of the dari protocol; see docs/protocol.md."},
        "paths": paths,
        "components": {"schemas": components,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


def _public_boards(error: dict[str, Any]) -> dict[str, Any]:
    """The anonymous GET routes of server/public_http.py."""
    def get(op_id: str, summary: str, params: list[tuple[str, str, dict[str, Any]]]) -> dict[str, Any]:
        return {"get": {
            "operationId": op_id, "summary": summary, "tags": ["public"],
            "parameters": [{"name": n, "in": where, "required": where == "path", "schema": schema}
                           for n, where, schema in params],
            "responses": {"200": {"description": "the same result as the board method, without user ids"},
                          "default": {"description": "a structured error (404 for boards that are not public)",
                                      "content": {"application/json": {"schema": error}}}}}}

    integer = {"type": "integer", "minimum": 1}
    return {
        "/api/v1/public/boards": get("public_boards", "The public boards, for anyone.", []),
        "/api/v1/public/boards/{board_id}/posts": get(
            "public_board_posts", "A public board's posts, paged and searchable, for anyone.",
            [("board_id", "path", integer), ("page", "query", integer),
             ("per_page", "query", {"type": "integer", "minimum": 1, "maximum": 100}),
             ("q", "query", {"type": "string", "maxLength": 100}),
             ("in", "query", {"enum": ["title", "body", "title_body", "author"]})]),
        "/api/v1/public/posts/{post_id}": get(
            "public_board_post", "A public board's post with its comments, for anyone; counts a view.",
            [("post_id", "path", integer)]),
    }
