"""esap-prefect: the batch back end of the ESAP science platform, on Prefect 3.

This package is the top layer: the `esap-prefect` command line.
"""
