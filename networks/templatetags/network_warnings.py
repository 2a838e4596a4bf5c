from django import template

from networks.checks import dns_warning

register = template.Library()


@register.simple_tag
def site_network_warnings() -> list[str]:
    """What staff must fix in the site's network settings (shown on the admin's index)."""
    return [warning for warning in (dns_warning(),) if warning]
