"""Enrolling a site: its credential, its public signing key, and the snippet for its config.

The flow (documented in the README): on the node, ``custodes uplink key CONFIG`` prints the
node's public signing key; on the hub, ``custodes hub add-site NAME --group G --key FILE``
registers it and prints, once, the ``uplink`` section for the node's config and the password
to put in the node's environment. The hub keeps only a bcrypt hash of that password.

Enrolling a site again issues a new password (the old one stops working at the next reload);
with another key it is also an alarm: a site's signing key changes only when its storage was
replaced, or when someone wants the hub to accept a log signed by another key.
"""

from __future__ import annotations

import re
import secrets
import socket
import textwrap
import time
from dataclasses import dataclass
from typing import Any

import bcrypt
import psycopg

from custodes.config import NAME_PATTERN
from custodes.hub.alarms import AlarmKind, raise_alarm
from custodes.hub.config import HubSettings
from custodes.hub.nats_server import HUB_USER, SiteAccount
from custodes.hub.tls import TLS_DIR, WILDCARDS, ensure_ca
from custodes.keys import KeyFileError, public_key_from_pem


class EnrolmentError(ValueError):
    pass


@dataclass(frozen=True)
class Enrolment:
    site: str
    password: str
    key_changed: bool
    new: bool

    def snippet(self, urls: list[str], ca_pem: str | None = None,
                tls_first: bool = True) -> str:
        """The node's ``uplink`` section; ``ca_pem``, the CA the hub's server certificate is
        signed by (public: it is the node's proof that it speaks to the hub)."""
        listed = ", ".join(f'"{u}"' for u in urls)
        out = (f"uplink:\n  site: {self.site}\n  urls: [{listed}]\n"
               "  password: ${CUSTODES_UPLINK_PASSWORD}\n")
        if ca_pem is not None:
            out += "  ca: |\n" + textwrap.indent(ca_pem.strip(), "    ") + "\n"
        if not tls_first:
            out += "  tls_first: false\n"
        return out


def add_site(conn: psycopg.Connection[Any], name: str, group: str, public_pem: bytes) -> Enrolment:
    if not re.match(NAME_PATTERN, name) or name == HUB_USER:
        raise EnrolmentError(f"site name {name!r}: lower-case letters, digits, - and _, "
                             f"at most 63, and not {HUB_USER!r}")
    if not group.strip():
        raise EnrolmentError("the group (municipality) must not be empty")
    try:
        public_key_from_pem(public_pem)
    except (KeyFileError, ValueError) as exc:
        raise EnrolmentError(f"not the node's public signing key (signing.pub): {exc}") from None
    pem = public_pem.decode("ascii").strip() + "\n"
    password = secrets.token_urlsafe(24)
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=11)).decode("ascii")
    now = time.time()
    row = conn.execute("SELECT public_key FROM sites WHERE name = %s FOR UPDATE",
                       (name,)).fetchone()
    changed = False
    if row is None:
        conn.execute("INSERT INTO sites (name, grp, public_key, password_hash, enrolled_at) "
                     "VALUES (%s, %s, %s, %s, %s)", (name, group, pem, hashed, now))
    else:
        changed = str(row[0]) != pem
        conn.execute("UPDATE sites SET grp = %s, public_key = %s, password_hash = %s, "
                     "enrolled_at = %s WHERE name = %s", (group, pem, hashed, now, name))
        if changed:
            raise_alarm(conn, name, AlarmKind.KEY_CHANGED,
                        "the site was enrolled again with another signing key")
    if row is None or changed:
        conn.execute("INSERT INTO site_keys (site, public_key, registered_at) VALUES "
                     "(%s, %s, %s)", (name, pem, now))
    return Enrolment(name, password, changed, row is None)


def accounts(conn: psycopg.Connection[Any]) -> list[SiteAccount]:
    return [SiteAccount(str(r[0]), str(r[1])) for r in
            conn.execute("SELECT name, password_hash FROM sites ORDER BY name")]


def uplink_target(settings: HubSettings) -> tuple[list[str], str | None, bool]:
    """What an enrolled site is told: the URLs, the CA it must trust (None: the system's
    store), and whether it starts TLS first. The embedded server's CA is made here when the
    hub has never started."""
    advertised = [settings.advertise_url] if settings.advertise_url else None
    if settings.nats_urls:
        ca = settings.nats_ca_file
        return (advertised or list(settings.nats_urls),
                ca.read_text(encoding="ascii") if ca is not None else None,
                settings.nats_tls_first)
    host = settings.nats_host if settings.nats_host not in WILDCARDS else socket.gethostname()
    host = f"[{host}]" if ":" in host else host
    ca_file = ensure_ca(settings.data / TLS_DIR)
    return (advertised or [f"tls://{host}:{settings.nats_port}"],
            ca_file.read_text(encoding="ascii"), True)
