from django.db.models import Q

from accounts.scoping import projects_of
from images.models import Image


def images_visible_to(user):
    """Public images plus the images of the user's projects."""
    return Image.objects.filter(Q(project__isnull=True) | Q(project__in=projects_of(user).values("id")))
