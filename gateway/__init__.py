"""The ESAP gateway: IVOA UWS 1.1 jobs (and ESAP's django-uws JSON) over Prefect deployments.

One FastAPI service in front of the Prefect API; `esap-prefect up` starts it.
"""
