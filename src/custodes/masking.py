"""Credentials out of free text: the one function every error text that can hold a URL passes
through before it is stored, shown or logged.

Camera URLs carry their passwords (``rtsp://admin:secret@cam/stream``), and ffmpeg, OpenCV and
the network stack repeat the URL they were given in their errors ("rtsp://admin:secret@cam:
Connection refused"). Those errors become a camera's state reason, which every role with
``status.view`` reads, and log lines. So:

    mask_credentials("rtsp://admin:secret@10.0.0.5/s: refused")
    # 'rtsp://admin:***@10.0.0.5/s: refused'
    mask_credentials(text, camera_url)  # also any bare copy of that URL's password

``CredentialFilter`` applies the same to every log record (message, arguments and traceback)
on the handlers it is installed on (``install_log_filter``).
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote, urlsplit

MASK = "***"

# scheme://userinfo@ : the userinfo runs to the last "@" before the host part ends (a password
# holding an unescaped "@" is common in camera configs, and URL parsers split at the last one).
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^\s/?#'\"<>]*)@")


def _mask_userinfo(match: re.Match[str]) -> str:
    userinfo = match.group("userinfo")
    user, colon, _password = userinfo.partition(":")
    # A user name alone may be a token (``rtsp://<token>@host``): then it all goes.
    kept = f"{user}:{MASK}" if colon else MASK
    return f"{match.group('scheme')}{kept}@"


def _passwords(urls: tuple[str, ...]) -> list[str]:
    found = []
    for url in urls:
        try:
            parts = urlsplit(url)
        except ValueError:
            continue
        password = parts.password
        if password:
            found += [password, unquote(password)]
    # Longest first, so that one password that contains another is masked whole. Very short
    # ones are not searched for as bare text: masking every "1" would make errors unreadable
    # (the URL form is masked whatever its length).
    return sorted({p for p in found if len(p) >= 4}, key=len, reverse=True)


def mask_credentials(text: str, *urls: str) -> str:
    """``text`` with the password of every ``scheme://user:password@`` in it replaced by
    ``***``, and any bare occurrence of the passwords of ``urls`` too."""
    masked = _USERINFO.sub(_mask_userinfo, text)
    for password in _passwords(urls):
        masked = masked.replace(password, MASK)
    return masked


class CredentialFilter(logging.Filter):
    """Masks credentials in every record that passes (see ``mask_credentials``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record is logging's to report, not ours
            return True
        masked = mask_credentials(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            # The formatter would format the traceback after us, URL included: do it now.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_credentials(record.exc_text)
        return True


def install_log_filter(logger: logging.Logger | None = None) -> None:
    """Put a ``CredentialFilter`` on every handler of ``logger`` (the root logger by default):
    handler filters see the records of every logger below, logger filters do not."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, CredentialFilter) for f in handler.filters):
            handler.addFilter(CredentialFilter())
