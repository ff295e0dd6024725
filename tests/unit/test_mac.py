"""topology.mac_of: a link end's MAC address follows from its interface name."""

from harness import names
from harness.topology import mac_of


def test_a_mac_is_locally_administered_unicast_and_the_same_each_time():
    mac = mac_of("slab-1-2c")
    octets = [int(o, 16) for o in mac.split(":")]
    assert len(octets) == 6 and octets[0] == 0x02        # locally administered, unicast
    assert mac_of("slab-1-2c") == mac


def test_the_names_of_many_labs_give_different_macs():
    ifnames = [names.ifname(index, role) for index in range(5000) for role in ("client", "server", "router")]
    assert len(set(ifnames)) == len(ifnames)
    assert len({mac_of(n) for n in ifnames}) == len(ifnames)
