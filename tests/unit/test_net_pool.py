import pytest

from dynod.errors import UserError
from dynod.linux.net import AddressPool, veth_name


def test_pool_gives_the_first_host_to_the_bridge_and_the_rest_to_dynos() -> None:
    pool = AddressPool("198.18.0.0/29")
    assert pool.gateway == "198.18.0.1"
    got = [pool.allocate() for _ in range(5)]
    assert got == [f"198.18.0.{i}" for i in range(2, 7)]
    with pytest.raises(UserError, match="No free dyno address"):
        pool.allocate()


def test_released_addresses_come_back_last_and_claimed_ones_are_skipped() -> None:
    pool = AddressPool("198.18.0.0/29")
    pool.claim("198.18.0.2")
    first = pool.allocate()
    assert first == "198.18.0.3"
    pool.release(first)
    # Fresh addresses go first: a released one's veth may still be on its way out.
    assert [pool.allocate() for _ in range(3)] == ["198.18.0.4", "198.18.0.5", "198.18.0.6"]
    assert pool.allocate() == first


def test_veth_names_fit_ifnamsiz_and_differ_per_address() -> None:
    pool = AddressPool("198.18.0.0/20")
    names = {veth_name(pool.allocate()) for _ in range(1000)}
    assert len(names) == 1000
    assert all(len(n) <= 15 and n.startswith("dy") for n in names)
    assert veth_name("198.18.0.2") == "dyc6120002"
