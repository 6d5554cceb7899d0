import pytest

from dynod.errors import UserError
from dynod.router.options import RouterOptions, parse_args, parse_listen


def test_defaults_are_herokus_numbers_and_flags_override_them():
    o = parse_args(["--control", "/tmp/c", "--http", ":8080", "--state-dir", "/tmp/s"])
    assert (o.connect_timeout, o.request_timeout, o.idle_timeout, o.boot_timeout) == (5, 30, 55, 75)
    o = parse_args(["--control", "/tmp/c", "--http", ":8080", "--state-dir", "/tmp/s", "--request-timeout",
                    "0.5", "--max-connections", "10"])
    assert o.request_timeout == 0.5 and o.max_connections == 10
    assert RouterOptions.from_json(o.to_json()) == o


@pytest.mark.parametrize("argv,words", [
    (["--control", "/c", "--state-dir", "/s"], "at least one --http"),
    (["--control", "/c", "--state-dir", "/s", "--http", "nohost"], "needs a port"),
    (["--control", "/c", "--state-dir", "/s", "--http", "example.test:80"], "IP and a port"),
    (["--control", "/c", "--state-dir", "/s", "--http", ":80", "--workers", "0"], "--workers"),
    (["--control", "/c", "--state-dir", "/s", "--http", ":80", "--request-timeout", "-1"], "positive"),
    (["--state-dir", "/s", "--http", ":80"], "--control"),
])
def test_bad_arguments_are_one_user_error(argv, words):
    with pytest.raises(UserError) as info:
        parse_args(argv)
    assert words in str(info.value)


def test_listen_addresses():
    assert parse_listen(":80") == ("0.0.0.0", 80)
    assert parse_listen("[::1]:8443") == ("::1", 8443)
