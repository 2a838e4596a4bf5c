from drf_spectacular.extensions import OpenApiAuthenticationExtension


class APITokenScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.APITokenAuthentication"
    name = "apiToken"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "An API token: `Authorization: Bearer uc_...`"}


# What the API answers when it refuses, by status code (see accounts/api/exceptions.py).
ERROR_RESPONSES = {
    "400": "The request is invalid: each field names what is wrong with it ({\"field\": [\"reason\"]}), or `detail`.",
    "401": "No token, or an invalid, expired or revoked one, or a wrong X-OTP code.",
    "403": "Not allowed: a read-only token, not the project's owner, staff only, or over a quota (`detail` says).",
    "404": "No such object among those you may see (another tenant's objects do not exist for you).",
    "409": "Collides with the current state: a duplicate name, still in use, busy with another operation.",
    "413": "The request body is larger than the limit (`detail` and `limit_bytes` say it).",
    "429": "Too many wrong one-time codes in X-OTP; try again later.",
}
UNSAFE_METHODS = {"post", "put", "patch", "delete"}


def document_error_responses(result, generator, request, public):
    """A drf-spectacular postprocessing hook: add the error answers each operation can really give.

    400 where a body or query parameters are read, 404 where the path names an object, 409 on
    changes, 413 where a body is sent; 401, 403 and 429 (authentication) everywhere. A view's own
    declaration of a code (VM create's 422) is kept as it is.
    """
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"] = {
        "type": "object",
        "description": "`detail` says what went wrong; a 400 names the fields instead (`{\"name\": [\"...\"]}`).",
        "properties": {"detail": {"type": "string"}},
        "additionalProperties": True,
    }
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if method not in UNSAFE_METHODS | {"get", "head"}:
                continue
            codes = {"401", "403", "429"}
            has_body = "requestBody" in operation or method in {"post", "put", "patch"}
            has_query = any(parameter.get("in") == "query" for parameter in operation.get("parameters", []))
            if has_body or has_query:
                codes.add("400")
            if has_body:
                codes.add("413")
            if "{" in path:
                codes.add("404")
            if method in UNSAFE_METHODS:
                codes.add("409")
            responses = operation.setdefault("responses", {})
            for code in sorted(codes):
                responses.setdefault(code, {
                    "description": ERROR_RESPONSES[code],
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                })
    return result
