"""The `esap-prefect` command: run workflows, start the embedded stack, plan, list things.

Prefect is imported inside the commands, after $ESAP_PREFECT_HOME is applied to its settings.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer
from pydantic import ValidationError

from core.params import (
    ParameterError,
    describe,
    parse_pairs,
    read_json_object,
    read_params_file,
    validate_parameters,
)
from core.settings import (
    AUTH_VARIABLES,
    CONSOLE_HANDLERS,
    api_auth_string,
    configure_prefect_environment,
    database_label,
    database_url,
    home,
    private_home,
    running_stack_api,
)
from esap_prefect.images import images_app
from esap_prefect.running import show

if TYPE_CHECKING:
    from blocks.facility import FacilityBlock
    from gateway.settings import GatewaySettings

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    help="The ESAP batch back end on Prefect 3.",
)

HostOption = Annotated[str, typer.Option(help="Address the Prefect server listens on.")]
PortOption = Annotated[int, typer.Option(help="Port of the Prefect server (API and UI).")]
GatewayPortOption = Annotated[
    int, typer.Option(help="Port of the ESAP gateway (UWS jobs, Execution Planner).")
]


class UserError(Exception):
    """Bad input or a failed precondition: printed as one line, exit status 2."""


REFUSED_CREDENTIAL = (
    "error: the Prefect API at {api} refused this host's credential: set "
    "PREFECT_API_AUTH_STRING to the server's (`esap-prefect env` on its host prints it)"
)


def entry() -> None:
    """The `esap-prefect` command: the app, with a refused credential told in one line."""
    try:
        app()
    except Exception as exc:
        response = getattr(exc, "response", None)
        if getattr(response, "status_code", None) != 401:
            raise
        api = os.environ.get("PREFECT_API_URL", "(the temporary server)")
        typer.echo(REFUSED_CREDENTIAL.format(api=api), err=True)
        raise SystemExit(2) from None


@contextmanager
def _user_errors() -> Iterator[None]:
    try:
        yield
    except UserError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect logs.")] = False,
) -> None:
    """The ESAP batch back end on Prefect 3."""
    os.umask(0o077)  # job folders, results, databases, logs: the owner's only
    if verbose:
        for handler in CONSOLE_HANDLERS:
            os.environ[handler] = "NOTSET"
    configure_prefect_environment()


def _collect_parameters(
    workflow: str, pairs: list[str], params_file: Path | None, facility: str | None
) -> tuple[Any, dict[str, Any]]:
    from flows.registry import UnknownWorkflowError, get_workflow

    try:
        flow = get_workflow(workflow).load()
        parameters = read_params_file(params_file) if params_file else {}
        parameters.update(parse_pairs(pairs))
        if facility:
            parameters["facility"] = facility
        validate_parameters(flow.fn, parameters, workflow)
    except (UnknownWorkflowError, ParameterError) as exc:
        raise UserError(str(exc)) from None
    return flow, parameters


@app.command()
def run(
    workflow: Annotated[str, typer.Argument(help="Workflow name, see `esap-prefect workflows`.")],
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param", "-p", help="KEY=VALUE; JSON lists, objects and numbers are parsed."
        ),
    ] = None,
    params_file: Annotated[Path | None, typer.Option(help="JSON object of parameters.")] = None,
    facility: Annotated[str | None, typer.Option(help="Facility to run on.")] = None,
    in_process: Annotated[
        bool,
        typer.Option(
            "--in-process", help="Run here, even when `up` runs (default without a stack)."
        ),
    ] = False,
) -> None:
    """Run a workflow and print its result as JSON.

    With `esap-prefect up` running, the run goes through the workflow's deployment (shown
    in the Prefect UI under it) and is followed to its end; otherwise it runs here.
    """
    from esap_prefect.running import RunFailed, check_names, via_deployment
    from esap_prefect.running import in_process as run_here
    from flows.registry import get_workflow

    with _user_errors():
        flow, parameters = _collect_parameters(workflow, param or [], params_file, facility)
        try:
            check_names(parameters)
        except ValueError as exc:
            raise UserError(str(exc)) from None
    stack = running_stack_api()
    try:
        if stack and not in_process:
            wire = validate_parameters(flow.fn, parameters, workflow, as_json=True)
            result = via_deployment(get_workflow(workflow).deployment, wire, stack)
        else:
            result = run_here(flow, parameters, os.environ.get("PREFECT_API_URL"))
    except RunFailed as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    show(result)


@app.command()
def workflows() -> None:
    """List the workflows: deployments, parameters with types and the deployments' defaults."""
    from esap_prefect.describe import parameter_lines
    from flows.registry import WORKFLOWS

    for wf in WORKFLOWS.values():
        typer.echo(f"{wf.name}  (deployment {wf.deployment})\n  {wf.description}")
        for line in parameter_lines(wf.load().parameters, wf.parameters):
            typer.echo(f"    {line}")


