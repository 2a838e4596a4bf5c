"""django-auth-ldap settings built from environment variables (listed in .env.example).

Kept out of settings.py so tests can build the same configuration from a dict that points at
their own slapd. Nothing here imports Django models: settings.py imports this module.
"""

from collections.abc import Mapping

GROUP_TYPES = ("groupOfNames", "groupOfUniqueNames", "posixGroup")


def _flag(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def ldap_settings(env: Mapping[str, str]) -> dict:
    """The AUTH_LDAP_* settings for `env`, or {} when LDAP_SERVER_URI is not set (LDAP off)."""
    uri = env.get("LDAP_SERVER_URI", "").strip()
    if not uri:
        return {}
    import ldap
    from django_auth_ldap.config import GroupOfNamesType, GroupOfUniqueNamesType, LDAPSearch, PosixGroupType

    config = {
        "AUTH_LDAP_SERVER_URI": uri,
        "AUTH_LDAP_BIND_DN": env.get("LDAP_BIND_DN", ""),
        "AUTH_LDAP_BIND_PASSWORD": env.get("LDAP_BIND_PASSWORD", ""),
        "AUTH_LDAP_START_TLS": _flag(env.get("LDAP_START_TLS", "false")),
        "AUTH_LDAP_USER_ATTR_MAP": {"first_name": "givenName", "last_name": "sn", "email": "mail"},
        # A directory that hangs must not hang the login page with it.
        "AUTH_LDAP_CONNECTION_OPTIONS": {
            ldap.OPT_NETWORK_TIMEOUT: int(env.get("LDAP_TIMEOUT_SECONDS", "5")),
            ldap.OPT_TIMEOUT: int(env.get("LDAP_TIMEOUT_SECONDS", "5")),
        },
        # Staff status follows the directory on every login, in both directions.
        "AUTH_LDAP_ALWAYS_UPDATE_USER": True,
    }
    dn_template = env.get("LDAP_USER_DN_TEMPLATE", "").strip()
    if dn_template:
        config["AUTH_LDAP_USER_DN_TEMPLATE"] = dn_template
    else:
        base = env.get("LDAP_USER_SEARCH_BASE", "").strip()
        if not base:
            raise ValueError("LDAP_SERVER_URI is set: set LDAP_USER_DN_TEMPLATE or LDAP_USER_SEARCH_BASE too")
        config["AUTH_LDAP_USER_SEARCH"] = LDAPSearch(
            base, ldap.SCOPE_SUBTREE, env.get("LDAP_USER_FILTER", "(uid=%(user)s)")
        )

    group_base = env.get("LDAP_GROUP_SEARCH_BASE", "").strip()
    if group_base:
        group_type = env.get("LDAP_GROUP_TYPE", "groupOfNames").strip()
        if group_type not in GROUP_TYPES:
            raise ValueError(f"LDAP_GROUP_TYPE={group_type!r}: use one of {', '.join(GROUP_TYPES)}")
        config["AUTH_LDAP_GROUP_SEARCH"] = LDAPSearch(
            group_base, ldap.SCOPE_SUBTREE, f"(objectClass={group_type})"
        )
        config["AUTH_LDAP_GROUP_TYPE"] = {
            "groupOfNames": GroupOfNamesType, "groupOfUniqueNames": GroupOfUniqueNamesType,
            "posixGroup": PosixGroupType,
        }[group_type]()
        staff_group = env.get("LDAP_STAFF_GROUP", "").strip()
        if staff_group:
            # Staff in uncloud are superusers of the admin; the directory decides who they are.
            config["AUTH_LDAP_USER_FLAGS_BY_GROUP"] = {"is_staff": staff_group, "is_superuser": staff_group}
        required = env.get("LDAP_REQUIRE_GROUP", "").strip()
        if required:
            config["AUTH_LDAP_REQUIRE_GROUP"] = required
    return config
