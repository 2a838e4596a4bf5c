from django.utils import timezone
from rest_framework import authentication, exceptions, permissions

from accounts import ratelimit
from accounts.choices import TokenScope
from accounts.models import TOKEN_PREFIX, APIToken, hash_token
from accounts.otp import match_code

OTP_HEADER = "X-OTP"


class APITokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer uc_...` (or `Token uc_...`) against hashed, revocable per-user tokens.

    A read-only token answers 403 to anything but GET/HEAD/OPTIONS. A token alone never counts as a
    second factor: creating further tokens needs a current one-time code in the `X-OTP` header, and
    only that request reads it (elsewhere the header is ignored, so nobody holding a token can use
    wrong codes on plain requests to lock the owner's second factor).
    """

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
        if token.scope == TokenScope.READ and request.method not in permissions.SAFE_METHODS:
            raise exceptions.PermissionDenied("This token is read-only.")
        user = token.user
        user.is_verified = lambda: False
        # Bounded write amplification: note use at most once a minute per token.
        now = timezone.now()
        if token.last_used is None or (now - token.last_used).total_seconds() > 60:
            APIToken.objects.filter(pk=token.pk).update(last_used=now)
        return user, token

    def authenticate_header(self, request):
        return 'Bearer realm="api"'


def verify_otp_header(request) -> bool:
    """For the one API request that needs a second factor: check its X-OTP code.

    True (and the request counts as verified) for a right code, False without a header. A wrong code
    raises 401; wrong codes count per account and per network (accounts.ratelimit), never on the
    device, and too many answer 429.
    """
    code = request.headers.get(OTP_HEADER, "").strip()
    if not code:
        return False
    user = request.user
    limiter = ratelimit.LoginLimiter(f"api-otp:{user.pk}", ratelimit.client_address(request))
    try:
        if limiter.blocked():
            raise exceptions.Throttled(detail="Too many wrong one-time codes; try again later.")
        device = match_code(user, code)
        if device is None:
            limiter.failed()
            raise exceptions.AuthenticationFailed(f"Wrong or reused one-time code in {OTP_HEADER}.")
    except ratelimit.LimiterUnavailable:
        raise exceptions.APIException(ratelimit.LoginLimiter.unavailable_message())
    limiter.succeeded()
    user.otp_device = device
    user.is_verified = lambda: True
    return True


def request_is_otp_verified(request) -> bool:
    """True for a portal session that passed OTP, or an API request with a right X-OTP code."""
    is_verified = getattr(request.user, "is_verified", None)
    return bool(is_verified and is_verified())
