"""The `esap-prefect` command as a user runs it: results, listings and clear errors."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import cast

import pytest

from blocks.rucio import RucioStore
from tests.credential import api_credential
from tests.servers.rucio import RucioServer

CLI = str(Path(sys.executable).parent / "esap-prefect")


def cli(
    *args: str, api: str | None = None, timeout: float = 180, home: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    if api:
        env |= {"PREFECT_API_URL": api, **api_credential()}
    if home:
        env["ESAP_PREFECT_HOME"] = str(home)
    return subprocess.run(
        [CLI, *args], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )


def assert_clean_error(done: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert done.returncode == 2, done
    assert "Traceback" not in done.stderr
    for fragment in fragments:
        assert fragment in done.stderr, done.stderr


def test_run_prints_the_result_as_json(prefect_api: str) -> None:
    done = cli(
        "run", "hello-world", "-p", "Parameter1=999", "-p", "Parameter5=two words", api=prefect_api
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["output"]["Parameter1"] == 999
    assert result["output"]["Parameter5"] == "two words"
    assert result["output"]["type"] == "batch.submit"
    assert result["job"]["state"] == "COMPLETED"


def test_run_takes_a_params_file_and_a_facility(prefect_api: str, tmp_path: Path) -> None:
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"Parameter4": "from-file", "Parameter2": 7}))
    done = cli(
        "run",
        "hello-world",
        "--params-file",
        str(params),
        "-p",
        "Parameter2=8",
        "--facility",
        "local",
        api=prefect_api,
    )
    assert done.returncode == 0, done.stderr
    output = json.loads(done.stdout)["output"]
    assert (output["Parameter4"], output["Parameter2"]) == ("from-file", 8)


def test_wrong_type_names_the_parameter(prefect_api: str) -> None:
    done = cli("run", "hello-world", "-p", "Parameter1=abc", api=prefect_api)
    assert_clean_error(
        done, "invalid parameter for hello-world", "Parameter1", "valid integer", "'abc'"
    )


def test_unknown_workflow_lists_the_known_ones() -> None:
    assert_clean_error(
        cli("run", "hello-universe"),
        "unknown workflow 'hello-universe'",
        "known workflows: concordia, cta-mc-production, data-staging, hello-world",
    )


def test_json_of_the_wrong_shape_is_refused() -> None:
    assert_clean_error(
        cli("run", "hello-world", "-p", "Parameter5=[1, 2]"),
        "Parameter5: Input should be a valid string (got [1, 2])",
    )


def test_unknown_parameter_lists_the_accepted_ones() -> None:
    assert_clean_error(
        cli("run", "hello-world", "-p", "Parameter9=1"),
        "hello-world has no parameter Parameter9",
        "it takes: Parameter1",
    )


def test_unknown_facility_is_refused_before_the_run(prefect_api: str) -> None:
    done = cli("run", "hello-world", "--facility", "mars", api=prefect_api)
    assert_clean_error(done, "no facility named 'mars'; known: local")
    store = cli("run", "hello-world", "-p", "store=attic", api=prefect_api)
    assert_clean_error(store, "no store named 'attic'; known: local")


def test_a_run_that_fails_is_one_error_line_and_the_ui_link(prefect_api: str) -> None:
    done = cli("run", "run-container", "-p", "image=x", api=prefect_api)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("error: run-container ended Failed: no facility can run")
    assert lines[1].startswith(f"Prefect UI: {prefect_api.removesuffix('/api')}/runs/flow-run/")
    assert len(lines) == 2 and "Traceback" not in done.stderr
    verbose = cli("-v", "run", "run-container", "-p", "image=x", api=prefect_api)
    assert "Traceback" in verbose.stderr, "-v shows Prefect's logs and the traceback"


def test_a_typo_is_refused_before_prefect_is_imported(tmp_path: Path) -> None:
    broken = tmp_path / "broken" / "prefect"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('prefect imported too early')\n")
    env = {"PYTHONPATH": str(broken.parent)}
    typo = cli_with(env, "wrokflows", home=tmp_path / "home")
    assert typo.returncode == 2 and "No such command 'wrokflows'" in typo.stderr
    assert "too early" not in typo.stderr
    bad = cli_with(env, "run", "hello-world", "--no-such-option", home=tmp_path / "home")
    assert bad.returncode == 2 and "No such option" in bad.stderr


def test_plan_answers_the_seed_request(prefect_api: str, tmp_path: Path) -> None:
    request = tmp_path / "request.json"
    request.write_text(
        json.dumps(
            {
                "tasktype": "uri://executable",
                "taskinfo": {"executable": "python3"},
                "resources": {"mincores": 1, "maxduration": "10m"},
            }
        )
    )
    done = cli("plan", str(request), api=prefect_api)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["reponseword"] == "YES"
    assert answer["serviceinfo"]["facility"] == "local"
    assert answer["resources"]["maxduration"] == "10m"
    request.write_text(
        json.dumps(
            {
                "tasktype": "uri://kubernetes-helm",
                "taskinfo": {"chart": "c"},
                "resources": {"mincores": 220},
            }
        )
    )
    answer = json.loads(cli("plan", str(request), api=prefect_api).stdout)
    assert answer["reponseword"] == "NO"
    assert "does not run uri://kubernetes-helm" in answer["reasons"]["local"]


def test_malformed_planner_request_names_the_field(tmp_path: Path) -> None:
    request = tmp_path / "bad.json"
    request.write_text(
        json.dumps(
            {
                "tasktype": "uri://docker-container",
                "taskinfo": {"image": "x"},
                "resources": {"mincores": "eight"},
            }
        )
    )
    assert_clean_error(
        cli("plan", str(request)), "invalid planner request", "resources.mincores", "(got 'eight')"
    )
    request.write_text(json.dumps({"tasktype": "uri://docker-container", "taskinfo": {}}))
    assert_clean_error(
        cli("plan", str(request)),
        "taskinfo does not fit uri://docker-container",
        "taskinfo.image: Field required",
    )
    request.write_text("{not json")
    assert_clean_error(cli("plan", str(request)), "is not valid JSON")


def test_workflows_and_facilities_are_listed(prefect_api: str) -> None:
    done = cli("workflows", api=prefect_api)
    assert done.returncode == 0
    assert "hello-world  (deployment hello-world/local)" in done.stdout
    assert "Parameter3: integer = 33" in done.stdout
    assert "particle: one of gamma|gamma-diffuse|electron|proton|helium|muon" in done.stdout
    assert "runs: integer = 100 (deployment; flow default 10)" in done.stdout
    assert "walltime: duration (e.g. 10m, 9h30m) = 1h" in done.stdout
    done = cli("facilities", api=prefect_api)
    assert done.returncode == 0
    assert "local  (local)  runs uri://executable; up to" in done.stdout
    assert " GiB and 1 d per job" in done.stdout


def test_a_port_in_use_is_a_clean_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = cli("demo", "--port", str(port), home=tmp_path, timeout=60)
    assert_clean_error(done, f"port {port} on 127.0.0.1 is already in use")


def test_a_rucio_store_is_added_with_the_password_from_the_environment(
    prefect_api: str, rucio_server: RucioServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["stores", "add", "rucio", "cli-lake", "--host", rucio_server.url]
    args += ["--account", "root", "--username", rucio_server.user]
    args += ["--archive-rse", "ESAP_ARCHIVE", "--lifetime", "3d", "--overwrite"]
    monkeypatch.delenv("ESAP_RUCIO_PASSWORD", raising=False)
    assert_clean_error(cli(*args, api=prefect_api), "set ESAP_RUCIO_PASSWORD")
    monkeypatch.setenv("ESAP_RUCIO_PASSWORD", rucio_server.password)
    done = cli(*args, api=prefect_api)
    assert done.returncode == 0, done.stderr
    assert "saved Rucio store 'cli-lake'" in done.stdout
    listed = cli("stores", api=prefect_api)
    assert f"cli-lake  (rucio)  {rucio_server.url}" in listed.stdout
    assert "local  (local)" in listed.stdout
    monkeypatch.setenv("PREFECT_API_URL", prefect_api)
    try:
        store = cast(RucioStore, RucioStore.load("cli-lake"))
        assert store.rule_lifetime == 3 * 86400
        rucio_server.seed_dataset("cli-ds", {"cli-ds/a": b"a"}, "ESAP_ARCHIVE")
        staged = store.stage_in(["cli-ds"], "ESAP_ARCHIVE")
        assert [f.did for f in staged.files] == ["esap:cli-ds/a"]
    finally:
        RucioStore.delete("cli-lake")  # other tests rely on 'the only saved Rucio store'
    bad = cli("stores", "add", "rucio", "x", "--archive-rse", "A", "--auth-type", "kerberos")
    assert_clean_error(bad, "invalid Rucio store", "auth_type")


def test_every_command_works_on_a_fresh_home_without_a_stack(
    tmp_path: Path, singularity: Path
) -> None:
    home = tmp_path / "fresh"
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"tasktype": "uri://executable",
                                   "taskinfo": {"executable": "python3"}}))  # fmt: skip
    for args, expected in (
        (("workflows",), "hello-world  (deployment hello-world/local)"),
        (("facilities",), "local  (local)  runs uri://executable"),
        (("stores",), "local  (local)"),
        (("plan", str(request)), '"reponseword": "YES"'),
    ):
        done = cli(*args, home=home)
        assert done.returncode == 0 and expected in done.stdout, (args, done.stderr)
        assert "Traceback" not in done.stderr
    assert not (home / "prefect.db").exists(), "reading nothing needs no Prefect server"
    # the first write starts a temporary server whose database is created and migrated
    added = cli("facilities", "add", "apptainer", "sif", "--singularity", str(singularity),
                home=home, timeout=400)  # fmt: skip
    assert added.returncode == 0 and "saved Apptainer facility 'sif'" in added.stdout, added
    listed = cli("facilities", home=home, timeout=400)
    assert listed.returncode == 0 and "sif  (apptainer)" in listed.stdout, listed.stderr
    assert "Traceback" not in added.stderr + listed.stderr


def test_input_a_workflow_refuses_is_refused_before_its_run(tmp_path: Path) -> None:
    done = cli("run", "data-staging", "-p", 'inputs=["esap:*"]', "-p", "target=X",
               home=tmp_path / "home")  # fmt: skip
    assert_clean_error(done, "inputs: 'esap:*' contains a wildcard")
    assert len(done.stderr.strip().splitlines()) == 1
    empty = cli("run", "data-staging", "-p", "inputs=[]", "-p", "target=X", home=tmp_path / "h")
    assert_clean_error(empty, "inputs")
    assert not (tmp_path / "home" / "prefect.db").exists(), "no run was started"


def test_rucio_config_alone_stages_and_archives(rucio_server: RucioServer, tmp_path: Path) -> None:
    from tests.test_rucio_staging import seed

    seed(rucio_server, "cfgonly", 1)
    env = {
        "RUCIO_CONFIG": str(rucio_server.client_config(tmp_path / "rucio.cfg")),
        "ESAP_RUCIO_ARCHIVE_RSE": "ESAP_ARCHIVE",
    }
    done = cli_with(env, "run", "hello-world", "-p", 'inputs=["esap:cfgonly"]', "-p",
                    "store=rucio", home=tmp_path / "home", timeout=400)  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    [seen] = result["output"]["inputs"]
    assert seen["name"] == "esap:cfgonly/f000.dat" and seen["bytes"] == len("cfgonly file 0\n")
    assert result["archived"][0]["location"].startswith("rucio:esap:hello-world/")
    listed = cli_with(env, "stores", home=tmp_path / "home")
    assert "rucio  (rucio)" in listed.stdout, listed.stderr


def cli_with(
    env: dict[str, str], *args: str, home: Path, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    full |= {**env, "ESAP_PREFECT_HOME": str(home)}
    if "PREFECT_API_URL" in env:
        full |= api_credential()
    return subprocess.run(
        [CLI, *args], capture_output=True, text=True, env=full, timeout=timeout, check=False
    )


def test_concordia_refuses_a_range_upside_down_and_a_keyword_the_build_lacks() -> None:
    assert_clean_error(
        cli("run", "concordia", "-p", "energy_range=[1000, 10]"),
        "invalid parameters for concordia",
        "energy range upside down: maximum 10 GeV is below minimum 1000 GeV",
    )
    assert_clean_error(
        cli("run", "concordia", "-p", "viewcone=[0, 5]", "-p", 'options=["IACT"]'),
        "cannot read VIEWCONE (it needs the VIEWCONE option)",
    )


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("ESAP_PREFECT_CRASH_RETRIES", "nan", "give a whole number from 0 to 10"),
        ("ESAP_PREFECT_CRASH_RETRIES", "1.5", "give a whole number from 0 to 10"),
        ("ESAP_PREFECT_CRASH_RETRIES", "11", "give a whole number from 0 to 10"),
        ("ESAP_PREFECT_CRASH_AFTER", "30", "give seconds from 45 to 86400"),
        ("ESAP_PREFECT_CRASH_AFTER", "inf", "give seconds from 45 to 86400"),
        ("ESAP_PREFECT_CRASH_AFTER", "soon", "give seconds from 45 to 86400"),
        ("ESAP_PREFECT_OUTAGE_LIMIT", "-5", "give seconds from 10 to 86400"),
    ],
)
def test_bad_crash_settings_are_refused_by_every_long_running_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    api = "http://127.0.0.1:9/api"  # never reached: the settings are checked first
    every = [["worker", "--pool", "local"], ["gateway"], ["server"]]
    for command in every if value == "nan" else every[:1]:
        done = cli(*command, api=api, home=tmp_path, timeout=60)
        assert_clean_error(done, f"{variable}={value!r}", expected)


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("ESAP_GATEWAY_HEADER_SECONDS", "abc", "ESAP_GATEWAY_HEADER_SECONDS='abc': give seconds"),
        ("ESAP_GATEWAY_BODY_SECONDS", "0", "ESAP_GATEWAY_BODY_SECONDS='0'"),
        ("ESAP_GATEWAY_CORS_ORIGINS", "*", "ESAP_GATEWAY_CORS_ORIGINS: '*' is not an origin"),
    ],
)
def test_a_wrong_gateway_setting_is_one_line_from_up_and_gateway(
    variable: str, value: str, named: str, tmp_path: Path
) -> None:
    for command in (["up", "--port", "1"], ["gateway", "--port", "1"]):
        done = cli_with(
            {variable: value, "PREFECT_API_URL": "http://127.0.0.1:1/api"}, *command, home=tmp_path
        )
        assert_clean_error(done, named)
