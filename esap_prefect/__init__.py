"""esap-prefect: the batch back end of the ESAP science platform, on Prefect 3.

This package holds the command line and the project-wide settings.
"""
