"""harness.topology on the real kernel: names, addresses, IPv6 at once, MTU, sysctls, removal."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import threading
import time

import pytest

from harness import names, nsutil, topology
from harness.errors import SetupError
from harness.lab import Lab
from harness.command import Command
from harness.topology import Topology
from harness.wait import wait_until

V4_RANGE = ipaddress.ip_network("198.18.0.0/15")
V6_RANGE = ipaddress.ip_network("2001:db8::/32")
IFNAMSIZ = 15   # usable characters of an interface name (16 bytes with the NUL)


def ip_json(host, *args):
    """`ip -j ...` inside the host's namespace, parsed."""
    return json.loads(host.run(["ip", "-j", *args]).stdout)


def link(host):
    return ip_json(host, "link", "show", "dev", host.ifname)[0]


def test_names_carry_prefix_and_owner_pid():
    """Namespaces are slab-<pid>-...; interfaces sl<pid hex>... fit IFNAMSIZ and exist only inside."""
    pid = os.getpid()
    with Topology() as topo:
        for host in topo.hosts.values():
            assert host.netns.startswith(f"slab-{pid}-"), host.netns
            assert host.netns.endswith(f"-{host.role}"), host.netns
            assert names.owner_pid(host.netns) == pid
            assert os.path.exists(nsutil.netns_path(host.netns))
            assert host.ifname.startswith(f"sl{pid:x}"), host.ifname
            assert len(host.ifname) <= IFNAMSIZ, host.ifname
            assert link(host)["ifname"] == host.ifname
            # The veth is born inside the namespaces: the host's own namespace never has it.
            assert not os.path.exists(f"/sys/class/net/{host.ifname}")
        assert topo.client.ifname != topo.server.ifname


class PidInThisThread:
    """Stands in for the `os` module of a harness module: getpid() answers `pid` in the test's thread
    only, so background threads of this process (tracefs pool) keep naming with the real pid."""

    def __init__(self, pid):
        self.pid, self.thread = pid, threading.get_ident()

    def getpid(self):
        return self.pid if threading.get_ident() == self.thread else os.getpid()

    def __getattr__(self, name):
        return getattr(os, name)


def pretend_pid(monkeypatch, module, pid):
    monkeypatch.setattr(module, "os", PidInThisThread(pid))


def test_interface_names_fit_for_the_largest_pid_and_index(monkeypatch):
    """Even pid_max (2**22) and a huge test index give a name of at most 15 characters."""
    pretend_pid(monkeypatch, names, 4194304)
    for index in (1, 35, 36**4 - 1, 36**4, 10**9):
        for role in ("client", "server"):
            name = names.ifname(index, role)
            assert len(name) <= IFNAMSIZ, name
            assert name.startswith("sl400000"), name


def test_two_topologies_in_one_process_share_no_name_and_no_address():
    """Two Topology objects alive at once: disjoint namespaces, interfaces, addresses and IPv4 subnets."""
    with Topology() as a, Topology() as b:
        ha, hb = list(a.hosts.values()), list(b.hosts.values())
        assert not {h.netns for h in ha} & {h.netns for h in hb}
        assert not {h.ifname for h in ha} & {h.ifname for h in hb}
        assert not {h.ipv4 for h in ha} & {h.ipv4 for h in hb}
        assert not {h.ipv6 for h in ha} & {h.ipv6 for h in hb}
        net_a = {ipaddress.ip_interface(f"{h.ipv4}/30").network for h in ha}
        net_b = {ipaddress.ip_interface(f"{h.ipv4}/30").network for h in hb}
        assert len(net_a) == len(net_b) == 1 and net_a != net_b
        # IPv6: the test index sits in the interface identifier, so both pairs share the process's
        # /64; harmless, each pair lives in namespaces of its own. The addresses differ (above).


