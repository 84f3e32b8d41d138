"""Every picture that leaves the node: live pictures, snapshots, playback copies, exports and
subject access, all redacted by the same detector and the same blur."""
