"""The testbed's names, addresses and links, and the code that creates and removes them.

Picture (one run, prefix ``ml1a2b-``; namespaces in capitals)::

    INET ──veth── ISP ──bridge wbr── veth ── CE1 ──veth── LAN1
    (TCP/UDP/ICMP   (Kea, RAs, BR     ├──── veth ── CE2 ──veth── LAN2
     servers)        TUN, routes)     ├──── veth(root) ── root bridge ── TAP (VM slot)
                                      └──── veth ── ACC (a host on the access network)

ACC is where the suite injects what no honest CE sends — spoofed MAP-E packets, ICMP from a
router that is not the BR — so a CE under test needs nothing installed for it: packets reach the
ISP's WAN bridge exactly as a CE's would.  It may send from addresses it does not own
(``net.ipv6.ip_nonlocal_bind``).

Every namespace, bridge, veth and TAP name starts with the run's prefix (``ml`` + 4 hex + ``-``,
7 characters, so the longest name ``ml1a2b-c12wb`` stays far below IFNAMSIZ 15).  VM slots need
their TAPs in the root namespace, where QEMU opens them, so they hang off root-namespace
bridges that are joined to the ISP bridge and to the LAN host by veths; namespace slots live
entirely inside namespaces.  Nothing listens outside the run's own namespaces.

Addresses are chosen not to collide with the scenarios' rule prefixes (192.0.2.0/24,
198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32): the ISP–internet link and the internet's
service addresses use 100.64.0.0/10 (shared address space), the WAN link a ULA /64, LANs
192.168.N.0/24 — all only inside the namespaces.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from mapelab.scenario import Scenario

from . import netns as nn
from .status import CeSlot

ISP_INET_NET = IPv4Network("100.64.0.0/30")
ISP_INET_ISP = IPv4Address("100.64.0.1")
ISP_INET_INET = IPv4Address("100.64.0.2")
INET_SERVICE = (IPv4Address("100.65.0.1"), IPv4Address("100.65.0.2"))
INET_SERVICE_NET = IPv4Network("100.65.0.0/24")


def lan_prefix(index: int) -> IPv4Network:
    return IPv4Network(f"192.168.{index}.0/24")


@dataclass(frozen=True)
class Layout:
    """Every name and address of one run, computed from the prefix: pure, no I/O."""

    prefix: str
    scenario: Scenario
    ces: int
    vm_slots: frozenset[int] = field(default_factory=frozenset)

    # namespaces
    @property
    def isp(self) -> str:
        return f"{self.prefix}isp"

    @property
    def inet(self) -> str:
        return f"{self.prefix}inet"

    def ce_ns(self, i: int) -> str:
        return f"{self.prefix}ce{i}"

    def lan_ns(self, i: int) -> str:
        return f"{self.prefix}lan{i}"

    @property
    def access(self) -> str:
        return f"{self.prefix}acc"

    # links
    @property
    def wan_bridge(self) -> str:
        return f"{self.prefix}wbr"

    @property
    def tun(self) -> str:
        return f"{self.prefix}br"

    @property
    def isp_inet_if(self) -> str:
        return f"{self.prefix}ii"

    @property
    def inet_if(self) -> str:
        return f"{self.prefix}ie"

    def wan_if(self, i: int) -> str:
        return f"{self.prefix}c{i}w"

    def wan_port(self, i: int) -> str:
        return f"{self.prefix}c{i}wb"

    def lan_if(self, i: int) -> str:
        return f"{self.prefix}c{i}l"

    def lan_host_if(self, i: int) -> str:
        return f"{self.prefix}l{i}h"

    @property
    def access_if(self) -> str:
        return f"{self.prefix}aw"

    @property
    def access_port(self) -> str:
        return f"{self.prefix}awb"

    # VM plumbing (root namespace)
    @property
    def root_wan_bridge(self) -> str:
        return f"{self.prefix}rwb"

    @property
    def root_wan_veth(self) -> str:
        return f"{self.prefix}rw"

    @property
    def isp_wan_veth(self) -> str:
        return f"{self.prefix}rwi"

    def root_lan_bridge(self, i: int) -> str:
        return f"{self.prefix}r{i}lb"

    def root_lan_veth(self, i: int) -> str:
        return f"{self.prefix}r{i}l"

    def wan_tap(self, i: int) -> str:
        return f"{self.prefix}t{i}w"

    def lan_tap(self, i: int) -> str:
        return f"{self.prefix}t{i}l"

    # addresses
    @property
    def wan_subnet(self) -> IPv6Network:
        hex4 = self.prefix[2:6]
        return IPv6Network(f"fd6d:6c00:{hex4}:1::/64")

    @property
    def isp_wan_address(self) -> IPv6Address:
        return self.wan_subnet.network_address + 1

    @property
    def access_address(self) -> IPv6Address:
        return self.wan_subnet.network_address + 0xACC

    @property
    def wan_mtu(self) -> int:
        return self.scenario.wan_mtu

    @property
    def namespaces(self) -> list[str]:
        out = [self.isp, self.inet, self.access]
        for i in range(1, self.ces + 1):
            if i not in self.vm_slots:
                out.append(self.ce_ns(i))
            out.append(self.lan_ns(i))
        return out

    def slot(self, i: int) -> CeSlot:
        lp = lan_prefix(i)
        vm = i in self.vm_slots
        return CeSlot(
            index=i,
            kind="vm" if vm else "netns",
            ce_netns=None if vm else self.ce_ns(i),
            wan_if=self.wan_tap(i) if vm else self.wan_if(i),
            lan_if=self.lan_tap(i) if vm else self.lan_if(i),
            wan_tap=self.wan_tap(i) if vm else None,
            lan_tap=self.lan_tap(i) if vm else None,
            lan_netns=self.lan_ns(i),
            lan_prefix=lp,
            lan_host=lp.network_address + 2,
            lan_gateway=lp.network_address + 1,
            wan_mtu=self.wan_mtu,
        )

    @property
    def slots(self) -> tuple[CeSlot, ...]:
        return tuple(self.slot(i) for i in range(1, self.ces + 1))


_NS_SYSCTLS = {
    # No DAD: link-local addresses exist at once, so Kea can bind and nothing waits a second.
    "net.ipv6.conf.all.accept_dad": 0,
    "net.ipv6.conf.default.accept_dad": 0,
    "net.ipv6.conf.default.dad_transmits": 0,
}


def build(lay: Layout) -> None:
    """Create the namespaces and links of ``lay`` (the BR's TUN and Kea come later)."""
    for ns in lay.namespaces:
        nn.add_netns(ns)
    for ns in lay.namespaces:
        nn.sysctls(ns, _NS_SYSCTLS)
    nn.sysctls(lay.isp, {"net.ipv6.conf.all.forwarding": 1, "net.ipv4.ip_forward": 1})
    mtu = lay.wan_mtu
    nn.sysctls(lay.access, {"net.ipv6.ip_nonlocal_bind": 1, "net.ipv6.conf.all.accept_ra": 0,
                            "net.ipv6.conf.default.accept_ra": 0})
    root: list[str] = [
        f"link add {lay.isp_inet_if} netns {lay.isp} type veth peer name {lay.inet_if} netns {lay.inet}",
        f"link add {lay.access_if} mtu {mtu} netns {lay.access} type veth peer name {lay.access_port} "
        f"mtu {mtu} netns {lay.isp}",
    ]
    isp: list[str] = [
        "link set lo up",
        f"link add {lay.wan_bridge} type bridge stp_state 0 forward_delay 0",
        f"link set {lay.wan_bridge} mtu {mtu}",
        f"link set {lay.access_port} master {lay.wan_bridge} up",
    ]
    for i in range(1, lay.ces + 1):
        lp = lan_prefix(i)
        if i in lay.vm_slots:
            continue
        root.append(
            f"link add {lay.wan_if(i)} mtu {mtu} netns {lay.ce_ns(i)} type veth peer name {lay.wan_port(i)} "
            f"mtu {mtu} netns {lay.isp}"
        )
        root.append(
            f"link add {lay.lan_if(i)} netns {lay.ce_ns(i)} type veth peer name {lay.lan_host_if(i)} "
            f"netns {lay.lan_ns(i)}"
        )
        isp.append(f"link set {lay.wan_port(i)} master {lay.wan_bridge} up")
    vm = sorted(lay.vm_slots)
    if vm:
        root += [
            f"link add {lay.root_wan_bridge} type bridge stp_state 0 forward_delay 0",
            f"link set {lay.root_wan_bridge} mtu {mtu}",
            f"link add {lay.root_wan_veth} mtu {mtu} type veth peer name {lay.isp_wan_veth} mtu {mtu} netns {lay.isp}",
            f"link set {lay.root_wan_veth} master {lay.root_wan_bridge} up",
        ]
        isp.append(f"link set {lay.isp_wan_veth} master {lay.wan_bridge} up")
        for i in vm:
            root += [
                f"tuntap add dev {lay.wan_tap(i)} mode tap",
                f"link set {lay.wan_tap(i)} mtu {mtu} master {lay.root_wan_bridge} up",
                f"link add {lay.root_lan_bridge(i)} type bridge stp_state 0 forward_delay 0",
                f"tuntap add dev {lay.lan_tap(i)} mode tap",
                f"link set {lay.lan_tap(i)} master {lay.root_lan_bridge(i)} up",
                f"link add {lay.root_lan_veth(i)} type veth peer name {lay.lan_host_if(i)} netns {lay.lan_ns(i)}",
                f"link set {lay.root_lan_veth(i)} master {lay.root_lan_bridge(i)} up",
                f"link set {lay.root_lan_bridge(i)} up",
            ]
        root.append(f"link set {lay.root_wan_bridge} up")
    nn.ip_batch(root)
    if vm:
        # The root namespace must not autoconfigure from the testbed's RAs or answer on these links.
        names = [lay.root_wan_bridge, lay.root_wan_veth]
        for i in vm:
            names += [lay.wan_tap(i), lay.lan_tap(i), lay.root_lan_bridge(i), lay.root_lan_veth(i)]
        for n in names:
            try:
                with open(f"/proc/sys/net/ipv6/conf/{n}/disable_ipv6", "w") as f:
                    f.write("1\n")
            except OSError:
                pass
    isp += [
        f"link set {lay.wan_bridge} up",
        f"addr add {lay.isp_wan_address}/64 dev {lay.wan_bridge}",
        f"link set {lay.isp_inet_if} up",
        f"addr add {ISP_INET_ISP}/30 dev {lay.isp_inet_if}",
        f"route add {INET_SERVICE_NET} via {ISP_INET_INET}",
    ]
    nn.ip_batch(isp, lay.isp)
    nn.ip_batch(["link set lo up", f"link set {lay.access_if} up",
                 f"addr add {lay.access_address}/64 dev {lay.access_if}",
                 f"route add default via {lay.isp_wan_address}"], lay.access)
    inet = [
        "link set lo up",
        f"link set {lay.inet_if} up",
        f"addr add {ISP_INET_INET}/30 dev {lay.inet_if}",
        *(f"addr add {a}/32 dev lo" for a in INET_SERVICE),
        f"route add default via {ISP_INET_ISP}",
    ]
    nn.ip_batch(inet, lay.inet)
    for i in range(1, lay.ces + 1):
        lp = lan_prefix(i)
        slot = lay.slot(i)
        if i not in lay.vm_slots:
            up = ["link set lo up", f"link set {lay.wan_if(i)} up", f"link set {lay.lan_if(i)} up"]
            nn.ip_batch(up, lay.ce_ns(i))
        nn.ip_batch(
            [
                "link set lo up",
                f"link set {lay.lan_host_if(i)} up",
                f"addr add {slot.lan_host}/{lp.prefixlen} dev {lay.lan_host_if(i)}",
                f"route add default via {slot.lan_gateway}",
            ],
            lay.lan_ns(i),
        )


def link_local(netns: str, ifname: str) -> IPv6Address | None:
    """The interface's link-local address once it exists (after carrier; DAD is off)."""
    out = nn.ip("-6", "-o", "addr", "show", "dev", ifname, "scope", "link", netns=netns, check=False)
    for line in out.splitlines():
        parts = line.split()
        if "inet6" in parts:
            return IPv6Address(parts[parts.index("inet6") + 1].split("/")[0])
    return None


def owned_root_links(prefix: str) -> list[str]:
    return [n for n in nn.root_links() if n.startswith(prefix)]


def owned_namespaces(prefix: str) -> list[str]:
    return [n for n in nn.list_netns() if n.startswith(prefix)]


def destroy(prefix: str) -> list[str]:
    """Remove every namespace and root-namespace link whose name starts with ``prefix``.

    Returns what was removed.  Deleting a namespace removes the veths and bridges inside it;
    root-namespace TAPs, bridges and veths are deleted by name.
    """
    removed = []
    for ns in owned_namespaces(prefix):
        nn.del_netns(ns)
        removed.append(f"netns {ns}")
    for link in owned_root_links(prefix):
        nn.ip("link", "del", link, check=False)
        removed.append(f"link {link}")
    return removed