def test_addresses_of_one_process_never_repeat():
    """The first 1000 test indices of a process get 1000 different IPv4 /30 blocks and IPv6 addresses."""
    v4 = {topology.addresses(i)[0][0] for i in range(1, 1001)}
    v6 = {topology.addresses(i)[1][0] for i in range(1, 1001)}
    assert len(v4) == len(v6) == 1000


def test_addresses_of_concurrent_processes_never_repeat(monkeypatch):
    """The module's promise: 'different for every test of every process', so for neighbouring pids too:
    blocks are claimed, and two live processes never hold the same one."""
    monkeypatch.setattr(topology.names, "pid_alive", lambda pid: pid in (30000, 30001) or pid == os.getpid())
    claimed = {}
    try:
        for pid in (30000, 30001):
            pretend_pid(monkeypatch, topology, pid)
            claimed[pid] = [topology.claim_block(i) for i in range(1, 201)]
        shared = set(claimed[30000]) & set(claimed[30001])
        assert not shared, f"pids 30000 and 30001 hold the same blocks: {sorted(shared)[:5]}"
        assert len(set(claimed[30000])) == 200
    finally:
        for pid, blocks in claimed.items():
            pretend_pid(monkeypatch, topology, pid)
            for b in blocks:
                topology.release_block(b)
    for blocks in claimed.values():
        assert not any(os.path.exists(os.path.join(topology.BLOCKS_DIR, str(b))) for b in blocks)


def test_a_live_claim_is_the_lock_not_the_file_content():
    """A held block stays held when its file is emptied (what another process used to read as a dead
    owner); the lock goes with the claim (tests/unit/test_claims.py: killed owners, a stress test)."""
    block = topology.claim_block(7)
    path = os.path.join(topology.BLOCKS_DIR, str(block))
    try:
        open(path, "w").close()
        assert path not in topology.stale_blocks()
        assert topology.remove_stale_block(path) is False and os.path.exists(path)
    finally:
        topology.release_block(block)
    assert not os.path.exists(path)


def test_addresses_are_in_the_test_ranges_and_on_the_link():
    """198.18.0.0/15 and 2001:db8::/32 only, and the kernel has exactly those on each veth end."""
    with Topology() as topo:
        for host in topo.hosts.values():
            assert ipaddress.ip_address(host.ipv4) in V4_RANGE, host.ipv4
            assert ipaddress.ip_address(host.ipv6) in V6_RANGE, host.ipv6
            addrs = ip_json(host, "addr", "show", "dev", host.ifname)[0]["addr_info"]
            global_ = {(a["local"], a["prefixlen"]) for a in addrs if a.get("scope") == "global"}
            assert global_ == {(host.ipv4, 30), (host.ipv6, 64)}


def test_addresses_stay_in_range_for_any_pid_and_index(monkeypatch):
    """Range arithmetic at the edges: pid 1 and pid_max, index 0 and far beyond 2**16."""
    for pid in (1, 2, 32768, 4194304):
        pretend_pid(monkeypatch, topology, pid)
        for index in (0, 1, 63, 64, 65535, 65536, 10**6):
            (a, b), (a6, b6) = topology.addresses(index)
            for addr in (a, b):
                assert ipaddress.ip_address(addr) in V4_RANGE, (pid, index, addr)
            for addr in (a6, b6):
                assert ipaddress.ip_address(addr) in V6_RANGE, (pid, index, addr)
            net = ipaddress.ip_interface(f"{a}/30").network
            assert ipaddress.ip_address(b) in net
            assert {a, b} == {str(h) for h in net.hosts()}   # neither the network nor the broadcast address
            assert ipaddress.ip_address(b6) in ipaddress.ip_interface(f"{a6}/64").network


def _listen(addr):
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.bind((addr, 0))      # fails with EADDRNOTAVAIL while the address is still tentative
    s.listen(1)
    return s


def _connect(addr, port):
    c = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    c.settimeout(2.0)
    c.connect((addr, port))
    return c


