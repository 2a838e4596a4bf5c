from django.db.models import Prefetch
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.errors import Conflict
from accounts.scoping import default_project, projects_of, scoped
from billing import actions, ledger
from billing.api.serializers import (
    BillingAccountSerializer,
    BillSerializer,
    OrderSerializer,
    PaymentSerializer,
    ProductSerializer,
    SpendingSerializer,
    VMPriceQuerySerializer,
)
from billing.models import Bill, Order, Payment, Price, Product
from billing.pdf import render_pdf
from billing.pricing import monthly_vm_price
from billing.spending import spending


class SpendingView(APIView):
    """What you spend: this month so far and its forecast per resource, credit, open bills, history."""

    serializer_class = SpendingSerializer

    @extend_schema(responses=SpendingSerializer)
    def get(self, request):
        return Response(SpendingSerializer(spending(actions.account_of_user(request.user))).data)


class BillingAccountView(APIView):
    """Your own billing account (address, VAT number, balance)."""

    serializer_class = BillingAccountSerializer

    def _account(self, request):
        account = actions.account_of_user(request.user)
        account.balance = ledger.balance(account)
        return account

    @extend_schema(responses=BillingAccountSerializer)
    def get(self, request):
        return Response(BillingAccountSerializer(self._account(request)).data)

    @extend_schema(request=BillingAccountSerializer, responses=BillingAccountSerializer)
    def patch(self, request):
        account = self._account(request)
        serializer = BillingAccountSerializer(account, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        actions.do_update_billing_address(request.user, account, **serializer.validated_data)
        return Response(BillingAccountSerializer(self._account(request)).data)


class BillViewSet(viewsets.ReadOnlyModelViewSet):
    """Bills of your own billing account (the account holder's only)."""

    serializer_class = BillSerializer
    lookup_field = "uuid"
    filterset_fields = ["state", "period_start"]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # the OpenAPI schema has no user
            return Bill.objects.none()
        return Bill.objects.filter(account__owner=self.request.user).prefetch_related("lines__order")

    @extend_schema(responses={(200, "application/pdf"): bytes})
    @action(detail=True, methods=["get"])
    def pdf(self, request, uuid=None):
        bill = self.get_object()
        response = HttpResponse(render_pdf(bill), content_type="application/pdf")
        response["Content-Disposition"] = f'attachment; filename="bill-{bill.number}.pdf"'
        return response


class OrderViewSet(viewsets.ReadOnlyModelViewSet):
    """What the projects you are in are charged for."""

    serializer_class = OrderSerializer
    lookup_field = "uuid"
    filterset_fields = ["resource_uuid"]

    def get_queryset(self):
        return scoped(Order.objects.select_related("project", "product", "replaces"), self.request.user)


class PaymentViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = PaymentSerializer
    lookup_field = "uuid"

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Payment.objects.none()
        return Payment.objects.filter(account__owner=self.request.user).select_related("bill")


class ProductViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """The catalogue with today's prices."""

    serializer_class = ProductSerializer

    def get_queryset(self):
        current = Price.objects.filter(valid_from__lte=timezone.now()).order_by("-valid_from")
        return Product.objects.filter(active=True).prefetch_related(
            Prefetch("prices", queryset=current, to_attr="current_prices")
        )


class VMPriceView(APIView):
    """What a VM of this size costs per month in one of your projects, with the VAT of the project
    owner's billing address, the price per unit, and the monthly price of an IPv4 address."""

    @extend_schema(parameters=[VMPriceQuerySerializer], responses=OpenApiTypes.OBJECT)
    def get(self, request):
        # An empty project (a form field left blank) means "the default", as leaving it out does.
        query = VMPriceQuerySerializer(data={key: value for key, value in request.query_params.items()
                                             if not (key == "project" and value == "")})
        query.is_valid(raise_exception=True)
        data = query.validated_data
        if "project" in data:
            project = get_object_or_404(projects_of(request.user), uuid=data["project"])
        else:
            project = default_project(request.user)
            if project is None:
                raise NotFound("You have no project.")
        quote = monthly_vm_price(project, cores=data["cores"], memory_mib=data["memory_mib"],
                                 disk_mib=data["disk_mib"])
        if quote is None:
            raise Conflict("VMs have no price yet.")
        return Response({"project": str(project.uuid), **quote.as_json()})
