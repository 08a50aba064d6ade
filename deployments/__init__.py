"""Deployments and the embedded stack: block types, work pools, prefect.yaml, a server.

`deployments.stack` starts and stops a whole local Prefect stack for `up` and `demo`.
"""