facilities_app = typer.Typer(help="List and add facilities.", no_args_is_help=False)
add_app = typer.Typer(help="Save a new facility block.", no_args_is_help=True)
facilities_app.add_typer(add_app, name="add")
app.add_typer(facilities_app, name="facilities")


@facilities_app.callback(invoke_without_command=True)
def facilities(ctx: typer.Context) -> None:
    """List the facilities with what they can run."""
    if ctx.invoked_subcommand is not None:
        return
    from blocks.registry import list_facilities
    from core.units import human_duration, human_memory

    for facility in list_facilities():
        cap = facility.capabilities()
        typer.echo(
            f"{cap.facility}  ({cap.kind})  runs {', '.join(sorted(cap.tasktypes))}"
            f"; up to {cap.maxcores} cores, {human_memory(cap.maxmemory)} and "
            f"{human_duration(cap.maxduration)} per job"
        )


FacilityName = Annotated[str, typer.Argument(help="Block name, used with --facility.")]
CloseRse = Annotated[
    str | None, typer.Option(help="Rucio RSE next to the facility (inputs are staged there).")
]
Overwrite = Annotated[bool, typer.Option(help="Replace a block of that name.")]


@add_app.command("dirac")
def add_dirac(
    name: FacilityName,
    url: Annotated[str, typer.Option(help="DiracX URL.")],
    credentials: Annotated[Path, typer.Option(help="DiracX credentials file (dirac login).")],
    embed: Annotated[
        bool,
        typer.Option(
            help="Store the credentials' content in the block as a secret instead of the path."
        ),
    ] = False,
    vo: Annotated[str | None, typer.Option(help="Virtual organisation.")] = None,
    group: Annotated[str | None, typer.Option(help="DIRAC group.")] = None,
    site: Annotated[list[str] | None, typer.Option(help="Allowed site (repeatable).")] = None,
    banned_site: Annotated[list[str] | None, typer.Option(help="Banned site (repeatable).")] = None,
    output_se: Annotated[str | None, typer.Option(help="Storage element for output data.")] = None,
    output_path: Annotated[str | None, typer.Option(help="LFN directory for output data.")] = None,
    close_rse: CloseRse = None,
    overwrite: Overwrite = False,
) -> None:
    """Save a DIRAC facility (DiracX) as a Prefect block."""
    from blocks.dirac.facility import DiracFacility

    with _user_errors():
        if not credentials.is_file():
            raise UserError(f"credentials file {credentials} does not exist")
        try:
            json.loads(credentials.read_text())
        except ValueError:
            raise UserError(
                f"credentials file {credentials} is not a DiracX credentials file (JSON)"
            ) from None
        try:
            facility = DiracFacility(
                url=url,
                vo=vo,
                group=group,
                sites=site or [],
                banned_sites=banned_site or [],
                output_se=output_se,
                output_path=output_path,
                close_rse=close_rse,
                credentials_path=None if embed else credentials.resolve(),
                credentials=credentials.read_text() if embed else None,
            )
        except ValidationError as exc:
            raise UserError(f"invalid DIRAC facility: {describe(exc)}") from None
        _save_facility(facility, name, overwrite)
    typer.echo(f"saved DIRAC facility {name!r} ({url})")


