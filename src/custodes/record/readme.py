"""README.txt for a downloaded export: what the zip holds, how to play it, how to verify it.

Written for whoever receives the zip (an inspector, a police officer, a lawyer), who has no
custodes: every check uses plain ``openssl``. The README is not part of the signed bundle (it
sits beside the bundle's folder in the zip): it explains the evidence, it is not evidence.
Its facts are taken from the signed manifest, so it says nothing the manifest does not.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from custodes.keys import PUBLIC_KEY
from custodes.record.manifest import MANIFEST, SIGNATURE
from custodes.sitetime import SiteZone

NAME = "README.txt"


def export_readme(
    manifest: dict[str, Any],
    folder: str,
    *,
    case_reference: str | None = None,
    subject_access: str | None = None,
    zone: SiteZone | None = None,
) -> str:
    """The README for the bundle in ``folder`` (its name in the zip) with ``manifest``; its
    times in UTC (as signed) and, with ``zone``, in the site's local time too."""

    def when(value: object) -> str:
        text = f"{value} (UTC)"
        if zone is None or not isinstance(value, str):
            return text
        try:
            t = datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return text
        return f"{text} = {zone.text(t, zone=True)} (local time at the site)"

    redaction = manifest.get("redaction") or {}
    videos = [f["name"] for f in manifest.get("files", []) if str(f["name"]).endswith(".mp4")]
    video = videos[0] if videos else "the .mp4 file"
    if redaction.get("applied"):
        shown = "redacted: faces (and the camera's privacy zones) are blurred"
    elif subject_access:
        shown = f"not redacted: footage for subject access request {subject_access}"
    else:
        shown = "NOT redacted: original footage, people can be identified"
    case = "none" if manifest.get("case") is None else (
        case_reference or f"case {manifest['case']}"
    )
    gaps = manifest.get("gaps") or []
    lines = [
        "CCTV footage exported by a custodes recorder",
        "=" * 44,
        "",
        f"Camera:      {manifest.get('camera')}",
        f"Recorder:    {manifest.get('node')} (the recording node's name)",
        f"From:        {when(manifest.get('start'))}",
        f"To:          {when(manifest.get('end'))}",
        f"Footage:     {shown}",
        f"Case:        {case}",
        f"Exported:    {when(manifest.get('created_at'))} by {manifest.get('created_by')}",
    ]
    if gaps:
        lines.append(f"Gaps:        {len(gaps)} stretch(es) without recording, listed in "
                     f"{MANIFEST}; the video plays straight across them")
    lines += [
        "",
        "This footage shows people. Keep it only as long as the purpose it was exported for",
        "needs, and pass it on only to those entitled to it.",
        "",
        "PLAYING IT",
        "----------",
        f"Open {folder}/{video} in any video player (VLC, Windows Media Player,",
        "QuickTime, a browser). It starts at the 'From' time above.",
        "",
        "VERIFYING IT (with OpenSSL 3, no custodes needed)",
        "-------------------------------------------------",
        f"{MANIFEST} lists every file of the export with its SHA-256 checksum; {SIGNATURE} is",
        f"the recorder's Ed25519 signature over {MANIFEST}; {PUBLIC_KEY} is the recorder's",
        "public key. In the folder, run:",
        "",
        f"  cd {folder}",
        f"  openssl pkeyutl -verify -pubin -inkey {PUBLIC_KEY} -rawin -in {MANIFEST} "
        f"-sigfile {SIGNATURE}",
        "",
        '   It must print "Signature Verified Successfully". Then check each file:',
        "",
        f"  openssl dgst -sha256 {video}",
        "",
        f'   The checksum must equal the "sha256" of that file in {MANIFEST}.',
        "",
        "The key must be the recorder's own: whoever altered this zip could have replaced",
        f"{PUBLIC_KEY} and signed again with their own key. Its fingerprint is",
        "",
        f"  {manifest.get('public_key_fingerprint', '(not given)')}",
        "",
        "(also in manifest.json). Confirm it with the recorder's operator through another",
        "channel (by telephone, on paper, from the operator's published key), never from",
        "this zip alone. To compute it from the key file:",
        "",
        f"  openssl pkey -pubin -in {PUBLIC_KEY} -outform DER | tail -c 32 | openssl dgst -sha256",
        "",
        '   which prints the same hexadecimal digits after "SHA2-256(stdin)= ".',
        "",
        f"With custodes: custodes export verify {folder} --key <the recorder's key, obtained "
        "separately>",
        "",
    ]
    return "\n".join(lines)
