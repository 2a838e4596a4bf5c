"""The site's default image: what a VM created without naming an image boots."""

from django.conf import settings

from images.choices import ImageStatus
from images.models import Image


def site_default_image() -> Image | None:
    """The public, available image named by UNCLOUD_DEFAULT_IMAGE, or None (unset, or no such image)."""
    name = settings.UNCLOUD_DEFAULT_IMAGE
    if not name:
        return None
    return Image.objects.filter(project__isnull=True, name=name, status=ImageStatus.AVAILABLE).first()


def no_default_image_reason() -> str:
    name = settings.UNCLOUD_DEFAULT_IMAGE
    if not name:
        return ("Name an image: this site has no default image (UNCLOUD_DEFAULT_IMAGE is not set), and a VM "
                "without one would get an empty disk that boots nothing.")
    return (f"Name an image: the site's default image {name!r} is not available, and a VM without an image "
            "would get an empty disk that boots nothing.")