def _save_facility(facility: FacilityBlock, name: str, overwrite: bool) -> None:
    try:
        facility.save(name, overwrite=overwrite)
    except ValueError as exc:
        raise UserError(f"{exc} (use --overwrite to replace it)") from None
    _refresh_run_forms()


def _refresh_run_forms() -> None:
    """With a stack running, deploy again (run forms offer the new name), update the pools."""
    if running_stack_api():
        from deployments.bootstrap import apply_deployments, ensure_work_pools

        ensure_work_pools()  # first: a new kind of facility may bring its pool (kubernetes)
        apply_deployments()


@add_app.command("docker")
def add_docker(
    name: FacilityName,
    url: Annotated[
        str | None, typer.Option(help="Docker Engine address; $DOCKER_HOST when unset.")
    ] = None,
    network: Annotated[str, typer.Option(help="Network mode of job containers.")] = "none",
    pull: Annotated[bool, typer.Option(help="Pull images missing on the engine.")] = False,
    max_cores: Annotated[int | None, typer.Option(help="Most cores per job.")] = None,
    close_rse: CloseRse = None,
    overwrite: Overwrite = False,
) -> None:
    """Save a Docker facility (containers on a Docker Engine) as a Prefect block."""
    from blocks.docker import DockerFacility
    from core.errors import FatalError, TransientError

    with _user_errors():
        extra = {"max_cores": max_cores} if max_cores else {}
        try:
            facility = DockerFacility(
                base_url=url, network=network, pull=pull, close_rse=close_rse, **extra
            )
        except ValidationError as exc:
            raise UserError(f"invalid Docker facility: {describe(exc)}") from None
        try:
            version = facility.engine_version()
        except (FatalError, TransientError) as exc:
            raise UserError(str(exc)) from None
        _save_facility(facility, name, overwrite)
    typer.echo(f"saved Docker facility {name!r} (engine {version})")


@add_app.command("apptainer")
def add_apptainer(
    name: FacilityName,
    singularity: Annotated[
        str, typer.Option(help="The apptainer/singularity command (a name on PATH or a path).")
    ] = "singularity",
    max_cores: Annotated[int | None, typer.Option(help="Cores the facility may use.")] = None,
    close_rse: CloseRse = None,
    overwrite: Overwrite = False,
) -> None:
    """Save an Apptainer/Singularity facility (SIF images run on this host) as a Prefect block."""
    from blocks.apptainer import ApptainerFacility
    from core.errors import FatalError

    with _user_errors():
        extra = {"max_cores": max_cores} if max_cores else {}
        facility = ApptainerFacility(singularity=singularity, close_rse=close_rse, **extra)
        try:
            version = facility.version()
        except FatalError as exc:
            raise UserError(str(exc)) from None
        _save_facility(facility, name, overwrite)
    typer.echo(f"saved Apptainer facility {name!r} ({version})")


