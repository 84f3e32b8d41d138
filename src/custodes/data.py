"""The node's data, wired in one place: the storage folder's layout, its database, the node's
keys and the audit log bound to both.

    data = NodeData.of(config)      # the node (`custodes.app.Node`) and every command

The node and the command line used to wire these by hand in a dozen places, and each place
was one more where a command could write to the audit log with other keys than the node's, or
open a database the node does not use. The store is opened by whoever uses it: the node at
`Node.prepare`, a command in a ``with`` block (`custodes.commands.node_data`).
"""

from __future__ import annotations

from dataclasses import dataclass

from custodes.audit.log import AuditLog
from custodes.config import Config
from custodes.keys import NodeKeys
from custodes.record.layout import Layout
from custodes.store.db import Store


@dataclass(frozen=True)
class NodeData:
    layout: Layout
    store: Store
    keys: NodeKeys
    audit: AuditLog

    @classmethod
    def of(cls, config: Config) -> NodeData:
        """The data of the node ``config`` describes. Keys load (or are created) first: a
        node that cannot sign its audit log or seal biometric data must not start, and a
        command must not act without them. Raises KeyFileError or OSError."""
        keys = NodeKeys.load_or_create(config.key_dir)
        layout = Layout(config.storage.path)
        store = Store(layout.database)
        return cls(layout, store, keys, AuditLog(store, keys))