def test_ipv6_is_usable_at_once():
    """Right after creation: no tentative address, bind() to it works, a connect over IPv6 succeeds."""
    with Topology() as topo:
        srv = nsutil.run_in(_listen, topo.server.ipv6, netns=topo.server.netns)
        try:
            cli = nsutil.run_in(_connect, topo.server.ipv6, srv.getsockname()[1], netns=topo.client.netns)
            conn, peer = srv.accept()
            assert peer[0] == topo.client.ipv6
            cli.sendall(b"v6")
            assert conn.recv(2) == b"v6"
            for s in (cli, conn):
                s.close()
        finally:
            srv.close()
        for host in topo.hosts.values():
            for a in ip_json(host, "-6", "addr", "show", "dev", host.ifname)[0]["addr_info"]:
                assert not a.get("tentative") and not a.get("dadfailed"), a
            assert host.get_sysctl("net.ipv6.conf.all.accept_dad") == "0"


def _link_stats(host):
    return ip_json(host, "-s", "link", "show", "dev", host.ifname)[0]["stats64"]


@pytest.mark.parametrize("routed", [None, topology.Routed()], ids=["veth", "routed"])
def test_setting_up_drops_nothing_even_when_one_end_comes_up_late(monkeypatch, routed):
    """A case's drop counters are its own: an end that is up while its peer is still down drops
    what it sends (the MLD reports of a new IPv6 address: tx_dropped 1 in a CI run, and in 5 of 20
    topologies built through IPRoute with 30 ms between the ends), so no end gets an address before
    every end is up, and running (test_an_end_gets_its_addresses_only_once_running: the router's
    second end dropped one report in a CI run and in 1 of 80 routed topologies on a loaded machine).
    Each end's coming up is slowed down here to open the first window wide."""
    link_up = Topology._link_up
    monkeypatch.setattr(Topology, "_link_up", staticmethod(lambda host: (link_up(host), time.sleep(0.03))))
    with Topology(routed=routed) as topo:
        ends = [h for pair in topo.links.values() for h in pair]
        # the reports of the new addresses' multicast groups go out a jiffy after the address
        wait_until(lambda: all(_link_stats(h)["tx"]["packets"] for h in ends), 5, "an MLD report from every end")
        for h in ends:
            stats = _link_stats(h)
            assert stats["tx"]["dropped"] == stats["rx"]["dropped"] == 0, (h.role, h.ifname, stats)


def test_an_end_gets_its_addresses_only_once_running(monkeypatch):
    """Before an end's first address, the build waits until the kernel's link watch has made it
    running (its queue given: before that what it sends is dropped, tx_dropped). An end whose peer
    is down never runs: the wait ends in a SetupError naming the end, not a hang; once the peer is
    up again the same wait returns."""
    monkeypatch.setattr(topology, "RUNNING_TIMEOUT", 0.2)
    with Topology() as topo:
        client, server = topo.client, topo.server
        nsutil.run_in(topology._wait_running, client, netns=client.netns)       # built: running
        subprocess.run(["ip", "-n", server.netns, "link", "set", server.ifname, "down"], check=True)
        wait_until(lambda: link(client)["operstate"] != "UP", 2, "the client's end losing its carrier")
        with pytest.raises(SetupError, match=f"client's veth end {client.ifname} in {client.netns} running"):
            nsutil.run_in(topology._wait_running, client, netns=client.netns)
        subprocess.run(["ip", "-n", server.netns, "link", "set", server.ifname, "up"], check=True)
        nsutil.run_in(topology._wait_running, client, netns=client.netns)
        assert link(client)["operstate"] == "UP"