@add_app.command("kubernetes")
def add_kubernetes(
    name: FacilityName,
    kubeconfig: Annotated[
        Path | None, typer.Option(help="Kubeconfig file ($KUBECONFIG or ~/.kube/config if unset).")
    ] = None,
    embed: Annotated[
        bool, typer.Option(help="Store the kubeconfig's content in the block as a secret.")
    ] = False,
    in_cluster: Annotated[
        bool, typer.Option(help="Use the pod's service account (flows run in the cluster).")
    ] = False,
    context: Annotated[str | None, typer.Option(help="Kubeconfig context.")] = None,
    api_url: Annotated[
        str | None, typer.Option(help="API server URL with no credentials (test clusters).")
    ] = None,
    namespace: Annotated[str, typer.Option(help="Namespace of the jobs.")] = "default",
    volume_claim: Annotated[
        str | None, typer.Option(help="PersistentVolumeClaim holding the jobs' folders.")
    ] = None,
    host_path: Annotated[
        Path | None, typer.Option(help="Host folder holding the jobs' folders (single node).")
    ] = None,
    workdir: Annotated[
        Path | None, typer.Option(help="Where this host sees the claim (default: host path).")
    ] = None,
    service_account: Annotated[str | None, typer.Option(help="Pods' service account.")] = None,
    executable_image: Annotated[
        str | None, typer.Option(help="Image for jobs that name none (uri://executable).")
    ] = None,
    max_cores: Annotated[int | None, typer.Option(help="Most cores per job.")] = None,
    close_rse: CloseRse = None,
    overwrite: Overwrite = False,
) -> None:
    """Save a Kubernetes facility (Jobs in a namespace) as a Prefect block, once the API answers."""
    from blocks.kubernetes import KubernetesFacility
    from core.errors import FatalError, TransientError

    with _user_errors():
        if kubeconfig is not None and not kubeconfig.is_file():
            raise UserError(f"kubeconfig {kubeconfig} does not exist")
        if embed and kubeconfig is None:
            raise UserError("--embed needs --kubeconfig (the file whose content is stored)")
        extra = {"max_cores": max_cores} if max_cores else {}
        try:
            facility = KubernetesFacility(
                kubeconfig=None if embed or kubeconfig is None else kubeconfig.resolve(),
                kubeconfig_content=kubeconfig.read_text() if embed and kubeconfig else None,
                in_cluster=in_cluster,
                context=context,
                api_url=api_url,
                namespace=namespace,
                volume_claim=volume_claim,
                host_path=host_path.resolve() if host_path else None,
                workdir=workdir.resolve() if workdir else None,
                service_account=service_account,
                executable_image=executable_image,
                close_rse=close_rse,
                **extra,
            )
        except ValidationError as exc:
            raise UserError(f"invalid Kubernetes facility: {describe(exc)}") from None
        if volume_claim is None and host_path is None:
            raise UserError(
                "give --volume-claim (with --workdir) or --host-path: jobs need a folder"
            )
        if volume_claim is not None and workdir is None:
            raise UserError("--volume-claim needs --workdir: where this host mounts that claim")
        try:
            version = facility.server_version()
        except (FatalError, TransientError) as exc:
            raise UserError(str(exc)) from None
        _save_facility(facility, name, overwrite)
    typer.echo(f"saved Kubernetes facility {name!r} (API server {version}, namespace {namespace})")


stores_app = typer.Typer(help="List and add stores (where data is archived and staged).")
add_store_app = typer.Typer(help="Save a new store block.", no_args_is_help=True)
stores_app.add_typer(add_store_app, name="add")
app.add_typer(stores_app, name="stores")
app.add_typer(images_app, name="images")


@stores_app.callback(invoke_without_command=True)
def stores(ctx: typer.Context) -> None:
    """List the stores."""
    if ctx.invoked_subcommand is not None:
        return
    from blocks.registry import list_stores

    with _user_errors():
        for store in list_stores():
            where = getattr(store, "rucio_host", None) or getattr(store, "root", None) or ""
            typer.echo(f"{store.store_name}  ({store.kind})  {where}".rstrip())


RUCIO_PASSWORD_ENV = "ESAP_RUCIO_PASSWORD"


def _rucio_password(username: str | None) -> str | None:
    if username is None:
        return None
    password = os.environ.get(RUCIO_PASSWORD_ENV)
    if password:
        return password
    if not os.isatty(0):
        raise UserError(f"set {RUCIO_PASSWORD_ENV} to the Rucio password (never an argument)")
    return cast(str, typer.prompt("Rucio password", hide_input=True))


