"""The fleet risk data (known exploited vulnerabilities, the FCC Covered List) and the check of
one probed camera against it.

The data ships in the package (`data/risk-*.json`, versioned, every entry with its source) and
can be replaced by a newer file with `custodes cameras risk-data update FILE`, which validates
it and keeps it in the node's storage folder. Nothing is fetched from the network.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from custodes.cameras.models import DeviceInfo, Finding, FindingCode, Severity

FORMAT = 1
INSTALLED_NAME = "risk-data.json"  # in the node's storage folder, after `risk-data update`
_MAX_FILE = 2 * 1024 * 1024
_VERSION = re.compile(r"^\d{4}-\d{2}(?:-\d{2})?$")

NonEmpty = Annotated[str, Field(min_length=1, max_length=2000)]


class RiskDataError(ValueError):
    """The file is not valid risk data; the message says where."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Strict):
    id: NonEmpty
    title: NonEmpty
    url: NonEmpty
    taken: date = Field(description="When the entries were taken from the source")
    note: str = ""


class Vendor(_Strict):
    id: NonEmpty
    names: list[NonEmpty] = Field(min_length=1, description="How devices spell the maker, "
                                  "matched case-insensitively inside the ONVIF Manufacturer")


class FirmwareRange(_Strict):
    """Affected firmware; every bound given must hold. None of them: not decidable here."""

    first: str | None = Field(None, description="First affected version (inclusive)")
    fixed: str | None = Field(None, description="First fixed version (exclusive bound)")
    build_date_before: date | None = Field(
        None, description="Affected if the firmware's build date (as Dahua writes it in the "
        "version string: 'Build Date: YYYY-MM-DD') is before this day")


class Vulnerability(_Strict):
    cve: Annotated[str, Field(pattern=r"^CVE-\d{4}-\d{4,}$")]
    vendor: NonEmpty
    models: list[NonEmpty] = Field(min_length=1, description="Model patterns (* wildcards), "
                                   "matched case-insensitively against the ONVIF Model")
    firmware: FirmwareRange | None = Field(
        None, description="Affected firmware; null: see the advisory (a 'check firmware' "
        "finding)")
    title: NonEmpty
    source: NonEmpty
    date_added: date | None = Field(None, description="When the source listed it")
    advisory: NonEmpty
    note: str = ""


class CoveredEntity(_Strict):
    vendor: NonEmpty
    entity: NonEmpty
    scope: NonEmpty
    date_added: date
    source: NonEmpty


class RiskData(_Strict):
    format: int
    version: NonEmpty = Field(description="YYYY-MM or YYYY-MM-DD; newer data has a later one")
    compiled: date
    notes: str = ""
    sources: list[Source] = Field(min_length=1)
    vendors: list[Vendor]
    vulnerabilities: list[Vulnerability]
    covered: list[CoveredEntity]

    @model_validator(mode="after")
    def _consistent(self) -> RiskData:
        if self.format != FORMAT:
            raise ValueError(f"format {self.format} is not {FORMAT}, the one this version reads")
        if not _VERSION.match(self.version):
            raise ValueError(f"version {self.version!r} is not YYYY-MM or YYYY-MM-DD")
        sources = {s.id for s in self.sources}
        vendors = {v.id for v in self.vendors}
        entries = [(v.cve, v.source, v.vendor) for v in self.vulnerabilities]
        entries += [(c.entity, c.source, c.vendor) for c in self.covered]
        for name, source, vendor in entries:
            if source not in sources:
                raise ValueError(f"{name}: unknown source {source!r}")
            if vendor not in vendors:
                raise ValueError(f"{name}: unknown vendor {vendor!r}")
        return self

    def vendor_of(self, manufacturer: str) -> str | None:
        text = manufacturer.casefold()
        for vendor in self.vendors:
            if any(name.casefold() in text for name in vendor.names):
                return vendor.id
        return None


def bundled_path() -> Path:
    """The newest data file shipped in the package."""
    folder = resources.files("custodes.cameras") / "data"
    names = sorted(p.name for p in folder.iterdir() if p.name.startswith("risk-")
                   and p.name.endswith(".json"))
    if not names:
        raise RiskDataError("no risk data in the package")
    return Path(str(folder / names[-1]))