def test_an_ipv6_address_without_its_local_route_is_waited_for(monkeypatch):
    """An IPv6 address takes packets only once the kernel's DAD work has inserted its local route
    (even with nodad: two CI runs lost the first SYN+ACK or SYN of an IPv6 handshake to it). With the
    route gone the wait ends in a SetupError naming the host and address, not a hang or a pass; once
    the route is back the same wait returns."""
    with Topology() as topo:
        client = topo.client
        nsutil.run_in(topology._wait_local_routes, client, netns=client.netns)      # built: routed
        route = ["local", client.ipv6, "dev", client.ifname, "table", "local"]
        subprocess.run(["ip", "-n", client.netns, "-6", "route", "del", *route], check=True)
        monkeypatch.setattr(topology, "LOCAL_ROUTE_TIMEOUT", 0.2)
        with pytest.raises(SetupError, match=f"client's IPv6 address {client.ipv6} in {client.netns} taking packets"):
            nsutil.run_in(topology._wait_local_routes, client, netns=client.netns)
        subprocess.run(["ip", "-n", client.netns, "-6", "route", "add", *route], check=True)
        nsutil.run_in(topology._wait_local_routes, client, netns=client.netns)


@pytest.mark.parametrize("routed", [None, topology.Routed()], ids=["veth", "routed"])
def test_the_build_waits_for_every_ipv6_local_route(monkeypatch, routed):
    """The build returns only when every host's IPv6 address has its local route: here the kernel's
    answer is held back for each address's first three looks, and every address is looked at again."""
    looks: dict = {}
    has = topology._has_local_route

    def late(address):
        looks[address] = looks.get(address, 0) + 1
        return looks[address] > 3 and has(address)

    monkeypatch.setattr(topology, "_has_local_route", late)
    with Topology(routed=routed) as topo:
        addresses = {h.ipv6 for pair in topo.links.values() for h in pair}
        assert set(looks) == addresses and all(n >= 4 for n in looks.values()), looks


@pytest.mark.parametrize("mtu", [1280, 9000])
def test_link_mtu_is_set_on_both_ends(mtu):
    """Topology(mtu=N) gives both veth ends MTU N."""
    with Topology(mtu=mtu) as topo:
        assert [link(h)["mtu"] for h in topo.hosts.values()] == [mtu, mtu]


def test_link_mtu_reaches_tcp(family):
    """Lab(mtu=1280): the SYN and the SYN+ACK advertise MSS = MTU - headers."""
    with Lab(family=family, mtu=1280, trace_states=False) as lab:
        srv = lab.server.socket()
        srv.bind(50000)
        srv.listen(1)
        lab.client.socket().connect(lab.hosts.server, 50000)
        syn, synack = lab.segments()[:2]
        expected = 1280 - (60 if family == "ipv6" else 40)
        assert lab.mss() == expected
        assert (syn.flags, syn.option("mss")) == ("S", expected)
        assert (synack.flags, synack.option("mss")) == ("S.", expected)


def _host_sysctl(key):
    # This test's own thread is in the host's namespace: /proc/sys shows the host's value.
    with open("/proc/sys/" + key.replace(".", "/")) as fh:
        return fh.read().strip()


def test_sysctls_are_set_inside_and_the_host_keeps_its_own():
    """Per-namespace sysctls (at creation and later) change nothing in the host's namespace."""
    keys = ("net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_syn_retries", "net.ipv6.conf.all.accept_dad",
            "net.ipv6.conf.default.router_solicitations")
    before = {k: _host_sysctl(k) for k in keys}
    fin = 7 if before["net.ipv4.tcp_fin_timeout"] != "7" else 9
    syn = 2 if before["net.ipv4.tcp_syn_retries"] != "2" else 3
    with Topology(sysctls={"net.ipv4.tcp_fin_timeout": fin}) as topo:
        for host in topo.hosts.values():
            assert host.get_sysctl("net.ipv4.tcp_fin_timeout") == str(fin)
            assert host.get_sysctl("net.ipv6.conf.all.accept_dad") == "0"
            assert host.get_sysctl("net.ipv6.conf.default.router_solicitations") == "0"
        server_default = topo.server.get_sysctl("net.ipv4.tcp_syn_retries")
        topo.client.set_sysctl("net.ipv4.tcp_syn_retries", syn)
        assert topo.client.get_sysctl("net.ipv4.tcp_syn_retries") == str(syn)
        assert topo.client.sysctls["net.ipv4.tcp_syn_retries"] == str(syn)
        assert topo.server.get_sysctl("net.ipv4.tcp_syn_retries") == server_default
        during = {k: _host_sysctl(k) for k in keys}
    assert during == before
    assert {k: _host_sysctl(k) for k in keys} == before


