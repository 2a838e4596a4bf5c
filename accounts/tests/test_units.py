import pytest

from accounts.units import UnitError, format_mib, parse_gib, parse_mib


@pytest.mark.parametrize(
    "text, mib",
    [("2GiB", 2048), ("512M", 512), ("512MiB", 512), ("20G", 20480), ("1.5G", 1536), ("1T", 1024 * 1024),
     ("2 GiB", 2048), ("2048", 2048), (2048, 2048), ("4096K", 4), ("2gb", 2048), ("1P", 1024**3)],
)
def test_good_sizes(text, mib):
    assert parse_mib(text) == mib


@pytest.mark.parametrize(
    "text", ["", "abc", "-1", "2X", "1.0000001G", "0.5M", "512iB", "G", "2 G B", None, True, 1.5, [], "1e3M", "２G"],
)
def test_bad_sizes_say_what_is_accepted(text):
    with pytest.raises(UnitError) as error:
        parse_mib(text)
    assert "MiB" in str(error.value)


def test_negative_integer_refused():
    with pytest.raises(UnitError):
        parse_mib(-5)


def test_gib_fields_parse_in_gib():
    assert parse_gib("20G") == 20
    assert parse_gib("20") == 20
    with pytest.raises(UnitError):
        parse_gib("512M")


def test_format_mib():
    assert format_mib(2048) == "2GiB"
    assert format_mib(1536) == "1536MiB"
    assert format_mib(1024 * 1024) == "1TiB"
