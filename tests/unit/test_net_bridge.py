from dynod.linux.net import bridge_mac


def test_bridge_mac_is_fixed_per_name_and_locally_administered() -> None:
    mac = bridge_mac("dynod0")
    assert mac == bridge_mac("dynod0")
    assert mac != bridge_mac("dynod1")
    first = int(mac.split(":")[0], 16)
    assert first & 0x02 and not first & 0x01  # locally administered, unicast
    assert len(mac.split(":")) == 6
