from rest_framework import serializers

from accounts.models import APIToken, Invitation, Project


class ProjectSerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username", read_only=True)
    members = serializers.SlugRelatedField(many=True, read_only=True, slug_field="username")

    class Meta:
        model = Project
        fields = ["uuid", "name", "owner", "members", "created"]
        read_only_fields = ["uuid", "owner", "members", "created"]


class InviteSerializer(serializers.Serializer):
    """Whom to invite: one username or one e-mail address. Whether they exist is never said."""

    username = serializers.CharField(max_length=150, required=False, allow_blank=True)
    email = serializers.EmailField(required=False, allow_blank=True)

    def validate(self, data):
        if bool(data.get("username", "").strip()) == bool(data.get("email", "").strip()):
            raise serializers.ValidationError("Give either a username or an e-mail address.")
        return data


class InvitationSerializer(serializers.ModelSerializer):
    """An invitation as its project's owner sees it."""

    invitee = serializers.CharField(read_only=True)

    class Meta:
        model = Invitation
        fields = ["uuid", "invitee", "username", "email", "created", "expires"]
        read_only_fields = fields


class MyInvitationSerializer(serializers.ModelSerializer):
    """An invitation as the invitee sees it."""

    project = serializers.UUIDField(source="project.uuid", read_only=True)
    project_name = serializers.CharField(source="project.name", read_only=True)
    invited_by = serializers.CharField(source="invited_by.username", read_only=True, allow_null=True)

    class Meta:
        model = Invitation
        fields = ["uuid", "project", "project_name", "invited_by", "created", "expires"]
        read_only_fields = fields


class APITokenSerializer(serializers.ModelSerializer):
    class Meta:
        model = APIToken
        fields = ["uuid", "name", "key_prefix", "scope", "created", "last_used", "expires", "revoked"]
        read_only_fields = ["uuid", "key_prefix", "created", "last_used", "revoked"]


class NewAPITokenSerializer(APITokenSerializer):
    token = serializers.CharField(read_only=True, help_text="Shown once; store it now.")

    class Meta(APITokenSerializer.Meta):
        fields = APITokenSerializer.Meta.fields + ["token"]
