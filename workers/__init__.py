"""Prefect worker types of our own, registered through the `prefect.collections` entry point.

`warm` (`workers.warm`): the local pool of the embedded stack, flow runs forked warm;
`dirac` (`workers.dirac`): flow runs as DIRAC jobs; `apptainer`: flow runs in a runtime image;
`esap-kubernetes`: prefect-kubernetes' worker that also deletes the Jobs of cancelled runs.
"""

WARM_TYPE = "warm"
DIRAC_TYPE = "dirac"
APPTAINER_TYPE = "apptainer"
KUBERNETES_TYPE = "esap-kubernetes"  # prefect-kubernetes' own is "kubernetes"
