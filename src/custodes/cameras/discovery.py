"""WS-Discovery of ONVIF cameras: a Probe out, ProbeMatches back.

The messages are built and parsed by the `WSDiscovery` package (what Home Assistant uses). The
sockets are ours: its threaded daemon leaves loopback out of the interfaces it probes on, binds
UDP port 3702 on every address (taking it from a local camera service) and never reads the
answers to a unicast probe, which is how a single camera or a test on loopback is asked.
"""

from __future__ import annotations

import ipaddress
import logging
import selectors
import socket
import time
from collections.abc import Iterable

import ifaddr
from wsdiscovery.actions.probe import constructProbe
from wsdiscovery.message import createSOAPMessage, parseSOAPMessage
from wsdiscovery.namespaces import NS_ACTION_PROBE_MATCH
from wsdiscovery.qname import QName

from custodes.cameras.models import DiscoveredDevice

log = logging.getLogger(__name__)

WS_DISCOVERY_GROUP = "239.255.255.250"
WS_DISCOVERY_PORT = 3702
_ONVIF_NETWORK = "http://www.onvif.org/ver10/network/wsdl"
_MAX_DATAGRAM = 65535


def local_ipv4_addresses(*, include_loopback: bool = False) -> list[str]:
    """The IPv4 addresses of this machine's interfaces, where a multicast probe goes out."""
    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if not isinstance(ip.ip, str):
                continue
            address = ipaddress.IPv4Address(ip.ip)
            if address.is_link_local or (address.is_loopback and not include_loopback):
                continue
            found.append(str(address))
    return found


def _probe_message() -> tuple[str, bytes]:
    env = constructProbe([QName(_ONVIF_NETWORK, "NetworkVideoTransmitter", "dn")], [])
    return env.getMessageId(), createSOAPMessage(env).encode()


def discover(
    timeout: float = 3.0,
    *,
    interfaces: Iterable[str] | None = None,
    hosts: Iterable[str] = (),
    port: int = WS_DISCOVERY_PORT,
) -> list[DiscoveredDevice]:
    """ONVIF devices that answer a probe within `timeout` seconds.

    `interfaces`: local IPv4 addresses to send the multicast probe from (default: every
    non-loopback interface; give "127.0.0.1" for devices on this machine). `hosts`: addresses
    asked directly by unicast instead of (or as well as) multicast; with `hosts` and no
    `interfaces`, no multicast is sent. Raises OSError when no probe could be sent at all.
    """
    hosts = list(hosts)
    if interfaces is None:
        interfaces = [] if hosts else local_ipv4_addresses()
    message_id, message = _probe_message()
    selector = selectors.DefaultSelector()
    sockets: list[socket.socket] = []
    errors: list[str] = []
    try:
        for address in interfaces:
            try:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sockets.append(sock)
                sock.bind((address, 0))
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                                socket.inet_aton(address))
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
                sock.sendto(message, (WS_DISCOVERY_GROUP, port))
            except OSError as exc:
                errors.append(f"multicast from {address}: {exc}")
                continue
            selector.register(sock, selectors.EVENT_READ)
        if hosts:
            unicast = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sockets.append(unicast)
            unicast.bind(("", 0) if interfaces else (_bind_for(hosts[0]), 0))
            sent = 0
            for host in hosts:
                try:
                    unicast.sendto(message, (host, port))
                    sent += 1
                except OSError as exc:
                    errors.append(f"unicast to {host}: {exc}")
            if sent:
                selector.register(unicast, selectors.EVENT_READ)
        for problem in errors:
            log.warning("discovery: %s", problem)
        if not selector.get_map():
            raise OSError("no discovery probe could be sent: " + "; ".join(errors or ["no "
                          "interface to send from"]))
        return _collect(selector, message_id, timeout)
    finally:
        selector.close()
        for sock in sockets:
            sock.close()


def _bind_for(host: str) -> str:
    # A probe to a loopback camera must come from loopback, or its answer cannot come back.
    try:
        return "127.0.0.1" if ipaddress.ip_address(host).is_loopback else ""
    except ValueError:
        return ""  # a host name: resolved by sendto, answered to wherever we sent from


def _collect(
    selector: selectors.BaseSelector, message_id: str, timeout: float
) -> list[DiscoveredDevice]:
    found: dict[str, DiscoveredDevice] = {}
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        for key, _ in selector.select(left):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data, addr = sock.recvfrom(_MAX_DATAGRAM)
            except OSError:
                continue
            env = parseSOAPMessage(data, addr[0])
            if env is None or env.getAction() != NS_ACTION_PROBE_MATCH:
                continue
            if env.getRelatesTo() != message_id:
                continue  # an answer to someone else's probe
            for match in env.getProbeResolveMatches():
                device = DiscoveredDevice(
                    endpoint=str(match.getEPR()),
                    xaddrs=tuple(str(x) for x in match.getXAddrs()),
                    scopes=tuple(str(s.getValue()) for s in match.getScopes()),
                    address=str(addr[0]),
                )
                found.setdefault(device.endpoint, device)
    return sorted(found.values(), key=lambda d: (d.address, d.endpoint))
