from django.utils import timezone
from rest_framework import authentication, exceptions

from accounts.models import TOKEN_PREFIX, APIToken, hash_token


class APITokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer uc_...` (or `Token uc_...`) against hashed, revocable per-user tokens."""

    keywords = ("bearer", "token")

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].decode(errors="replace").lower() not in self.keywords:
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Authorization header must be 'Bearer <token>'.")
        raw = header[1].decode(errors="replace")
        if not raw.startswith(TOKEN_PREFIX):
            raise exceptions.AuthenticationFailed("Invalid token.")
        token = APIToken.objects.select_related("user").filter(key_hash=hash_token(raw)).first()
        if token is None or not token.is_active or not token.user.is_active:
            raise exceptions.AuthenticationFailed("Invalid, expired or revoked token.")
        # Bounded write amplification: note use at most once a minute per token.
        now = timezone.now()
        if token.last_used is None or (now - token.last_used).total_seconds() > 60:
            APIToken.objects.filter(pk=token.pk).update(last_used=now)
        return token.user, token

    def authenticate_header(self, request):
        return 'Bearer realm="api"'