def parse(text: str, source: str) -> RiskData:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RiskDataError(f"{source}: not JSON: {exc}") from None
    try:
        return RiskData.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()
        )
        raise RiskDataError(f"{source}: {problems}") from None


def read(path: Path) -> RiskData:
    with path.open("rb") as f:
        data = f.read(_MAX_FILE + 1)
    if len(data) > _MAX_FILE:
        raise RiskDataError(f"{path}: larger than {_MAX_FILE} bytes")
    return parse(data.decode("utf-8", "replace"), str(path))


def load(storage: Path | None = None) -> RiskData:
    """The data in force: the node's installed file if newer than the package's, else the
    package's."""
    bundled = read(bundled_path())
    if storage is not None and (storage / INSTALLED_NAME).is_file():
        installed = read(storage / INSTALLED_NAME)
        if installed.version >= bundled.version:
            return installed
    return bundled


def install(path: Path, storage: Path, *, allow_older: bool = False) -> tuple[RiskData, str]:
    """Validate `path` and make it the node's risk data; (data, the version it replaced)."""
    new = read(path)
    current = load(storage)
    if new.version < current.version and not allow_older:
        raise RiskDataError(
            f"{path}: version {new.version} is older than the {current.version} in force "
            "(give --allow-older to go back on purpose)")
    storage.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=storage, prefix=".risk-data-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(new.model_dump_json(indent=1))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, storage / INSTALLED_NAME)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return new, current.version


# --- matching -------------------------------------------------------------------------------


def _pattern(glob: str) -> re.Pattern[str]:
    return re.compile("^" + ".*".join(re.escape(part) for part in glob.split("*")) + "$",
                      re.IGNORECASE)


def _version_key(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", text.split(",", maxsplit=1)[0]))


_BUILD_DATE = re.compile(r"build\s*date[:\s]*(\d{4})-(\d{2})-(\d{2})", re.IGNORECASE)


def firmware_affected(firmware: str, affected: FirmwareRange) -> bool | None:
    """True/False when the bounds decide it; None when the firmware string cannot be read."""
    if affected.build_date_before is not None:
        m = _BUILD_DATE.search(firmware)
        if m is None:
            return None
        built = date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        if built >= affected.build_date_before:
            return False
    if affected.first is None and affected.fixed is None:
        return True if affected.build_date_before is not None else None
    version = _version_key(firmware)
    if not version:
        return None
    if affected.first is not None and version < _version_key(affected.first):
        return False
    return not (affected.fixed is not None and version >= _version_key(affected.fixed))


def assess(device: DeviceInfo, data: RiskData) -> list[Finding]:
    """Findings for one camera's identity: KEV entries and the FCC Covered List."""
    findings: list[Finding] = []
    vendor = data.vendor_of(device.manufacturer)
    if vendor is None:
        return findings
    for vuln in data.vulnerabilities:
        if vuln.vendor != vendor or not any(_pattern(m).match(device.model.strip())
                                            for m in vuln.models):
            continue
        verdict = None if vuln.firmware is None else firmware_affected(device.firmware,
                                                                        vuln.firmware)
        if verdict is False:
            continue
        if verdict:
            findings.append(Finding(
                FindingCode.KNOWN_EXPLOITED, Severity.CRITICAL,
                f"{vuln.cve} ({vuln.title}): {device.manufacturer} {device.model} firmware "
                f"{device.firmware} is in the affected range; update it ({vuln.advisory})",
                reference=vuln.cve))
        else:
            findings.append(Finding(
                FindingCode.CHECK_FIRMWARE, Severity.WARNING,
                f"{vuln.cve} ({vuln.title}) is exploited in the wild and lists "
                f"{device.manufacturer} {device.model}; check firmware {device.firmware} "
                f"against the vendor advisory: {vuln.advisory}",
                reference=vuln.cve))
    for entry in data.covered:
        if entry.vendor == vendor:
            findings.append(Finding(
                FindingCode.FCC_COVERED, Severity.WARNING,
                f"{entry.entity} is on the FCC Covered List since {entry.date_added} "
                f"({entry.scope})",
                reference=next(s.url for s in data.sources if s.id == entry.source)))
    return findings
