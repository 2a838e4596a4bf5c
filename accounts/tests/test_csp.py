"""Issue 23.8: a Content-Security-Policy on every page; the schema shows staff's API to staff only."""

from rest_framework.test import APIClient


def test_every_page_has_a_policy_without_third_parties(client, alice):
    for path in ("/login/", "/signup/", "/api/docs/", "/favicon.ico"):
        policy = client.get(path)["Content-Security-Policy"]
        assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy, path
        assert "script-src 'self' 'nonce-" in policy and "unsafe-inline" not in policy.split("style-src")[0], path
        assert "stripe" not in policy and "cdn" not in policy, path
    client.force_login(alice)
    first = client.get("/account/")["Content-Security-Policy"]
    assert first != client.get("/account/")["Content-Security-Policy"]  # a fresh nonce per response


def test_inline_scripts_carry_the_nonce(client, alice):
    client.force_login(alice)
    response = client.get("/vms/")
    nonce = response["Content-Security-Policy"].split("'nonce-")[1].split("'")[0]
    assert f'<script nonce="{nonce}">'.encode() in response.content


def test_stripe_js_is_allowed_on_the_card_page_only(client, alice, settings):
    from accounts.csp import build_policy, uses_stripe_js

    settings.STRIPE_JS_URL = "https://js.stripe.com/v3/"

    @uses_stripe_js
    def card_page(request):
        from django.http import HttpResponse

        return HttpResponse("card")

    from django.test import RequestFactory

    response = card_page(RequestFactory().get("/billing/cards/add/"))
    policy = build_policy("n", response.csp_extra)
    assert "script-src 'self' 'nonce-n' https://js.stripe.com" in policy
    assert "frame-src https://js.stripe.com https://hooks.stripe.com" in policy
    client.force_login(alice)
    assert "stripe" not in client.get("/billing/")["Content-Security-Policy"]


def test_anonymous_and_customers_do_not_see_staff_endpoints_in_the_schema(alice, client_for, staff):
    anonymous = APIClient().get("/api/schema/?format=json").json()
    customer = client_for(alice).get("/api/schema/?format=json").json()
    for schema in (anonymous, customer):
        assert not [path for path in schema["paths"] if path.startswith("/api/v1/hosts/")]
        assert "Host" not in schema["components"]["schemas"]
        assert "/api/v1/vms/" in schema["paths"]
    staff_schema = client_for(staff).get("/api/schema/?format=json").json()
    assert "/api/v1/hosts/" in staff_schema["paths"] and "Host" in staff_schema["components"]["schemas"]