def test_unknown_sysctl_fails_setup_and_leaves_nothing(resources):
    """A sysctl the kernel does not have: SetupError naming it, and no namespace is left behind."""
    topo = Topology(sysctls={"net.ipv4.no_such_sysctl": 1})
    expected = [names.resource_name(topo.index, role) for role in topo.roles]
    with pytest.raises(SetupError, match="net.ipv4.no_such_sysctl"):
        with topo:
            pass
    left = [n for n in resources.netns(os.getpid()) if n in expected]
    assert left == []


def test_everything_is_removed_when_the_context_ends(resources):
    """After the with-block: no /run/netns entry, and a process left inside has been killed."""
    with Topology() as topo:
        netns = [h.netns for h in topo.hosts.values()]
        assert all(n in resources.netns(os.getpid()) for n in netns)
        sleeper = Command(topo.server, ["sleep", "30"]).start()
        assert resources.procs_in(topo.server.netns) == [sleeper.pid]
    assert not set(netns) & set(resources.netns(os.getpid()))
    assert sleeper.proc.wait(timeout=2) == -9


class Boom(Exception):
    pass


def test_everything_is_removed_when_the_body_raises(resources):
    """An exception in the body propagates unchanged and the namespaces are still removed."""
    with pytest.raises(Boom):
        with Topology() as topo:
            netns = [h.netns for h in topo.hosts.values()]
            raise Boom()
    assert not set(netns) & set(resources.netns(os.getpid()))
    for n in netns:
        with pytest.raises(subprocess.CalledProcessError):
            subprocess.run(["ip", "-n", n, "link"], check=True, capture_output=True)


# -- routed: client - router - server ---------------------------------------------------------------

def test_routed_topology_three_namespaces_two_prefixes_forwarding_in_the_router_only(resources):
    """Routed(): three slab- namespaces, two links with their own prefixes, forwarding on in the router
    only, default routes via the router, the smaller MTU on the router's end of the server link;
    all of it removed at the end."""
    with Topology(routed=topology.Routed(server_link_mtu=1280)) as topo:
        client, router, server = topo.client, topo.router, topo.server
        router_b, _ = topo.links["server"]
        netns = [h.netns for h in topo.hosts.values()]
        assert len(set(netns)) == 3 and all(n.startswith(f"slab-{os.getpid()}-") for n in netns)
        assert router_b.netns == router.netns and router_b.ifname != router.ifname
        assert all(len(h.ifname) <= IFNAMSIZ for h in topo.interfaces)
        for h in topo.interfaces:
            assert ipaddress.ip_address(h.ipv4) in V4_RANGE and ipaddress.ip_address(h.ipv6) in V6_RANGE
        net_a = ipaddress.ip_network(f"{client.ipv4}/30", strict=False)
        net_b = ipaddress.ip_network(f"{server.ipv4}/30", strict=False)
        assert ipaddress.ip_address(router.ipv4) in net_a and ipaddress.ip_address(router_b.ipv4) in net_b
        assert not net_a.overlaps(net_b)
        assert ipaddress.ip_network(f"{client.ipv6}/80", strict=False) != ipaddress.ip_network(f"{server.ipv6}/80",
                                                                                                  strict=False)
        assert ip_json(client, "-6", "route", "get", server.ipv6)[0].get("gateway") == router.ipv6
        assert router.get_sysctl("net.ipv4.ip_forward") == "1"
        assert router.get_sysctl("net.ipv6.conf.all.forwarding") == "1"
        for h in (client, server):
            assert h.get_sysctl("net.ipv4.ip_forward") == "0"
            assert h.get_sysctl("net.ipv6.conf.all.forwarding") == "0"
        for h, gw in ((client, router), (server, router_b)):
            for fam, dst in (("-4", server.ipv4 if h is client else client.ipv4),
                             ("-6", server.ipv6 if h is client else client.ipv6)):
                route = ip_json(h, fam, "route", "get", dst)[0]
                assert route["gateway"] == (gw.ipv4 if fam == "-4" else gw.ipv6), route
        assert link(router_b)["mtu"] == 1280 and link(server)["mtu"] == 1500 and link(client)["mtu"] == 1500
        assert topo.peer_of(client) is server and topo.next_hop(client) is router
        assert _host_sysctl("net.ipv4.ip_forward") in ("0", "1")      # untouched: read, never written
    assert not set(netns) & set(resources.netns(os.getpid()))


