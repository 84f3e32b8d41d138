"""Live view: redacted pictures of the cameras someone watches (service.py), made by a process
of their own (supervisor.py)."""
