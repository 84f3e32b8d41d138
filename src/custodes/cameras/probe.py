"""Probe one camera: what it is, what it streams, its clock, and what it exposes.

`probe(url, username, password)` speaks ONVIF (device and media services, with
`onvif-zeep-async` and its bundled WSDL files) to an http(s):// device service URL, or only RTSP
to an rtsp:// URL, and returns a `CameraProbe`. It never raises for the camera's sake: an
unreachable camera, refused credentials or a broken answer come back as `error` plus findings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from custodes.cameras.models import (
    CameraProbe,
    ClockInfo,
    DeviceInfo,
    Finding,
    FindingCode,
    ProtocolInfo,
    Severity,
    StreamInfo,
    StreamRole,
)
from custodes.cameras.rtsp import RtspCheck, check_rtsp, strip_credentials

log = logging.getLogger(__name__)

# Beyond this the recorder's timestamps and the camera's overlay disagree visibly, and
# cameras start refusing WS-Security digests (whose Created time they check).
DEFAULT_DRIFT_THRESHOLD_S = 5.0
_MEDIA_NS = "http://www.onvif.org/ver10/media/wsdl"
_STREAM_SETUP = {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}}


class _Refused(Exception):
    """The device answered with a SOAP fault that means "not authorised"."""


async def probe(
    url: str,
    username: str | None = None,
    password: str | None = None,
    *,
    timeout: float = 15.0,
    drift_threshold_s: float = DEFAULT_DRIFT_THRESHOLD_S,
) -> CameraProbe:
    """Probe the camera at `url`: an ONVIF device service (http://HOST[:PORT][/onvif/...]) or
    an RTSP stream (rtsp://...). Credentials in the URL are used when none are given."""
    bare, url_user, url_password = strip_credentials(url)
    username = username if username is not None else url_user
    password = password if password is not None else url_password
    result = CameraProbe(url=bare)
    scheme = urlsplit(bare).scheme
    try:
        async with asyncio.timeout(timeout):
            if scheme == "rtsp":
                await _probe_rtsp(result, bare, username, password)
            elif scheme in ("http", "https"):
                await _probe_onvif(result, bare, username, password, drift_threshold_s)
            else:
                result.error = "give an http(s):// ONVIF device service URL or an rtsp:// URL"
    except TimeoutError:
        result.error = f"no complete answer within {timeout:g} s"
        result.findings.append(Finding(FindingCode.UNREACHABLE, Severity.WARNING, result.error))
    return result


async def _probe_rtsp(
    result: CameraProbe, url: str, username: str | None, password: str | None
) -> None:
    check = await check_rtsp(url, username, password)
    result.reachable = check.reachable
    result.authenticated = bool(check.authenticated)
    _rtsp_findings(result, check, username is not None)
    if check.open_without_credentials or check.authenticated:
        result.streams.append(StreamInfo(StreamRole.MAIN, "", url, codec=check.codec))
    result.error = check.error


def _rtsp_findings(result: CameraProbe, check: RtspCheck, had_credentials: bool) -> None:
    if not check.reachable:
        result.findings.append(Finding(FindingCode.UNREACHABLE, Severity.WARNING,
                                       f"RTSP {check.url}: {check.error}"))
        return
    if check.open_without_credentials:
        result.findings.append(Finding(
            FindingCode.RTSP_WITHOUT_AUTH, Severity.CRITICAL,
            f"RTSP {check.url} plays without credentials: anyone on the network sees it"))
    elif check.schemes == ["basic"]:
        result.findings.append(Finding(
            FindingCode.RTSP_BASIC_AUTH, Severity.WARNING,
            "RTSP asks for Basic authentication only: the password crosses the network in "
            "clear (base64); switch the camera to Digest"))
    if check.authenticated is False:
        result.findings.append(Finding(FindingCode.AUTH_FAILED, Severity.WARNING,
                                       check.error or "RTSP credentials refused"))
    elif not had_credentials and not check.open_without_credentials:
        result.findings.append(Finding(FindingCode.NO_CREDENTIALS, Severity.INFO,
                                       check.error or "RTSP needs credentials"))


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    base = urlunsplit((parts.scheme, f"[{host}]" if ":" in host else host, "", "", ""))
    return base, parts.port or (443 if parts.scheme == "https" else 80)


def _is_not_authorized(exc: BaseException) -> bool:
    import zeep.exceptions  # noqa: PLC0415 - heavy; only when a probe runs

    if not isinstance(exc, zeep.exceptions.Fault):
        return False
    text = f"{exc.message} {exc.code} {exc.subcodes}".lower()
    return "notauthorized" in text.replace(" ", "") or "not authorized" in text


async def _call(service: Any, operation: str, params: dict[str, Any] | None, *,
                auth: bool) -> Any:
    """One ONVIF operation, signed with the UsernameToken digest or anonymous."""
    method = getattr(service, operation if auth else f"authless_{operation}")
    try:
        return await method(params)
    except Exception as exc:
        if _is_not_authorized(exc):
            raise _Refused(operation) from exc
        raise


async def _probe_onvif(
    result: CameraProbe, url: str, username: str | None, password: str | None,
    drift_threshold_s: float,
) -> None:
    import aiohttp  # noqa: PLC0415 - heavy imports only when a probe runs
    import zeep.exceptions  # noqa: PLC0415
    from onvif import ONVIFCamera  # noqa: PLC0415
    from onvif.exceptions import ONVIFError  # noqa: PLC0415

    base, port = _host_port(url)
    auth = username is not None and password is not None
    # no_cache: the WSDL files ship in the package; no cache file is written anywhere.
    camera = ONVIFCamera(base, port, username, password, no_cache=True, adjust_time=auth)
    try:
        devicemgmt = await camera.create_devicemgmt_service()
        await _clock(result, devicemgmt, drift_threshold_s)
        result.reachable = True
        await _anonymous(result, devicemgmt)
        if auth:
            # Also learns the camera's clock offset, so the digests carry its time.
            await camera.update_xaddrs()
            devicemgmt = await camera.create_devicemgmt_service()
        elif result.device is not None:
            await _anonymous_xaddrs(camera, devicemgmt)
        else:
            result.error = "the camera answers ONVIF but needs credentials for its details"
            result.findings.append(Finding(FindingCode.NO_CREDENTIALS, Severity.INFO,
                                           result.error))
            return
        info = await _call(devicemgmt, "GetDeviceInformation", None, auth=auth)
        result.authenticated = auth
        result.device = _device(info)
        await _streams(result, camera, auth)
        await _protocols(result, devicemgmt, auth)
    except _Refused as exc:
        result.error = f"the camera refused the credentials ({exc} not authorised)"
        result.findings.append(Finding(FindingCode.AUTH_FAILED, Severity.WARNING, result.error))
        return
    except (aiohttp.ClientConnectionError, ConnectionError) as exc:
        result.error = f"cannot connect to {base}:{port}: {exc}"
        result.findings.append(Finding(FindingCode.UNREACHABLE, Severity.WARNING, result.error))
        return
    except (zeep.exceptions.Error, ONVIFError, aiohttp.ClientError, AttributeError,
            ValueError) as exc:
        cause = exc.__cause__ if isinstance(exc, ONVIFError) and exc.__cause__ else exc
        if isinstance(cause, (aiohttp.ClientConnectionError, ConnectionError)):
            result.error = f"cannot connect to {base}:{port}: {cause}"
            result.findings.append(Finding(FindingCode.UNREACHABLE, Severity.WARNING,
                                           result.error))
        else:
            result.error = f"not a usable ONVIF answer: {type(cause).__name__}: {cause}"
            result.findings.append(Finding(FindingCode.PROTOCOL_ERROR, Severity.WARNING,
                                           result.error))
        return
    finally:
        with contextlib.suppress(Exception):
            await camera.close()
    main = result.stream(StreamRole.MAIN)
    if main is not None:
        check = await check_rtsp(main.uri, username, password)
        _rtsp_findings(result, check, auth)


async def _clock(result: CameraProbe, devicemgmt: Any, threshold_s: float) -> None:
    import zeep.exceptions  # noqa: PLC0415

    sent = time.time()
    try:
        answer = await devicemgmt.authless_GetSystemDateAndTime()
    except zeep.exceptions.Fault as exc:
        # ONVIF lets anyone read the clock; a camera that refuses still answered.
        log.info("%s: GetSystemDateAndTime refused (%s); clock drift unknown", result.url, exc)
        return
    here = (sent + time.time()) / 2
    utc = getattr(answer, "UTCDateTime", None)
    if utc is None:
        return  # the camera keeps local time only; drift unknown, said by its absence
    camera_time = datetime(utc.Date.Year, utc.Date.Month, utc.Date.Day, utc.Time.Hour,
                          utc.Time.Minute, utc.Time.Second, tzinfo=UTC).timestamp()
    kind = getattr(answer, "DateTimeType", None)
    # The camera reports whole seconds: up to one second of the drift is rounding.
    drift = camera_time - here
    result.clock = ClockInfo(camera_utc=camera_time, drift_s=round(drift, 1),
                             ntp=None if kind is None else str(kind) == "NTP")
    if abs(drift) > threshold_s + 1:
        result.findings.append(Finding(
            FindingCode.CLOCK_DRIFT, Severity.WARNING,
            f"the camera clock is {drift:+.0f} s off (threshold {threshold_s:g} s); "
            + ("it says it uses NTP: check its NTP server" if result.clock.ntp
               else "set it to NTP")))


async def _anonymous(result: CameraProbe, devicemgmt: Any) -> None:
    """What the camera tells anyone who asks, without credentials."""
    import zeep.exceptions  # noqa: PLC0415

    with contextlib.suppress(_Refused, zeep.exceptions.Fault):
        info = await _call(devicemgmt, "GetDeviceInformation", None, auth=False)
        result.device = _device(info)
        result.findings.append(Finding(
            FindingCode.ONVIF_WITHOUT_AUTH, Severity.WARNING,
            "ONVIF answers GetDeviceInformation without credentials (model and firmware "
            "visible to anyone on the network)"))
    with contextlib.suppress(_Refused, zeep.exceptions.Fault):
        users = await _call(devicemgmt, "GetUsers", None, auth=False)
        names = [str(getattr(u, "Username", "?")) for u in users or []]
        result.findings.append(Finding(
            FindingCode.USERS_LISTED_ANONYMOUSLY, Severity.CRITICAL,
            f"ONVIF lists its users without credentials ({', '.join(names) or 'none'}): "
            "an attacker learns the names to guess passwords for"))


async def _anonymous_xaddrs(camera: Any, devicemgmt: Any) -> None:
    capabilities = await _call(devicemgmt, "GetCapabilities", {"Category": "All"}, auth=False)
    media = getattr(capabilities, "Media", None)
    if media is not None and getattr(media, "XAddr", None):
        camera.xaddrs[_MEDIA_NS] = str(media.XAddr)


def _device(info: Any) -> DeviceInfo:
    return DeviceInfo(
        manufacturer=str(info.Manufacturer or ""), model=str(info.Model or ""),
        firmware=str(info.FirmwareVersion or ""), serial=str(info.SerialNumber or ""),
        hardware_id=str(getattr(info, "HardwareId", "") or ""),
    )


async def _streams(result: CameraProbe, camera: Any, auth: bool) -> None:
    media = await camera.create_media_service()
    profiles = await _call(media, "GetProfiles", None, auth=auth) or []
    found: list[tuple[int, StreamInfo]] = []
    for profile in profiles:
        token = str(profile.token)
        answer = await _call(media, "GetStreamUri",
                             {"StreamSetup": _STREAM_SETUP, "ProfileToken": token}, auth=auth)
        uri, _, _ = strip_credentials(str(answer.Uri))
        encoder = getattr(profile, "VideoEncoderConfiguration", None)
        resolution = getattr(encoder, "Resolution", None)
        rate = getattr(encoder, "RateControl", None)
        width = getattr(resolution, "Width", None)
        height = getattr(resolution, "Height", None)
        fps = getattr(rate, "FrameRateLimit", None)
        codec = getattr(encoder, "Encoding", None)
        info = StreamInfo(
            StreamRole.SUB, token, uri, codec=None if codec is None else str(codec),
            width=None if width is None else int(width),
            height=None if height is None else int(height),
            fps=None if fps is None else float(fps),
        )
        found.append(((info.width or 0) * (info.height or 0), info))
    # The largest picture records; the next one serves analysis and live view.
    found.sort(key=lambda pair: -pair[0])
    for index, (_, info) in enumerate(found[:2]):
        role = StreamRole.MAIN if index == 0 else StreamRole.SUB
        result.streams.append(StreamInfo(role, info.profile, info.uri, info.codec, info.width,
                                         info.height, info.fps))


async def _protocols(result: CameraProbe, devicemgmt: Any, auth: bool) -> None:
    import zeep.exceptions  # noqa: PLC0415

    try:
        answer = await _call(devicemgmt, "GetNetworkProtocols", None, auth=auth)
    except (_Refused, zeep.exceptions.Fault) as exc:
        log.info("%s: GetNetworkProtocols refused: %s", result.url, exc)
        return
    for protocol in answer or []:
        ports = tuple(int(p) for p in (getattr(protocol, "Port", None) or []))
        result.protocols.append(ProtocolInfo(str(protocol.Name), bool(protocol.Enabled), ports))
    enabled = {p.name.upper() for p in result.protocols if p.enabled}
    if "HTTP" in enabled and "HTTPS" not in enabled:
        result.findings.append(Finding(
            FindingCode.CLEARTEXT_PROTOCOL, Severity.INFO,
            "HTTP is on and HTTPS off: the camera's web and ONVIF logins cross the network "
            "unencrypted (the ONVIF password only as a digest)"))