@add_store_app.command("rucio")
def add_rucio(
    name: Annotated[str, typer.Argument(help="Block name, used with --store / input_store.")],
    archive_rse: Annotated[str, typer.Option(help="RSE that run outputs are uploaded to.")],
    host: Annotated[
        str | None, typer.Option(help="Rucio server URL; default: the RUCIO_CONFIG file.")
    ] = None,
    auth_host: Annotated[str | None, typer.Option(help="Auth server URL; default host.")] = None,
    account: Annotated[str | None, typer.Option(help="Rucio account.")] = None,
    auth_type: Annotated[str, typer.Option(help="userpass, token or x509_proxy.")] = "userpass",
    username: Annotated[
        str | None,
        typer.Option(help=f"Userpass identity; the password comes from ${RUCIO_PASSWORD_ENV}."),
    ] = None,
    token_file: Annotated[
        Path | None, typer.Option(help="File holding a bearer token (auth type token).")
    ] = None,
    proxy: Annotated[Path | None, typer.Option(help="X.509 proxy (auth type x509_proxy).")] = None,
    ca_cert: Annotated[Path | None, typer.Option(help="CA bundle for https.")] = None,
    scope: Annotated[str, typer.Option(help="Scope of archived outputs and bare DIDs.")] = "esap",
    lifetime: Annotated[
        str, typer.Option(help="Lifetime of archive and staging rules, e.g. 30d; '' for none.")
    ] = "30d",
    overwrite: Overwrite = False,
) -> None:
    """Save a Rucio store (data lake) as a Prefect block; secrets never go on the command line."""
    from pydantic import SecretStr

    from blocks.rucio import RucioStore

    with _user_errors():
        token = None
        if token_file is not None:
            if not token_file.is_file():
                raise UserError(f"token file {token_file} does not exist")
            token = SecretStr(token_file.read_text().strip())
        password = _rucio_password(username) if auth_type == "userpass" and host else None
        try:
            store = RucioStore(
                rucio_host=host,
                auth_host=auth_host,
                account=account,
                auth_type=auth_type,
                username=username,
                password=SecretStr(password) if password else None,
                token=token,
                proxy_path=proxy.resolve() if proxy else None,
                ca_cert=ca_cert.resolve() if ca_cert else None,
                scope=scope,
                archive_rse=archive_rse,
                rule_lifetime=lifetime or None,
            )
        except ValidationError as exc:
            raise UserError(f"invalid Rucio store: {describe(exc)}") from None
        if auth_type == "token" and token is None:
            raise UserError("auth type token needs --token-file")
        try:
            store.save(name, overwrite=overwrite)
        except ValueError as exc:
            raise UserError(f"{exc} (use --overwrite to replace it)") from None
        _refresh_run_forms()
    typer.echo(f"saved Rucio store {name!r} ({host or 'from RUCIO_CONFIG'}, archive {archive_rse})")


@add_store_app.command("local")
def add_local(
    name: Annotated[str, typer.Argument(help="Block name; 'local' replaces the default archive.")],
    root: Annotated[
        Path, typer.Option(help="Results directory, shared by every worker and gateway host.")
    ],
    overwrite: Overwrite = False,
) -> None:
    """Save a local archive with its own root (a shared directory when hosts are several)."""
    from blocks.archive import LocalArchive

    with _user_errors():
        if not root.is_absolute():
            raise UserError(f"--root {root} must be an absolute path (every host reads it)")
        if not root.is_dir():
            raise UserError(f"--root {root} is not a directory")
        try:
            LocalArchive(root=root.resolve()).save(name, overwrite=overwrite)
        except ValueError:
            raise UserError(
                f"a store named {name!r} exists (use --overwrite to replace it)"
            ) from None
        _refresh_run_forms()
    typer.echo(f"saved local archive {name!r} (results in {root.resolve()})")


