"""Countries of billing addresses: the officially assigned ISO 3166-1 alpha-2 codes, and VAT ids checked
by their country's format and check digits (python-stdnum)."""

from stdnum.ch import vat as swiss_vat
from stdnum.eu import vat as eu_vat
from stdnum.exceptions import ValidationError as StdnumError

from billing.choices import EU_COUNTRIES, SWISS_VAT_AREA

# ISO 3166-1 alpha-2, officially assigned codes (249). "UK" and "EL" are not among them (GB, GR).
ISO_3166_CODES = frozenset("""
AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ
CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO
FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE
JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO
MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW
PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM
TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW
""".split())
assert len(ISO_3166_CODES) == 249

# The VAT id prefix of a country where it is not the ISO code.
VAT_PREFIX = {"GR": "EL"}


def clean_country(value: str) -> str:
    """The ISO code, upper case; ValueError with a message a customer understands otherwise."""
    code = (value or "").strip().upper()
    if code not in ISO_3166_CODES:
        hint = " (the United Kingdom is GB)" if code == "UK" else " (Greece is GR)" if code == "EL" else ""
        raise ValueError(f"{value!r} is not an ISO 3166 country code{hint}; use two letters such as CH, DE, US.")
    return code


def clean_vat_number(country: str, value: str) -> str:
    """A VAT id in its compact form, checked by format and check digits for the customer's country;
    ValueError otherwise. Empty stays empty. Other countries' tax ids are kept as written."""
    text = (value or "").strip()
    if not text:
        return ""
    if country in SWISS_VAT_AREA:
        try:
            return swiss_vat.format(swiss_vat.validate(text))
        except StdnumError:
            raise ValueError(f"{text!r} is not a valid Swiss VAT number (CHE-123.456.789 MWST).") from None
    if country in EU_COUNTRIES:
        try:
            number = eu_vat.validate(text)
        except StdnumError:
            raise ValueError(f"{text!r} is not a valid EU VAT number (country code and number, e.g. "
                             "DE136695976).") from None
        prefix = VAT_PREFIX.get(country, country)
        if not number.startswith(prefix):
            raise ValueError(f"The VAT number {number} is not one of {country} (it should begin with {prefix}).")
        return number
    return text[:30]
