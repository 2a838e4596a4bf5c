from django.urls import path

from billing import views

app_name = "billing"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("address/", views.account_edit, name="address"),
    path("bills/<uuid:uuid>/", views.bill_detail, name="bill"),
    path("bills/<uuid:uuid>/pdf/", views.bill_pdf, name="bill_pdf"),
    path("bills/<uuid:uuid>/qr-bill.svg", views.bill_qr_svg, name="bill_qr"),
    path("bills/<uuid:uuid>/pay/", views.bill_pay, name="bill_pay"),
    path("bills/<uuid:uuid>/paid/", views.bill_paid, name="bill_paid"),
    path("cards/add/", views.card_add, name="card_add"),
    path("cards/added/", views.card_added, name="card_added"),
    path("cards/<uuid:uuid>/remove/", views.card_remove, name="card_remove"),
    path("coupon/", views.coupon_redeem, name="coupon"),
    path("stripe/webhook/", views.stripe_webhook, name="stripe_webhook"),
    path("staff/bank/", views.staff_bank, name="staff_bank"),
    path("staff/bank/entries/<uuid:uuid>/", views.staff_entry, name="staff_entry"),
    path("staff/accounts/<uuid:uuid>/", views.staff_account, name="staff_account"),
]
