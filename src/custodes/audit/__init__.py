"""The tamper-evident audit log: who did what to which footage or face, and when."""
