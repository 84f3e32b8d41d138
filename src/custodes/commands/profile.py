"""`custodes profile ...`: show the deployment profile pinned in the database, or change it.

Changing it is the only way: a config that names another profile is refused at start (see
custodes.privacy.pinning). A change needs a reason, is audited as the local account, and,
towards a profile that allows less, deletes the biometric data that profile does not allow
at once, with a deletion record in the audit log. A running node stops when it sees the
change; start it again with a config that names the new profile.
"""

from __future__ import annotations

from typing import Annotated

import typer

from custodes.commands import ConfigOption, cli_actor, console, err, load, node_data
from custodes.privacy.pinning import change_profile, pinned_profile
from custodes.privacy.policy import Profile
from custodes.record.layout import Layout
from custodes.store.db import Store

profile_app = typer.Typer(help="The deployment profile, pinned in the database.",
                          no_args_is_help=True)


@profile_app.command("show")
def show(config: ConfigOption) -> None:
    """The pinned profile, and the config's."""
    cfg = load(config)
    with Store(Layout(cfg.storage.path).database) as store:
        pinned = pinned_profile(store)
    console.print(f"pinned: {pinned.value if pinned else 'none yet (pinned at the first start)'}"
                  f"; config: {cfg.profile.value}", highlight=False)


@profile_app.command("set")
def set_profile(
    config: ConfigOption,
    profile: Annotated[Profile, typer.Argument(help="The new profile")],
    reason: Annotated[str, typer.Option(help="Why the deployment changes profile (audited)")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation")] = False,
) -> None:
    """Change the pinned profile (audited); deletes the biometric data it does not allow."""
    cfg = load(config)
    if not reason.strip():
        err.print("[red]a profile change needs a reason[/red]")
        raise typer.Exit(2)
    if not yes:
        typer.confirm(f"pin the {profile.value} profile? Biometric data it does not allow is "
                      "deleted at once", abort=True)
    with node_data(cfg) as data:
        wiped = change_profile(data.store, data.audit, profile,
                               by=cli_actor().name, reason=reason)
    console.print(f"profile pinned: {profile.value}", highlight=False)
    if any(wiped.values()):
        console.print("deleted: " + ", ".join(f"{k.replace('_', ' ')} {v}"
                                              for k, v in wiped.items() if v), highlight=False)
    if cfg.profile is not profile:
        err.print(f"[yellow]{config} still says profile {cfg.profile.value}: the node will "
                  f"not start until it says {profile.value}[/yellow]", highlight=False)
