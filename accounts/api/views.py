from django.core.exceptions import ValidationError as DjangoValidationError
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.response import Response

from accounts import actions
from accounts.api.serializers import (
    APITokenSerializer,
    InvitationSerializer,
    InviteSerializer,
    MyInvitationSerializer,
    NewAPITokenSerializer,
    ProjectSerializer,
)
from accounts.authentication import OTP_HEADER, request_is_otp_verified, verify_otp_header
from accounts.choices import TokenScope
from accounts.models import APIToken, Invitation
from accounts.notify import send_invitation_mail
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

    @extend_schema(request=InviteSerializer, responses={202: InvitationSerializer},
                   description="Invite a username or an e-mail address. The invitee joins by accepting it "
                               "(POST /invitations/<uuid>/accept/). The answer is the same whether the name "
                               "exists or not.")
    @action(detail=True, methods=["post"])
    def members(self, request, uuid=None):
        project = self.get_object()
        self._require_owner(project)
        serializer = InviteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            invitation, raw = actions.do_invite(request.user, project,
                                                username=serializer.validated_data.get("username", ""),
                                                email=serializer.validated_data.get("email", ""))
        except DjangoValidationError as error:
            raise ValidationError(error.messages)
        send_invitation_mail(request, invitation, raw)
        return Response(InvitationSerializer(invitation).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(responses=InvitationSerializer(many=True))
    @action(detail=True, methods=["get"])
    def invitations(self, request, uuid=None):
        project = self.get_object()
        self._require_owner(project)
        open_invitations = [i for i in project.invitations.filter(accepted__isnull=True) if i.is_open]
        return Response(InvitationSerializer(open_invitations, many=True).data)

    @extend_schema(request=None, responses={204: None})
    @action(detail=True, methods=["delete"], url_path="invitations/(?P<invitation_uuid>[0-9a-f-]+)")
    def cancel_invitation(self, request, uuid=None, invitation_uuid=None):
        project = self.get_object()
        self._require_owner(project)
        invitation = get_object_or_404(Invitation, project=project, uuid=invitation_uuid, accepted__isnull=True)
        actions.do_cancel_invitation(request.user, invitation)
        return Response(status=status.HTTP_204_NO_CONTENT)

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


class MyInvitationViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Invitations for you (your username, or your verified e-mail address): accept or decline them."""

    serializer_class = MyInvitationSerializer
    lookup_field = "uuid"
    queryset = Invitation.objects.none()  # for the schema; requests use get_queryset

    def get_queryset(self):
        return actions.invitations_for(self.request.user)

    @extend_schema(request=None, responses=ProjectSerializer)
    @action(detail=True, methods=["post"])
    def accept(self, request, uuid=None):
        try:
            project = actions.do_accept_invitation(request.user, self.get_object())
        except actions.InvitationNotFound:
            raise NotFound
        return Response(ProjectSerializer(projects_of(request.user).get(pk=project.pk)).data)

    @extend_schema(request=None, responses={204: None})
    @action(detail=True, methods=["post"])
    def decline(self, request, uuid=None):
        try:
            actions.do_decline_invitation(request.user, self.get_object())
        except actions.InvitationNotFound:
            raise NotFound
        return Response(status=status.HTTP_204_NO_CONTENT)
