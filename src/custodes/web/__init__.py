"""The web user interface: server-rendered pages (Jinja2) with a little plain JavaScript.

No build step and nothing from a CDN: the templates and static files ship in the package.
"""