@pytest.mark.parametrize("capture", ["client", "server"])
def test_routed_lab_connects_across_the_router_and_captures_the_named_link(family, capture):
    """A connection client -> server crosses the router; the capture on either link names both ends."""
    with Lab(family=family, trace_states=False, routed=topology.Routed(capture=capture)) as lab:
        assert lab.capture.tap in lab.topology.links[capture]
        srv = lab.server.socket()
        srv.bind(50000)
        srv.listen(1)
        accepting = srv.accept(wait=False)
        cli = lab.client.socket()
        cli.connect(lab.hosts.server, 50000)
        conn = accepting.wait()
        assert conn.call.ret["peer"][0] == lab.addr("client")
        cli.send("hello")
        assert conn.recv(10).ret == "hello"
        lab.wait_segment(lambda s: s.src == "server" and s.ack == 6, timeout=2, what="the ACK of the data")
        assert [(s.src, s.flags) for s in lab.segments()[:3]] == [("client", "S"), ("server", "S."), ("client", ".")]
        assert {"client", "router", "server"} == {s.role for s in lab.ss("end").values()}


def test_routed_topology_is_removed_when_the_body_raises(resources):
    """A failing body: all three namespaces and both IPv4 blocks of the routed topology are gone."""
    with pytest.raises(Boom):
        with Topology(routed=topology.Routed()) as topo:
            netns = [h.netns for h in topo.hosts.values()]
            v4 = [h.ipv4 for h in topo.interfaces]
            raise Boom()
    assert len(netns) == 3 and not set(netns) & set(resources.netns(os.getpid()))
    claimed = set()
    for name in os.listdir(topology.BLOCKS_DIR):
        try:
            with open(os.path.join(topology.BLOCKS_DIR, name)) as fh:
                if fh.read().strip() == str(os.getpid()):
                    claimed.add(int(name))
        except FileNotFoundError:       # another worker released it between the listing and the open
            pass
    base = int(ipaddress.IPv4Address("198.18.0.0"))
    assert not {(int(ipaddress.IPv4Address(a)) - base) // 4 for a in v4} & claimed


def test_a_refused_netlink_request_names_itself_and_the_kernels_error():
    """harness/rtnl.py: the kernel goes on after a refused request; the first refusal is the error."""
    from harness.rtnl import Batch

    def in_new_netns():        # run_in(new=True): a namespace of the thread's own, gone with it
        Batch().link_up(1).addr(9999, "198.18.0.1", 30).neigh(1, "198.18.0.2", "02:00:00:00:00:01").send()

    with pytest.raises(SetupError, match=r"netlink: address 198\.18\.0\.1/30 on link 9999: No such device \(ENODEV\)"):
        nsutil.run_in(in_new_netns, new=True)
