"""The hub's configuration: a YAML file with one ``hub`` section, as strict as the node's."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import Field, SecretStr, ValidationError, model_validator

from custodes.config import Strict


class HubSettings(Strict):
    data: Path = Field(Path("hub-data"), description="Folder of the embedded PostgreSQL and "
                       "NATS JetStream store, and the hub's own keys")
    database_url: str | None = Field(None, description="An existing PostgreSQL 14+ instead of "
                                     "the embedded one (postgresql://...)")
    nats_urls: list[str] = Field(default_factory=list, description="An existing NATS cluster "
                                 "with JetStream instead of the embedded server")
    nats_user: str | None = Field(None, description="The hub's user on an existing cluster")
    nats_password: SecretStr | None = Field(None, description="Its password (${ENV_VAR})")
    nats_replicas: int = Field(1, ge=1, le=5, description="Copies JetStream keeps of the "
                               "hub's stream: 1 on the embedded server; 3 on a cluster of 3 "
                               "or more servers, which then loses nothing when one dies")
    nats_ca_file: Path | None = Field(None, description="The CA of an existing cluster's "
                                      "TLS certificates (tls:// URLs): the hub trusts it alone "
                                      "and gives it to the sites it enrols")
    nats_tls_first: bool = Field(False, description="An existing cluster's servers start TLS "
                                 "first (tls { handshake_first: true }): the hub and its sites "
                                 "then never send a credential before the server proved itself")
    nats_host: str = Field("127.0.0.1", description="Where the embedded NATS server listens "
                           "(always TLS, with the hub's own CA: see tls_names)")
    tls_names: list[str] = Field(default_factory=list, description="More host names and "
                                 "addresses the sites use to reach the embedded NATS server, "
                                 "for its certificate (loopback, nats_host and advertise_url's "
                                 "host are always in it)")
    nats_port: int = Field(4222, ge=0, le=65535, description="Its port (0: any free one)")
    advertise_url: str | None = Field(None, description="The NATS URL the sites are told to "
                                      "use (default: nats://nats_host:nats_port)")
    web_host: str = Field("127.0.0.1", description="Where the hub's web pages listen")
    web_port: int = Field(8090, ge=0, le=65535, description="Their port (0: any free one)")
    silent_after_seconds: float = Field(120, ge=5, le=7 * 86400,
                                        description="A site not heard for this long is silent")


    @model_validator(mode="after")
    def _replicas_need_a_cluster(self) -> HubSettings:
        if self.nats_replicas > 1 and not self.nats_urls:
            raise ValueError("nats_replicas above 1 needs a NATS cluster (nats_urls): the "
                             "embedded server is a single server")
        return self


class HubConfig(Strict):
    hub: HubSettings = Field(default_factory=HubSettings)


class HubConfigError(Exception):
    pass


def load_hub_config(path: Path | None, data: Path | None = None) -> HubSettings:
    """The ``hub`` section of ``path`` (defaults when None), ``data`` overriding its folder;
    relative paths are relative to the file."""
    raw: object = {}
    if path is not None:
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise HubConfigError(f"{path}: {exc}") from None
    try:
        settings = HubConfig.model_validate(raw).hub
    except ValidationError as exc:
        raise HubConfigError(f"{path}: {exc}") from None
    folder = data if data is not None else settings.data
    if path is not None and not folder.is_absolute():
        folder = path.parent / folder
    ca_file = settings.nats_ca_file
    if path is not None and ca_file is not None and not ca_file.is_absolute():
        ca_file = path.parent / ca_file
    return settings.model_copy(update={"data": folder.resolve(),
                                       "nats_ca_file": ca_file and ca_file.resolve()})