@app.command()
def plan(
    request: Annotated[
        Path, typer.Argument(help="Planner request JSON (tasktype, taskinfo, resources).")
    ],
    facility: Annotated[str | None, typer.Option(help="Ask only this facility.")] = None,
) -> None:
    """Answer an IVOA Execution Planner request against the facilities (YES/NO, offers)."""
    from planner.models import TaskRequest

    with _user_errors():
        try:
            task_request = TaskRequest.model_validate(read_json_object(request, "planner request"))
        except ParameterError as exc:
            raise UserError(str(exc)) from None
        except ValidationError as exc:
            raise UserError(f"invalid planner request: {describe(exc)}") from None
        from blocks.registry import list_facilities, load_facility
        from core.errors import UnknownBlockError
        from planner.matching import match

        try:
            candidates = [load_facility(facility)] if facility else list_facilities()
        except UnknownBlockError as exc:
            raise UserError(f"{exc}; known: {', '.join(exc.known)}") from None
    answer = match(task_request, [f.capabilities() for f in candidates])
    typer.echo(answer.model_dump_json(indent=2))


def _checked_number_settings() -> None:
    """UserError naming a crash-detection or outage setting out of its range."""
    from core import crashes
    from core.errors import FatalError
    from core.settings import outage_limit

    try:
        crashes.silence()
        crashes.retries()
        outage_limit()
    except FatalError as exc:
        raise UserError(str(exc)) from None


def _checked_settings() -> str | None:
    """The database URL, once it and the crash settings are known good (UserError)."""
    _checked_number_settings()
    try:
        return database_url()
    except ValueError as exc:
        raise UserError(str(exc)) from None


@contextmanager
def _stack(host: str, port: int, gateway_port: int | None, worker: bool = True) -> Iterator[Any]:
    with _user_errors():
        _checked_settings()
    os.environ["PREFECT_API_URL"] = f"http://{host}:{port}/api"
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from deployments.stack import EmbeddedStack, StackError

    stack = EmbeddedStack(
        private_home(),
        host=host,
        port=port,
        gateway_port=gateway_port,
        report=lambda line: typer.echo(f"  {line}", err=True),
        worker=worker,
    )
    with _user_errors(), temporary_settings({PREFECT_API_URL: stack.api_url}):
        try:
            stack.start()
        except StackError as exc:
            raise UserError(str(exc)) from None
        try:
            yield stack
        finally:
            stack.stop()


@app.command()
def demo(
    host: HostOption = "127.0.0.1", port: PortOption = 4200, gateway_port: GatewayPortOption = 8600
) -> None:
    """Start the embedded stack, run Hello World through its deployment, stop everything."""
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment

    from flows.registry import get_workflow

    wf = get_workflow("hello-world")
    with _stack(host, port, gateway_port) as stack:
        typer.echo(f"Prefect server up at {stack.ui_url}; running {wf.deployment} ...", err=True)
        flow_run = cast(FlowRun, run_deployment(wf.deployment, timeout=600, poll_interval=1))
        link = f"{stack.ui_url}/runs/flow-run/{flow_run.id}"
        state = flow_run.state
        if state is None or not state.is_completed():
            typer.echo(
                f"error: the run ended {state.name if state else 'unknown'}: "
                f"{state.message if state else ''}\n{link}",
                err=True,
            )
            raise typer.Exit(1)
        show(state.result())
        typer.echo(f"Prefect UI: {link}", err=True)


@app.command()
def up(
    host: HostOption = "127.0.0.1", port: PortOption = 4200, gateway_port: GatewayPortOption = 8600
) -> None:
    """Start the embedded stack and keep it running until Ctrl-C or SIGTERM."""
    stopping = _until_stopped()
    prefix = _gateway_settings().esap_prefix
    with _stack(host, port, gateway_port) as stack:
        esap = f"  ESAP:        {stack.gateway_url}{prefix}/uws/jobs/\n" if prefix else ""
        typer.echo(
            f"esap-prefect is up.\n  Prefect UI:  {stack.ui_url}\n"
            f"  Prefect API: {stack.api_url}\n"
            f"  gateway:     {stack.gateway_url}  (UWS at /uws/jobs, token: esap-prefect token)\n"
            f"{esap}"
            f"  home:        {home()}\n"
            f"  database:    {database_label(database_url())}\n"
            "Press Ctrl-C to stop."
        )
        stopping.wait()
        typer.echo("stopping ...", err=True)


