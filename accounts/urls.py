from django.contrib.auth import views as auth_views
from django.urls import path

from accounts import views

urlpatterns = [
    path("login/", views.login_view, name="login"),
    path("login/otp/", views.login_otp_view, name="login-otp"),
    path("signup/", views.signup_view, name="signup"),
    path("signup/verify/<str:uidb64>/<str:token>/", views.signup_verify_view, name="signup-verify"),
    path("password-reset/", views.PasswordResetView.as_view(), name="password-reset"),
    path("password-reset/sent/", auth_views.PasswordResetDoneView.as_view(
        template_name="registration/password_reset_done.html"), name="password-reset-done"),
    path("password-reset/<str:uidb64>/<str:token>/", views.PasswordResetConfirmView.as_view(),
         name="password_reset_confirm"),
    path("password-reset/done/", auth_views.PasswordResetCompleteView.as_view(
        template_name="registration/password_reset_complete.html"), name="password-reset-complete"),
    path("account/", views.account_view, name="account"),
    path("account/otp/", views.otp_view, name="otp"),
    path("account/otp/backup-codes/", views.otp_backup_codes_view, name="otp-backup-codes"),
    path("account/otp/remove/", views.otp_remove_view, name="otp-remove"),
    path("account/tokens/", views.tokens_view, name="tokens"),
    path("account/tokens/<uuid:uuid>/revoke/", views.token_revoke_view, name="token-revoke"),
    path("projects/", views.projects_view, name="projects"),
    path("projects/<uuid:uuid>/", views.project_view, name="project"),
    path("projects/<uuid:uuid>/members/<str:username>/remove/", views.project_remove_member_view,
         name="project-remove-member"),
    path("projects/<uuid:uuid>/invitations/<uuid:invitation_uuid>/cancel/", views.invitation_cancel_view,
         name="invitation-cancel"),
    path("projects/<uuid:uuid>/audit/", views.project_audit_view, name="project-audit"),
    path("invitations/<uuid:invitation_uuid>/<str:answer>/", views.invitation_answer_view,
         name="invitation-answer"),
    path("invitations/<str:key>/", views.invitation_view, name="invitation"),
]
