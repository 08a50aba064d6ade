"""Every worker type of the project, imported so that Prefect's `prefect.collections` finds them.

`prefect worker start --type dirac` (or warm, apptainer, esap-kubernetes) works once this
module is imported.
"""

from workers.apptainer import ApptainerWorker
from workers.dirac import DiracWorker
from workers.kubernetes import EsapKubernetesWorker
from workers.warm import WarmWorker

WORKER_TYPES = (WarmWorker, DiracWorker, ApptainerWorker, EsapKubernetesWorker)
