"""ESAP workflows: one module per workflow, each a Prefect flow plan -> stage -> run -> archive.

`flows.registry` lists them for the command line, the gateway and the deployments.
"""
