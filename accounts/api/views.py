from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response

from accounts import actions
from accounts.api.serializers import APITokenSerializer, MemberSerializer, NewAPITokenSerializer, ProjectSerializer
from accounts.authentication import OTP_HEADER, request_is_otp_verified, verify_otp_header
from accounts.choices import TokenScope
from accounts.models import APIToken
from accounts.scoping import projects_of


class ProjectViewSet(viewsets.ModelViewSet):
    serializer_class = ProjectSerializer
    lookup_field = "uuid"
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self):
        return projects_of(self.request.user).select_related("owner").prefetch_related("members")

    def _require_owner(self, project):
        if project.owner_id != self.request.user.id:
            raise PermissionDenied("Only the project's owner may do this.")

    def perform_create(self, serializer):
        serializer.instance = actions.do_create_project(self.request.user, serializer.validated_data["name"])

    def perform_update(self, serializer):
        self._require_owner(serializer.instance)
        # PATCH sends only what changes: an empty body changes nothing (and is no error).
        if "name" in serializer.validated_data:
            actions.do_rename_project(self.request.user, serializer.instance, serializer.validated_data["name"])

    def perform_destroy(self, instance):
        self._require_owner(instance)
        actions.do_delete_project(self.request.user, instance)

    @extend_schema(request=MemberSerializer, responses=ProjectSerializer)
    @action(detail=True, methods=["post"])
    def members(self, request, uuid=None):
        project = self.get_object()
        self._require_owner(project)
        serializer = MemberSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        actions.do_add_member(request.user, project, serializer.validated_data["username"])
        project = self.get_queryset().get(pk=project.pk)
        return Response(ProjectSerializer(project).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={204: None})
    @action(detail=True, methods=["delete"], url_path="members/(?P<username>[^/]+)")
    def remove_member(self, request, uuid=None, username=None):
        project = self.get_object()
        member = get_object_or_404(project.members.all(), username=username)
        # Members may leave on their own; only the owner removes others.
        if member != request.user:
            self._require_owner(project)
        actions.do_remove_member(request.user, project, member)
        return Response(status=status.HTTP_204_NO_CONTENT)


class APITokenViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
                      mixins.DestroyModelMixin, viewsets.GenericViewSet):
    """Your own API tokens. DELETE revokes (the row stays for the audit trail)."""

    serializer_class = APITokenSerializer
    lookup_field = "uuid"
    queryset = APIToken.objects.none()  # for the schema; requests use get_queryset

    def get_queryset(self):
        return APIToken.objects.filter(user=self.request.user)

    @extend_schema(
        responses=NewAPITokenSerializer,
        parameters=[OpenApiParameter(OTP_HEADER, str, OpenApiParameter.HEADER, required=False,
                                     description="A current one-time code: required to create tokens with a token.")],
    )
    def create(self, request, *args, **kwargs):
        # A stolen token must not be able to mint more: creating one needs the second factor.
        verify_otp_header(request)
        if not request_is_otp_verified(request):
            raise PermissionDenied(
                f"Creating a token needs your second factor: send a current code in the {OTP_HEADER} header "
                "(set up two-factor authentication in the portal first)."
            )
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        token, raw = actions.do_create_token(
            request.user, serializer.validated_data["name"], expires=serializer.validated_data.get("expires"),
            scope=serializer.validated_data.get("scope", TokenScope.READ_WRITE),
        )
        data = NewAPITokenSerializer(token).data
        data["token"] = raw
        return Response(data, status=status.HTTP_201_CREATED)

    def perform_destroy(self, instance):
        actions.do_revoke_token(self.request.user, instance)
