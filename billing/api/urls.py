from django.urls import path
from rest_framework.routers import DefaultRouter

from billing.api import views

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("bills", views.BillViewSet, basename="bill")
router.register("orders", views.OrderViewSet, basename="order")
router.register("payments", views.PaymentViewSet, basename="payment")
router.register("products", views.ProductViewSet, basename="product")

urlpatterns = [
    path("billing/account/", views.BillingAccountView.as_view(), name="billing-account"),
    path("billing/spending/", views.SpendingView.as_view(), name="billing-spending"),
    path("prices/vm/", views.VMPriceView.as_view(), name="price-vm"),
] + router.urls
