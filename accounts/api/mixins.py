"""The tenant boundary of the API: every customer viewset and serializer builds on these."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers, viewsets

from accounts.scoping import default_project, projects_of, scoped


@extend_schema_field(OpenApiTypes.UUID)
class ProjectField(serializers.SlugRelatedField):
    """A project by UUID, chosen only among the requester's projects (others do not exist for them)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("slug_field", "uuid")
        super().__init__(**kwargs)

    def get_queryset(self):
        return projects_of(self.context["request"].user)


class ProjectScopedSerializer(serializers.ModelSerializer):
    project = ProjectField(required=False)

    def validate(self, attrs):
        attrs = super().validate(attrs)
        if self.instance is None and "project" not in attrs:
            project = default_project(self.context["request"].user)
            if project is None:
                raise serializers.ValidationError({"project": "You have no project; create one first."})
            attrs["project"] = project
        if self.instance is not None and "project" in attrs and attrs["project"] != self.instance.project:
            raise serializers.ValidationError({"project": "A resource cannot move between projects."})
        return attrs


@extend_schema_field(OpenApiTypes.UUID)
class ScopedRelatedField(serializers.SlugRelatedField):
    """A related object by UUID, looked up only among what the requester may see.

    `visible_to(user)` returns that queryset; a stranger's object reads as "does not exist".
    """

    def __init__(self, visible_to, **kwargs):
        kwargs.setdefault("slug_field", "uuid")
        self.visible_to = visible_to
        super().__init__(**kwargs)

    def get_queryset(self):
        return self.visible_to(self.context["request"].user)


class ProjectScopedViewSet(viewsets.ModelViewSet):
    """Looks objects up by public UUID, only within the requester's projects: strangers get 404."""

    lookup_field = "uuid"
    lookup_value_regex = "[0-9a-fA-F-]{36}"
    model = None

    def get_queryset(self):
        return scoped(self.model.objects.all(), self.request.user)
