from django.db.models import Q

from accounts.scoping import projects_of
from networks.models import Network


def networks_visible_to(user):
    """The site's public networks plus the networks of the user's projects."""
    return Network.objects.filter(Q(is_public=True) | Q(project__in=projects_of(user).values("id")))
