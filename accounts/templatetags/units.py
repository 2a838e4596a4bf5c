from django import template

from accounts.units import human_mib

register = template.Library()


@register.filter(name="mib")
def mib_filter(value):
    """{{ vm.memory_mib|mib }} -> "2 GiB" (accounts.units.human_mib)."""
    return human_mib(value)