def _until_stopped() -> threading.Event:
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    return stopping


@app.command()
def server(host: HostOption = "127.0.0.1", port: PortOption = 4200) -> None:
    """Start only the Prefect server (and its pools and deployments), for a split production.

    Its database is $ESAP_PREFECT_DATABASE_URL (PostgreSQL; migrated on start) or the home's
    SQLite. Workers (`esap-prefect worker`) and gateways (`esap-prefect gateway`) run apart.
    """
    stopping = _until_stopped()
    with _stack(host, port, None, worker=False) as stack:
        typer.echo(
            f"Prefect server is up.\n  Prefect UI:  {stack.ui_url}\n"
            f"  Prefect API: {stack.api_url}  (PREFECT_API_URL of workers and gateways)\n"
            f"  database:    {database_label(database_url())}\n"
            "Press Ctrl-C to stop."
        )
        stopping.wait()
        typer.echo("stopping ...", err=True)


@app.command()
def gateway(
    host: Annotated[str, typer.Option(help="Address the gateway listens on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the gateway.")] = 8600,
) -> None:
    """Start one gateway (UWS, ESAP's mount, planner, broker) against $PREFECT_API_URL.

    Gateways sharing $ESAP_PREFECT_DATABASE_URL serve the same jobs; one of them follows
    Prefect at a time. Logs on the terminal.
    """
    with _user_errors():
        if "PREFECT_API_URL" not in os.environ:
            raise UserError("no Prefect API: set PREFECT_API_URL or start esap-prefect up")
        label = database_label(_checked_settings())
        _check_credential(os.environ["PREFECT_API_URL"])
    from gateway.app import serve

    settings = _gateway_settings(host=host, port=port)
    typer.echo(
        f"gateway on http://{host}:{port} for {os.environ['PREFECT_API_URL']}; jobs in {label}",
        err=True,
    )
    serve(settings)


def _gateway_settings(**given: Any) -> GatewaySettings:
    """The gateway's settings from the environment; a wrong one is one line (exit 2)."""
    from core.errors import FatalError
    from gateway.settings import GatewaySettings

    with _user_errors():
        try:
            return GatewaySettings(**given)
        except (FatalError, ValueError) as exc:
            raise UserError(str(exc)) from None


def _check_credential(api: str) -> None:
    """UserError if the Prefect API refuses this host's credential (an unreachable one waits)."""
    import base64

    import httpx

    basic = base64.b64encode(api_auth_string().encode()).decode()
    try:
        answer = httpx.get(
            f"{api.rstrip('/')}/admin/version", headers={"Authorization": f"Basic {basic}"}
        )
    except httpx.TransportError:
        return  # the gateway retries a Prefect API that is still starting
    if answer.status_code == 401:
        raise UserError(REFUSED_CREDENTIAL.format(api=api).removeprefix("error: "))


@app.command()
def env() -> None:
    """Print the lines that point a shell at this home's Prefect API: `eval "$(esap-prefect env)"`.

    Only the home's owner gets them: they carry the API credential.
    """
    import shlex

    with _user_errors():
        if home().stat().st_uid != os.getuid():
            raise UserError(f"{home()} is not yours: only its owner may have its credential")
        api = os.environ.get("PREFECT_API_URL") or running_stack_api()
        if not api:
            raise UserError("no Prefect API: start esap-prefect up (or set PREFECT_API_URL)")
    typer.echo(f"export PREFECT_API_URL={shlex.quote(api)}")
    typer.echo(f"export {AUTH_VARIABLES[0]}={shlex.quote(api_auth_string())}")


