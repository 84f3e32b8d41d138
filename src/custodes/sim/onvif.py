"""A simulated ONVIF device: the device and media services over HTTP/SOAP, and a WS-Discovery
responder, on loopback.

It answers what custodes asks a real camera (GetDeviceInformation, GetSystemDateAndTime,
GetCapabilities, GetServices, GetNetworkProtocols, GetUsers, GetProfiles, GetStreamUri) in the
shapes of the ONVIF schemas, and checks WS-Security UsernameToken password digests as ONVIF
requires. Its identity, clock offset and weaknesses are settable, so a test can impersonate a
Dahua model on a listed firmware, a camera whose clock drifts, or one that lists its users to
anyone.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import socket
import struct
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self, cast
from urllib.parse import quote
from xml.sax.saxutils import escape

log = logging.getLogger(__name__)

NS = {
    "env": "http://www.w3.org/2003/05/soap-envelope",
    "wsse": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd",
    "wsu": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd",
    "tds": "http://www.onvif.org/ver10/device/wsdl",
    "trt": "http://www.onvif.org/ver10/media/wsdl",
    "tt": "http://www.onvif.org/ver10/schema",
    "ter": "http://www.onvif.org/ver10/error",
    "wsa": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "d": "http://schemas.xmlsoap.org/ws/2005/04/discovery",
    "dn": "http://www.onvif.org/ver10/network/wsdl",
}
_DIGEST_TYPE = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"
    "#PasswordDigest"
)
DEVICE_PATH = "/onvif/device_service"
MEDIA_PATH = "/onvif/media_service"
WS_DISCOVERY_GROUP = "239.255.255.250"
WS_DISCOVERY_PORT = 3702
_MAX_BODY = 64 * 1024
_TOKEN_WINDOW_S = 300.0
# What ONVIF's access policy (Core spec, 5.9.4) lets anyone call: the clock is needed before a
# client can make a digest, and the service list before it knows where anything is.
_PRE_AUTH = frozenset({"GetSystemDateAndTime", "GetCapabilities", "GetServices",
                       "GetWsdlUrl", "GetEndpointReference", "GetServiceCapabilities"})


@dataclass(frozen=True, slots=True)
class SimProfile:
    """One media profile: a stream the camera offers."""

    token: str
    uri: str  # RTSP URI returned by GetStreamUri (no credentials, as cameras do)
    codec: str  # H264 / H265
    width: int
    height: int
    fps: int
    bitrate_kbps: int = 4000


@dataclass(slots=True)
class OnvifIdentity:
    """What the device says it is, and how it behaves."""

    manufacturer: str = "custodes"
    model: str = "SIM-CAM"
    firmware: str = "1.0.0"
    serial: str = "SIM0001"
    hardware_id: str = "sim"
    name: str = "custodes-sim"
    clock_offset_s: float = 0.0  # the device clock minus the real one
    ntp: bool = True
    # Weaknesses, off by default, for the risk audit to find:
    anonymous_access: bool = False  # every operation answers without credentials
    anonymous_users: bool = False  # GetUsers answers without credentials
    https: bool = False  # reported by GetNetworkProtocols (the sim itself speaks HTTP only)
    users: list[tuple[str, str]] = field(default_factory=lambda: [("admin", "Administrator")])


class _Unauthorized(Exception):
    pass


def password_digest(nonce: bytes, created: str, password: str) -> str:
    """WS-Security UsernameToken: Base64(SHA-1(nonce + created + password))."""
    # SHA-1 is what the UsernameToken profile specifies; nothing here stores it.
    raw = hashlib.sha1(nonce + created.encode() + password.encode(), usedforsecurity=False)
    return base64.b64encode(raw.digest()).decode()


def _el(tag: str, text: object) -> str:
    return f"<{tag}>{escape(str(text))}</{tag}>"


def _bool(value: bool) -> str:
    return "true" if value else "false"


class OnvifDevice:
    """One simulated ONVIF device on its own port; run by `OnvifSim`'s event loop."""

    def __init__(
        self,
        identity: OnvifIdentity,
        profiles: list[SimProfile],
        *,
        host: str,
        username: str | None,
        password: str | None,
    ) -> None:
        if (username is None) != (password is None):
            raise ValueError("give both username and password, or neither")
        self.identity = identity
        self.profiles = profiles
        self.host = host
        self.port = 0
        self.endpoint = uuid.uuid4().urn
        self._credentials = (username, password) if username and password else None
        self._server: asyncio.Server | None = None
        self.requests: list[tuple[str, bool]] = []  # (operation, authenticated): for tests

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{DEVICE_PATH}"

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("onvif %s: serving %s", self.identity.name, self.url)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    # --- HTTP ---------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await self._read(reader)
                if request is None:
                    break
                status, body = request
                writer.write(
                    f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\n"
                    "Content-Type: application/soap+xml; charset=utf-8\r\n"
                    f"Content-Length: {len(body)}\r\nServer: custodes-sim\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()

    async def _read(self, reader: asyncio.StreamReader) -> tuple[int, bytes] | None:
        line = await reader.readline()
        if not line:
            return None
        parts = line.decode("latin-1").split()
        headers: dict[str, str] = {}
        while (header := (await reader.readline()).decode("latin-1").strip()):
            name, _, value = header.partition(":")
            headers[name.strip().lower()] = value.strip()
        if len(parts) != 3 or parts[0] != "POST":
            return 405, self._fault("env:Sender", "ter:ActionNotSupported", "POST SOAP only")
        length = int(headers.get("content-length", "0") or 0)
        if not 0 < length <= _MAX_BODY:
            return 400, self._fault("env:Sender", "ter:InvalidArgVal", "bad Content-Length")
        return self.answer(await reader.readexactly(length))

    # --- SOAP ---------------------------------------------------------------------------------

    def answer(self, body: bytes) -> tuple[int, bytes]:
        try:
            root = ET.fromstring(body)  # noqa: S314 - a loopback test device; bodies are capped
        except ET.ParseError:
            return 400, self._fault("env:Sender", "ter:WellFormed", "not XML")
        operation_el = root.find("env:Body/*", NS)
        if operation_el is None:
            return 400, self._fault("env:Sender", "ter:WellFormed", "no SOAP body")
        operation = operation_el.tag.rpartition("}")[2]
        authenticated = self._authenticated(root)
        self.requests.append((operation, authenticated))
        allowed = (
            authenticated
            or self._credentials is None
            or self.identity.anonymous_access
            or operation in _PRE_AUTH
            or (operation == "GetUsers" and self.identity.anonymous_users)
        )
        if not allowed:
            return 400, self._fault("env:Sender", "ter:NotAuthorized", "Sender not Authorized")
        handler = getattr(self, f"_op_{operation}", None)
        if handler is None:
            return 400, self._fault("env:Receiver", "ter:ActionNotSupported", operation)
        try:
            return 200, self._envelope(handler(operation_el))
        except ValueError as exc:
            return 400, self._fault("env:Sender", "ter:InvalidArgVal", str(exc))

    def _authenticated(self, root: ET.Element) -> bool:
        if self._credentials is None:
            return False
        token = root.find("env:Header/wsse:Security/wsse:UsernameToken", NS)
        if token is None:
            return False
        user = token.findtext("wsse:Username", "", NS)
        password_el = token.find("wsse:Password", NS)
        nonce = token.findtext("wsse:Nonce", "", NS)
        created = token.findtext("wsu:Created", "", NS)
        if password_el is None or user != self._credentials[0]:
            return False
        given = (password_el.text or "").strip()
        if password_el.get("Type", _DIGEST_TYPE) != _DIGEST_TYPE:
            return False  # plain-text passwords refused, as the cameras in question do
        try:
            nonce_bytes = base64.b64decode(nonce, validate=True)
        except ValueError:
            return False
        expected = password_digest(nonce_bytes, created, self._credentials[1])
        if not hmac.compare_digest(expected, given):
            return False
        # As cameras do: a token made by a clock far from the device's own is refused, which
        # is why clients read GetSystemDateAndTime first and sign with the device's time.
        try:
            made = datetime.fromisoformat(created).timestamp()
        except ValueError:
            return False
        return abs(made - (time.time() + self.identity.clock_offset_s)) <= _TOKEN_WINDOW_S

    def _envelope(self, payload: str) -> bytes:
        return (
            '<?xml version="1.0" encoding="UTF-8"?>'
            f'<env:Envelope xmlns:env="{NS["env"]}" xmlns:tds="{NS["tds"]}" '
            f'xmlns:trt="{NS["trt"]}" xmlns:tt="{NS["tt"]}">'
            f"<env:Body>{payload}</env:Body></env:Envelope>"
        ).encode()

    def _fault(self, code: str, subcode: str, reason: str) -> bytes:
        return (
            '<?xml version="1.0" encoding="UTF-8"?>'
            f'<env:Envelope xmlns:env="{NS["env"]}" xmlns:ter="{NS["ter"]}"><env:Body>'
            f"<env:Fault><env:Code><env:Value>{code}</env:Value><env:Subcode><env:Value>"
            f"{subcode}</env:Value></env:Subcode></env:Code><env:Reason>"
            f'<env:Text xml:lang="en">{escape(reason)}</env:Text></env:Reason></env:Fault>'
            "</env:Body></env:Envelope>"
        ).encode()

    def _base(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # --- operations ---------------------------------------------------------------------------

    def _op_GetDeviceInformation(self, _: ET.Element) -> str:
        i = self.identity
        return (
            "<tds:GetDeviceInformationResponse>"
            + _el("tds:Manufacturer", i.manufacturer) + _el("tds:Model", i.model)
            + _el("tds:FirmwareVersion", i.firmware) + _el("tds:SerialNumber", i.serial)
            + _el("tds:HardwareId", i.hardware_id)
            + "</tds:GetDeviceInformationResponse>"
        )

    def _op_GetSystemDateAndTime(self, _: ET.Element) -> str:
        now = datetime.fromtimestamp(time.time() + self.identity.clock_offset_s, UTC)
        stamp = (
            f"<tt:Time>{_el('tt:Hour', now.hour)}{_el('tt:Minute', now.minute)}"
            f"{_el('tt:Second', now.second)}</tt:Time>"
            f"<tt:Date>{_el('tt:Year', now.year)}{_el('tt:Month', now.month)}"
            f"{_el('tt:Day', now.day)}</tt:Date>"
        )
        return (
            "<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime>"
            + _el("tt:DateTimeType", "NTP" if self.identity.ntp else "Manual")
            + _el("tt:DaylightSavings", "false")
            + "<tt:TimeZone><tt:TZ>UTC0</tt:TZ></tt:TimeZone>"
            + f"<tt:UTCDateTime>{stamp}</tt:UTCDateTime>"
            + f"<tt:LocalDateTime>{stamp}</tt:LocalDateTime>"
            + "</tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>"
        )

    def _op_GetCapabilities(self, _: ET.Element) -> str:
        base = escape(self._base())
        return (
            "<tds:GetCapabilitiesResponse><tds:Capabilities>"
            f"<tt:Device><tt:XAddr>{base}{DEVICE_PATH}</tt:XAddr></tt:Device>"
            f"<tt:Media><tt:XAddr>{base}{MEDIA_PATH}</tt:XAddr>"
            "<tt:StreamingCapabilities><tt:RTPMulticast>false</tt:RTPMulticast>"
            "<tt:RTP_TCP>true</tt:RTP_TCP><tt:RTP_RTSP_TCP>true</tt:RTP_RTSP_TCP>"
            "</tt:StreamingCapabilities></tt:Media>"
            "</tds:Capabilities></tds:GetCapabilitiesResponse>"
        )

    def _op_GetServices(self, _: ET.Element) -> str:
        base = escape(self._base())
        services = ((NS["tds"], DEVICE_PATH), (NS["trt"], MEDIA_PATH))
        return (
            "<tds:GetServicesResponse>"
            + "".join(
                f"<tds:Service>{_el('tds:Namespace', ns)}<tds:XAddr>{base}{path}</tds:XAddr>"
                "<tds:Version><tt:Major>2</tt:Major><tt:Minor>60</tt:Minor></tds:Version>"
                "</tds:Service>"
                for ns, path in services
            )
            + "</tds:GetServicesResponse>"
        )

    def _op_GetNetworkProtocols(self, _: ET.Element) -> str:
        rtsp_ports = sorted({_port(p.uri) for p in self.profiles}) or [554]
        protocols = [("HTTP", True, [self.port]), ("HTTPS", self.identity.https, [443]),
                     ("RTSP", True, rtsp_ports)]
        return (
            "<tds:GetNetworkProtocolsResponse>"
            + "".join(
                f"<tds:NetworkProtocols>{_el('tt:Name', name)}{_el('tt:Enabled', _bool(on))}"
                + "".join(_el("tt:Port", p) for p in ports)
                + "</tds:NetworkProtocols>"
                for name, on, ports in protocols
            )
            + "</tds:GetNetworkProtocolsResponse>"
        )

    def _op_GetUsers(self, _: ET.Element) -> str:
        return (
            "<tds:GetUsersResponse>"
            + "".join(
                f"<tds:User>{_el('tt:Username', name)}{_el('tt:UserLevel', level)}</tds:User>"
                for name, level in self.identity.users
            )
            + "</tds:GetUsersResponse>"
        )

    def _op_GetProfiles(self, _: ET.Element) -> str:
        return (
            "<trt:GetProfilesResponse>"
            + "".join(self._profile(p) for p in self.profiles)
            + "</trt:GetProfilesResponse>"
        )

    def _profile(self, p: SimProfile) -> str:
        token = escape(p.token, {'"': "&quot;"})
        return (
            f'<trt:Profiles token="{token}" fixed="true">{_el("tt:Name", p.token)}'
            f'<tt:VideoEncoderConfiguration token="enc-{token}">'
            f"{_el('tt:Name', 'enc-' + p.token)}{_el('tt:UseCount', 1)}"
            f"{_el('tt:Encoding', p.codec)}"
            f"<tt:Resolution>{_el('tt:Width', p.width)}{_el('tt:Height', p.height)}"
            "</tt:Resolution><tt:Quality>4</tt:Quality>"
            f"<tt:RateControl>{_el('tt:FrameRateLimit', p.fps)}"
            f"{_el('tt:EncodingInterval', 1)}{_el('tt:BitrateLimit', p.bitrate_kbps)}"
            "</tt:RateControl>"
            "<tt:Multicast><tt:Address><tt:Type>IPv4</tt:Type>"
            "<tt:IPv4Address>0.0.0.0</tt:IPv4Address></tt:Address><tt:Port>0</tt:Port>"
            "<tt:TTL>0</tt:TTL><tt:AutoStart>false</tt:AutoStart></tt:Multicast>"
            "<tt:SessionTimeout>PT60S</tt:SessionTimeout>"
            "</tt:VideoEncoderConfiguration></trt:Profiles>"
        )

    def _op_GetStreamUri(self, request: ET.Element) -> str:
        token = request.findtext("trt:ProfileToken", "", NS).strip()
        profile = next((p for p in self.profiles if p.token == token), None)
        if profile is None:
            raise ValueError(f"no profile {token!r}")
        return (
            "<trt:GetStreamUriResponse><trt:MediaUri>"
            f"{_el('tt:Uri', profile.uri)}{_el('tt:InvalidAfterConnect', 'false')}"
            f"{_el('tt:InvalidAfterReboot', 'false')}{_el('tt:Timeout', 'PT0S')}"
            "</trt:MediaUri></trt:GetStreamUriResponse>"
        )

    # --- WS-Discovery -------------------------------------------------------------------------

    def probe_match(self, relates_to: str) -> bytes:
        i = self.identity
        scopes = " ".join([
            "onvif://www.onvif.org/type/video_encoder",
            "onvif://www.onvif.org/Profile/Streaming",
            f"onvif://www.onvif.org/name/{quote(i.name)}",
            f"onvif://www.onvif.org/hardware/{quote(i.model)}",
        ])
        return (
            '<?xml version="1.0" encoding="UTF-8"?>'
            f'<SOAP-ENV:Envelope xmlns:SOAP-ENV="{NS["env"]}" xmlns:wsa="{NS["wsa"]}" '
            f'xmlns:d="{NS["d"]}" xmlns:dn="{NS["dn"]}"><SOAP-ENV:Header>'
            f"{_el('wsa:MessageID', uuid.uuid4().urn)}{_el('wsa:RelatesTo', relates_to)}"
            "<wsa:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</wsa:To>"
            "<wsa:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/ProbeMatches"
            '</wsa:Action><d:AppSequence InstanceId="1" MessageNumber="1"/>'
            "</SOAP-ENV:Header><SOAP-ENV:Body><d:ProbeMatches><d:ProbeMatch>"
            f"<wsa:EndpointReference>{_el('wsa:Address', self.endpoint)}"
            "</wsa:EndpointReference><d:Types>dn:NetworkVideoTransmitter</d:Types>"
            f"{_el('d:Scopes', scopes)}{_el('d:XAddrs', self.url)}"
            "<d:MetadataVersion>1</d:MetadataVersion>"
            "</d:ProbeMatch></d:ProbeMatches></SOAP-ENV:Body></SOAP-ENV:Envelope>"
        ).encode()


def _port(uri: str) -> int:
    from urllib.parse import urlsplit  # noqa: PLC0415 - only here

    return urlsplit(uri).port or 554


def _probe_id(data: bytes) -> str | None:
    """The MessageID of a WS-Discovery Probe for ONVIF devices (or any device), else None."""
    try:
        root = ET.fromstring(data)  # noqa: S314 - datagrams are at most 64 KiB
    except ET.ParseError:
        return None
    if root.find("env:Body/d:Probe", NS) is None:
        return None
    types = (root.findtext("env:Body/d:Probe/d:Types", "", NS) or "").split()
    if types and not any(t.endswith(":NetworkVideoTransmitter") or t == "NetworkVideoTransmitter"
                         for t in types):
        return None
    message_id = root.findtext("env:Header/wsa:MessageID", None, NS)
    return message_id.strip() if message_id else None


class _Discovery(asyncio.DatagramProtocol):
    def __init__(self, devices: list[OnvifDevice]) -> None:
        self.devices = devices
        self.transport: asyncio.DatagramTransport | None = None
        self.probes = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        message_id = _probe_id(data)
        if message_id is None or self.transport is None:
            return
        self.probes += 1
        for device in self.devices:
            self.transport.sendto(device.probe_match(message_id), addr)


class OnvifSim:
    """ONVIF devices and their WS-Discovery responder, served from a background thread.

    Discovery listens on `discovery_port` of 127.0.0.1 for unicast probes and, where the kernel
    allows multicast on loopback, in the WS-Discovery group on the same port (joined on
    127.0.0.1 only, so nothing outside this machine reaches it). Port 0 picks a free port.
    """

    def __init__(self, host: str = "127.0.0.1", *, discovery_port: int | None = 0) -> None:
        self.host = host
        self.devices: list[OnvifDevice] = []
        self._discovery_port = discovery_port
        self.discovery_port: int | None = None
        self.multicast = False  # whether the multicast listener could be set up
        self._protocols: list[_Discovery] = []
        self._transports: list[asyncio.DatagramTransport] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def add_device(
        self,
        identity: OnvifIdentity,
        profiles: list[SimProfile],
        *,
        username: str | None = None,
        password: str | None = None,
    ) -> OnvifDevice:
        """A device answering at `device.url`; with credentials, WS-UsernameToken digest."""
        device = OnvifDevice(identity, profiles, host=self.host, username=username,
                             password=password)
        self.devices.append(device)
        if self._loop is not None:
            self._call(device.open())
        return device

    def start(self) -> None:
        if self._loop is not None:
            return
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="custodes-onvif",
                                        daemon=True)
        self._thread.start()
        for device in self.devices:
            self._call(device.open())
        if self._discovery_port is not None:
            self._call(self._listen(self._discovery_port))

    async def _listen(self, port: int) -> None:
        loop = asyncio.get_running_loop()
        protocol = _Discovery(self.devices)
        self._protocols.append(protocol)
        unicast = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        unicast.bind((self.host, port))
        self.discovery_port = unicast.getsockname()[1]
        transport, _ = await loop.create_datagram_endpoint(lambda: protocol, sock=unicast)
        self._transports.append(transport)
        group_protocol = _Discovery(self.devices)
        try:
            group = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            group.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # Bound to the group address: only datagrams sent to the group arrive here.
            group.bind((WS_DISCOVERY_GROUP, self.discovery_port))
            mreq = struct.pack("4s4s", socket.inet_aton(WS_DISCOVERY_GROUP),
                               socket.inet_aton(self.host))
            group.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
            group.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                             socket.inet_aton(self.host))
        except OSError as exc:
            group.close()
            log.warning("onvif sim: no multicast discovery on %s (%s); unicast only",
                        self.host, exc)
            return
        transport, _ = await loop.create_datagram_endpoint(lambda: group_protocol, sock=group)
        self._transports.append(transport)
        self._protocols.append(group_protocol)
        self.multicast = True

    @property
    def probes(self) -> int:
        """WS-Discovery probes answered so far."""
        return sum(p.probes for p in self._protocols)

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        for transport in self._transports:
            loop.call_soon_threadsafe(transport.close)
        for device in self.devices:
            self._call(device.close())
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
        self._loop = self._thread = None
        self._transports.clear()

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with contextlib.suppress(RuntimeError):
            self.stop()
