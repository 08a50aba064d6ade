"""Prefect worker types of our own, registered through the `prefect.collections` entry point.

`warm` (`workers.warm`): the local pool of the embedded stack, flow runs forked warm.
"""

WARM_TYPE = "warm"