@app.command()
def worker(
    pool: Annotated[str, typer.Option(help="Work pool to take flow runs from.")] = "local",
    limit: Annotated[int | None, typer.Option(min=1, help="Most flow runs at once.")] = None,
    name: Annotated[
        str | None,
        typer.Option(help="Worker name; keep it across restarts (a dirac worker adopts its runs)."),
    ] = None,
) -> None:
    """Start a worker of the pool's own type here (`prefect worker start`, logs on the terminal).

    The Prefect API is $PREFECT_API_URL, or the `up` running on this home.
    """
    if "PREFECT_API_URL" not in os.environ:
        typer.echo("error: no Prefect API: set PREFECT_API_URL or start esap-prefect up", err=True)
        raise typer.Exit(2)
    with _user_errors():
        _checked_number_settings()
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    from workers import KUBERNETES_TYPE

    with get_client(sync_client=True) as client:
        try:
            found = client.read_work_pool(pool)
        except ObjectNotFound:
            known = ", ".join(sorted(p.name for p in client.read_work_pools())) or "none"
            typer.echo(f"error: no work pool named {pool!r}; the server has: {known}", err=True)
            raise typer.Exit(2) from None
        except httpx.TransportError as exc:
            api = os.environ["PREFECT_API_URL"]
            typer.echo(f"error: the Prefect API at {api} does not answer ({exc})", err=True)
            raise typer.Exit(2) from None
    kind = found.type
    if kind == "docker":  # Prefect's own worker: say plainly when its image is missing
        _check_docker_pool(found.base_job_template)
    if kind == KUBERNETES_TYPE:  # cancelling a running flow run deletes its Job
        _check_cancel_grace()
        os.environ.setdefault("PREFECT_WORKER_ENABLE_CANCELLATION", "true")
        _observer_kubeconfig(pool, found.base_job_template)
    for handler in CONSOLE_HANDLERS:  # quiet for commands, not for a worker
        if os.environ.get(handler) == "CRITICAL":
            del os.environ[handler]
    prefect = str(Path(sys.executable).parent / "prefect")
    command = [prefect, "worker", "start", "--pool", pool, "--type", kind]
    command += ["--limit", str(limit)] if limit else []
    os.execv(prefect, [*command, *(["--name", name] if name else [])])


def _check_cancel_grace() -> None:
    from core.errors import FatalError
    from workers.kubernetes import engine_grace

    try:
        engine_grace()
    except FatalError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _observer_kubeconfig(pool: str, template: dict[str, Any]) -> None:
    """Point $KUBECONFIG at the pool's cluster (prefect-kubernetes' observer reads only that).

    The pool's `cluster_config` block is written to a private file in the home; a KUBECONFIG
    already set is left alone.
    """
    if "KUBECONFIG" in os.environ:
        return
    from deployments.kubernetes_pool import write_kubeconfig

    variables = template.get("variables", {}).get("properties", {})
    reference = (variables.get("cluster_config", {}).get("default") or {}).get("$ref", {})
    if reference.get("block_document_id"):
        os.environ["KUBECONFIG"] = str(write_kubeconfig(pool, reference["block_document_id"]))


def _check_docker_pool(template: dict[str, Any]) -> None:
    from core.errors import FatalError
    from deployments.runtime_image import check_docker_image

    variables = template.get("variables", {}).get("properties", {})
    image = str(variables.get("image", {}).get("default") or "")
    try:
        if not image:
            raise FatalError("the pool names no image: run `esap-prefect images build --docker`")
        check_docker_image(image)
    except FatalError as exc:
        typer.echo(f"error: the docker worker cannot start: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def token() -> None:
    """Print the gateway's bearer token for the local user (created on first use)."""
    from gateway.auth import local_token
    from gateway.settings import GatewaySettings

    typer.echo(local_token(GatewaySettings()))
