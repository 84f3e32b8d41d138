"""API routers: every module here that defines ``router`` is included by create_app."""
