"""A minimal Django site serving django-uws as ESAP's API gateway mounts it (uws/ prefix).

Only for bench/gateway.py, in its own environment (.cache/servers/djangouws).
"""
