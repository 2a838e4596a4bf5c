import copy

from rest_framework import serializers

from billing.countries import clean_country, clean_vat_number
from billing.models import Bill, BillingAccount, BillLine, Order, Payment, Product


class BillingAccountSerializer(serializers.ModelSerializer):
    balance = serializers.DecimalField(max_digits=14, decimal_places=2, read_only=True)
    vat_verified = serializers.SerializerMethodField(help_text="Reverse charge applies only to a verified EU VAT id")

    def get_vat_verified(self, account) -> bool:
        return account.vat_verified_at is not None

    class Meta:
        model = BillingAccount
        fields = ["uuid", "name", "street", "house_number", "postal_code", "city", "country", "vat_number",
                  "vat_verified", "email", "currency", "balance"]
        read_only_fields = ["uuid", "currency", "balance", "vat_verified"]

    def validate_country(self, value):
        try:
            return clean_country(value)
        except ValueError as error:
            raise serializers.ValidationError(str(error)) from None

    def validate(self, data):
        country = data.get("country", self.instance.country if self.instance else "CH")
        if "vat_number" in data or "country" in data:
            try:
                data["vat_number"] = clean_vat_number(
                    country, data.get("vat_number", self.instance.vat_number if self.instance else ""))
            except ValueError as error:
                raise serializers.ValidationError({"vat_number": str(error)}) from None
        return data


class BillLineSerializer(serializers.ModelSerializer):
    order = serializers.SlugRelatedField(slug_field="uuid", read_only=True)

    class Meta:
        model = BillLine
        fields = ["order", "description", "period_start", "period_end", "quantity", "unit_amount", "amount"]


class BillSerializer(serializers.ModelSerializer):
    lines = BillLineSerializer(many=True, read_only=True)
    open_amount = serializers.SerializerMethodField(help_text="What is still to pay after partial payments and "
                                                                "credit (0.00 when paid or cancelled)")

    def get_open_amount(self, bill) -> str:
        from billing import ledger

        return f"{ledger.open_amount(bill):.2f}"

    class Meta:
        model = Bill
        fields = ["uuid", "number", "reference", "period_start", "period_end", "issued_on", "due_on", "currency",
                  "state", "subtotal", "vat_treatment", "vat_rate_percent", "vat_amount", "total", "open_amount",
                  "vat_note", "paid_at", "card_problem", "lines"]


class OrderSerializer(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="uuid", read_only=True)
    product = serializers.SlugRelatedField(slug_field="code", read_only=True)
    replaces = serializers.SlugRelatedField(slug_field="uuid", read_only=True, allow_null=True)
    period = serializers.CharField(source="product.period", read_only=True)

    class Meta:
        model = Order
        fields = ["uuid", "project", "product", "period", "description", "resource_kind", "resource_uuid", "quantity",
                  "cores", "memory_mib", "disk_mib", "amount", "currency", "starts_at", "ends_at", "replaces"]


class PaymentSerializer(serializers.ModelSerializer):
    bill = serializers.SlugRelatedField(slug_field="uuid", read_only=True, allow_null=True)

    class Meta:
        model = Payment
        fields = ["uuid", "method", "amount", "currency", "received_at", "bill", "note"]


class ProductSerializer(serializers.ModelSerializer):
    price = serializers.SerializerMethodField()

    class Meta:
        model = Product
        fields = ["code", "name", "kind", "period", "unit", "price"]

    def get_price(self, product) -> dict | None:
        price = product.current_prices[0] if getattr(product, "current_prices", None) else None
        if price is None:
            return None
        return {"currency": price.currency, "valid_from": price.valid_from, "amount": str(price.amount),
                "per_core": str(price.per_core), "per_memory_gib": str(price.per_memory_gib),
                "per_disk_gib": str(price.per_disk_gib)}


def _vm_create_field(name: str):
    # The same limits as creating the VM: a price is quoted for exactly what could be ordered.
    from vms.api.serializers import VMCreateSerializer

    return copy.deepcopy(VMCreateSerializer._declared_fields[name])


class VMPriceQuerySerializer(serializers.Serializer):
    project = serializers.UUIDField(required=False, help_text="One of your projects (default: your first)")
    cores = _vm_create_field("cores")
    memory_mib = _vm_create_field("memory")
    disk_mib = _vm_create_field("disk")


class ResourceSpendingSerializer(serializers.Serializer):
    description = serializers.CharField()
    resource_kind = serializers.CharField()
    resource_uuid = serializers.CharField(allow_blank=True)
    project = serializers.CharField(allow_blank=True)
    so_far = serializers.DecimalField(max_digits=14, decimal_places=2)
    forecast = serializers.DecimalField(max_digits=14, decimal_places=2)


class OpenBillSerializer(serializers.Serializer):
    uuid = serializers.UUIDField()
    number = serializers.IntegerField()
    total = serializers.DecimalField(max_digits=14, decimal_places=2)
    open_amount = serializers.DecimalField(max_digits=14, decimal_places=2)
    due_on = serializers.DateField()
    state = serializers.CharField()


class BilledMonthSerializer(serializers.Serializer):
    month = serializers.DateField()
    number = serializers.IntegerField()
    subtotal = serializers.DecimalField(max_digits=14, decimal_places=2)
    total = serializers.DecimalField(max_digits=14, decimal_places=2)
    state = serializers.CharField()


class SpendingSerializer(serializers.Serializer):
    """This month so far and forecast per resource (before VAT), the estimated VAT, credit, open bills and
    the last twelve bills."""

    currency = serializers.CharField()
    month = serializers.DateField()
    so_far = serializers.DecimalField(max_digits=14, decimal_places=2)
    forecast = serializers.DecimalField(max_digits=14, decimal_places=2)
    carried = serializers.DecimalField(max_digits=14, decimal_places=2,
                                       help_text="Earlier months below the minimum bill, billed with this month")
    forecast_vat = serializers.DecimalField(max_digits=14, decimal_places=2, allow_null=True)
    forecast_total = serializers.DecimalField(max_digits=14, decimal_places=2, allow_null=True)
    credit = serializers.DecimalField(max_digits=14, decimal_places=2)
    open_bills = OpenBillSerializer(many=True)
    resources = ResourceSpendingSerializer(many=True)
    history = BilledMonthSerializer(many=True)
