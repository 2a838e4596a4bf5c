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


def _staff_only(callback, method: str) -> bool:
    from rest_framework.permissions import IsAdminUser

    view_class = getattr(callback, "cls", None)
    if view_class is None:
        return False
    classes = list(getattr(callback, "initkwargs", {}).get("permission_classes", view_class.permission_classes))
    action = getattr(callback, "actions", {}).get(method.lower())
    handler = getattr(view_class, action, None) if action else None
    classes += list(getattr(handler, "kwargs", {}).get("permission_classes", []))
    return any(isinstance(cls, type) and issubclass(cls, IsAdminUser) for cls in classes)


def _refs(node, found: set) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith("#/components/schemas/"):
                found.add(value.rsplit("/", 1)[1])
            else:
                _refs(value, found)
    elif isinstance(node, list):
        for value in node:
            _refs(value, found)


def hide_staff_only_endpoints(result, generator, request, public):
    """A drf-spectacular postprocessing hook: operations only staff may call (IsAdminUser), and the
    schemas only they use, are listed to staff only. Everyone else sees the API they can use."""
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_staff:
        return result
    paths = result.get("paths", {})
    for path, _regex, method, callback in generator.endpoints or []:
        if _staff_only(callback, method) and path in paths:
            paths[path].pop(method.lower(), None)
            if not any(key in paths[path] for key in ("get", "post", "put", "patch", "delete", "head", "options")):
                del paths[path]
    schemas = result.get("components", {}).get("schemas", {})
    used: set = set()
    _refs(paths, used)
    pending = list(used)
    while pending:
        name = pending.pop()
        more: set = set()
        _refs(schemas.get(name, {}), more)
        for extra in more - used:
            used.add(extra)
            pending.append(extra)
    for name in list(schemas):
        if name not in used and name != "Error":
            del schemas[name]
    return result
