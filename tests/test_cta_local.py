"""CTA Monte Carlo production on the local facility: outputs, skipping, checks, summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.cta_mc_production import Moon, ProductionConfig, archived_runs, cta_mc_production
from tests.test_flows import artifacts_of

pytestmark = pytest.mark.usefixtures("prefect_api")


def test_runs_are_simulated_archived_and_not_repeated() -> None:
    first = cta_mc_production(runs=3, first_run=10, showers_per_run=5, moon=Moon.FULL)
    assert first.simulated == [10, 11, 12] and first.already_archived == []
    names = {a.name for a in first.archived}
    assert "run000011/run000011.simtel.json" in names
    simtel = next(a for a in first.archived if a.name == "run000011/run000011.simtel.json")
    assert json.loads(Path(simtel.location.removeprefix("file://")).read_text())["nsb"] == 19.0
    log = next(a for a in first.archived if a.name == "run000011/stdout.log")
    assert "run000011: 5 showers of gamma" in Path(log.location.removeprefix("file://")).read_text()
    again = cta_mc_production(runs=4, first_run=10, showers_per_run=5, moon=Moon.FULL)
    assert again.already_archived == [10, 11, 12] and again.simulated == [13]
    other = cta_mc_production(runs=1, first_run=10, showers_per_run=5, moon=Moon.DARK)
    assert other.simulated == [10], "another configuration is another simulation"


def test_the_summary_artifact_counts_the_runs() -> None:
    state = cta_mc_production(runs=2, first_run=40, showers_per_run=3, return_state=True)
    result = state.result()
    assert result.simulated == [40, 41]
    summary = str(artifacts_of(str(state.state_details.flow_run_id))["cta-mc-summary"])
    assert "| simulated now | 2 |" in summary and result.archive_key in summary


def test_corsika_only_needs_no_simtel_output() -> None:
    config = ProductionConfig(
        site="Paranal",
        particle="gamma",
        pointing="North",
        zenith_angle=20,
        moon="dark",
        array_layout="L",
        showers_per_run=1,
        corsika_only=True,
        software_version="v",
    )
    names = [
        "run000001/run000001.corsika.json",
        "run000002/run000002.simtel.json",
        "run000003/run000003.corsika.json",
        "run000003/run000003.simtel.json",
        "junk",
    ]
    assert archived_runs(config, names) == {1, 3}
    full = config.model_copy(update={"corsika_only": False})
    assert archived_runs(full, names) == {3}
    assert config.key != full.key


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"zenith_angle": 75}, "zenith_angle"),
        ({"array_layout": "a b"}, "array_layout"),
        ({"runs": 0}, "runs"),
        ({"first_run": 999_999, "runs": 2}, "up to 999999"),
    ],
)
def test_out_of_range_parameters_are_refused(params: dict[str, object], message: str) -> None:
    with pytest.raises(Exception, match=message):
        cta_mc_production(**params)  # type: ignore[call-overload]
