"""Which projects a user may see. Every customer queryset goes through here."""

from django.db.models import Q, QuerySet

from accounts.models import Project


def projects_of(user) -> QuerySet:
    if user is None or not user.is_authenticated:
        return Project.objects.none()
    return Project.objects.filter(Q(owner=user) | Q(membership__user=user)).distinct()


def scoped(queryset: QuerySet, user, field: str = "project") -> QuerySet:
    """Rows whose project is one of the user's projects."""
    return queryset.filter(**{f"{field}__in": projects_of(user).values("id")})


def default_project(user):
    """The project a resource lands in when the request names none: the user's own first."""
    if user is None or not user.is_authenticated:
        return None
    own = Project.objects.filter(owner=user).order_by("id").first()
    return own or projects_of(user).order_by("id").first()
