from django.contrib.auth import get_user_model
from rest_framework import serializers

from accounts.models import APIToken, Project


class ProjectSerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username", read_only=True)
    members = serializers.SlugRelatedField(many=True, read_only=True, slug_field="username")

    class Meta:
        model = Project
        fields = ["uuid", "name", "owner", "members", "created"]
        read_only_fields = ["uuid", "owner", "members", "created"]


class MemberSerializer(serializers.Serializer):
    username = serializers.SlugRelatedField(slug_field="username", queryset=get_user_model().objects.filter(is_active=True))


class APITokenSerializer(serializers.ModelSerializer):
    class Meta:
        model = APIToken
        fields = ["uuid", "name", "key_prefix", "scope", "created", "last_used", "expires", "revoked"]
        read_only_fields = ["uuid", "key_prefix", "created", "last_used", "revoked"]


class NewAPITokenSerializer(APITokenSerializer):
    token = serializers.CharField(read_only=True, help_text="Shown once; store it now.")

    class Meta(APITokenSerializer.Meta):
        fields = APITokenSerializer.Meta.fields + ["token"]
