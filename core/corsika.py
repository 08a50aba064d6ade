"""CORSIKA 7 for CONCORDIA: build configurations (one container image each) and steering cards.

A card is rendered as CORSIKA reads it on standard input; keywords its build lacks are refused.
"""

from __future__ import annotations

import hashlib
import json
import math
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

RUN_PLACEHOLDER = "@RUN@"
"""Where a card template takes the run number (six digits). Not `%s`: DIRAC's parametric jobs
fill `%s` in JDL only, so each job fills its card itself (`sed s/@RUN@/<run>/g`)."""
MAX_RUN = 999_999


class HighEnergyModel(StrEnum):
    """High-energy hadronic interaction models (chosen when CORSIKA is compiled)."""

    QGSJET_II_04 = "QGSJET-II-04"
    QGSJET_III = "QGSJET-III"
    EPOS_LHC = "EPOS-LHC"
    SIBYLL_23D = "SIBYLL-2.3d"

    @property
    def short(self) -> str:
        """The name part of CTAO's executables, e.g. qgs2 in corsika_qgs2_urqmd_baseline."""
        return {
            "QGSJET-II-04": "qgs2",
            "QGSJET-III": "qgs3",
            "EPOS-LHC": "epos",
            "SIBYLL-2.3d": "sibyll",
        }[self.value]


class LowEnergyModel(StrEnum):
    """Low-energy hadronic interaction models."""

    URQMD = "URQMD"
    FLUKA = "FLUKA"
    GHEISHA = "GHEISHA"

    @property
    def short(self) -> str:
        return self.value.lower()


class BuildOption(StrEnum):
    """CORSIKA options compiled in; they decide which card keywords the executable reads."""

    IACT = "IACT"
    THIN = "THIN"
    CURVED = "CURVED"
    VOLUMEDET = "VOLUMEDET"
    VIEWCONE = "VIEWCONE"


class CpuFlavour(StrEnum):
    """The instruction set the executable is compiled for."""

    GENERIC = "generic"
    AVX2 = "avx2"
    AVX512 = "avx512"


PRIMARIES: dict[str, int] = {
    "gamma": 1,
    "positron": 2,
    "electron": 3,
    "muon+": 5,
    "muon-": 6,
    "neutron": 13,
    "proton": 14,
    "helium": 402,
    "carbon": 1206,
    "nitrogen": 1407,
    "oxygen": 1608,
    "silicon": 2814,
    "iron": 5626,
}
"""Primaries by name and their CORSIKA PRMPAR codes (nuclei: A x 100 + Z)."""
Primary = Literal[
    "gamma",
    "positron",
    "electron",
    "muon+",
    "muon-",
    "neutron",
    "proton",
    "helium",
    "carbon",
    "nitrogen",
    "oxygen",
    "silicon",
    "iron",
]

NEEDS: dict[str, BuildOption] = {
    "TELESCOPE": BuildOption.IACT,
    "CSCAT": BuildOption.IACT,
    "ATMOSPHERE": BuildOption.IACT,
    "VIEWCONE": BuildOption.VIEWCONE,
    "THIN": BuildOption.THIN,
}
"""Card keywords an executable reads only when built with the option."""


class BuildConfig(BaseModel):
    """One CORSIKA build: what `coconut` is told; one image per configuration."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Annotated[int, Field(ge=60000, le=79999)] = 77550
    high_energy_model: HighEnergyModel = HighEnergyModel.QGSJET_II_04
    low_energy_model: LowEnergyModel = LowEnergyModel.URQMD
    options: tuple[BuildOption, ...] = (BuildOption.IACT,)
    cpu: CpuFlavour = CpuFlavour.GENERIC

    @model_validator(mode="after")
    def _options_sorted(self) -> Self:
        if len(set(self.options)) != len(self.options):
            raise ValueError("build options are listed twice")
        object.__setattr__(self, "options", tuple(sorted(self.options)))
        return self

    @property
    def variant(self) -> str:
        """`iact-thin`, or `baseline` with no option."""
        return "-".join(o.value.lower() for o in self.options) or "baseline"

    @property
    def executable(self) -> str:
        """CTAO's naming: corsika_<he>_<le>_<variant>[_<cpu>]."""
        cpu = "" if self.cpu is CpuFlavour.GENERIC else f"_{self.cpu.value}"
        return (
            f"corsika_{self.high_energy_model.short}_{self.low_energy_model.short}_"
            f"{self.variant}{cpu}"
        )

    def key(self, recipe_digest: str) -> str:
        """The image key: a digest of the recipe and this configuration (24 hex)."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(f"{recipe_digest}\n{canonical}".encode()).hexdigest()[:24]

    def refuse_missing(self, keywords: set[str]) -> None:
        """ValueError naming every keyword this build cannot read."""
        lacking = sorted(k for k in keywords if k in NEEDS and NEEDS[k] not in self.options)
        if lacking:
            needed = ", ".join(f"{k} (it needs the {NEEDS[k].value} option)" for k in lacking)
            built = ", ".join(o.value for o in self.options) or "no options"
            raise ValueError(f"the CORSIKA build ({built}) cannot read {needed}")


class Telescope(BaseModel):
    """One IACT telescope: position of its centre and radius of its sphere, in metres."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    x: float = Field(ge=-100_000, le=100_000, allow_inf_nan=False)
    y: float = Field(ge=-100_000, le=100_000, allow_inf_nan=False)
    z: float = Field(ge=-1_000, le=1_000, allow_inf_nan=False)
    radius: float = Field(gt=0, le=100, allow_inf_nan=False)


class Thinning(BaseModel):
    """THIN: energy fraction, largest weight, radius of no thinning (metres)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fraction: float = Field(gt=0, le=1, allow_inf_nan=False)
    max_weight: float = Field(gt=0, le=1e12, allow_inf_nan=False)
    radius: float = Field(ge=0, le=100_000, allow_inf_nan=False)


def _number(value: float) -> str:
    """A real as Fortran's list-directed read takes it, with no precision lost."""
    return repr(float(value))


class SteeringCard(BaseModel):
    """CORSIKA's input card for one run: every keyword checked; seeds derived from the run.

    Lengths are in metres and angles in degrees here; the card gets CORSIKA's centimetres.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    run: Annotated[int, Field(ge=1, le=MAX_RUN)]
    first_event: Annotated[int, Field(ge=1, le=10_000_000)] = 1
    showers: Annotated[int, Field(ge=1, le=1_000_000)]
    primary: Annotated[int, Field(ge=1, le=5999)]
    slope: float = Field(ge=-10, le=0, allow_inf_nan=False)
    energy_min: float = Field(gt=0, le=1e11, allow_inf_nan=False, description="GeV")
    energy_max: float = Field(gt=0, le=1e11, allow_inf_nan=False, description="GeV")
    zenith: tuple[float, float] = (20.0, 20.0)
    azimuth: tuple[float, float] = (0.0, 0.0)
    viewcone: tuple[float, float] | None = None
    observation_level: float = Field(ge=-12_000, le=100_000, allow_inf_nan=False)
    magnetic_field: tuple[float, float] = (20.0, 42.8)
    atmosphere: Annotated[int, Field(ge=1, le=99)] | None = None
    scatter: tuple[int, float, float] | None = None
    telescopes: tuple[Telescope, ...] = ()
    thinning: Thinning | None = None

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        if self.primary not in PRIMARIES.values():
            raise ValueError(f"PRMPAR {self.primary} is not a primary this workflow knows")
        if self.energy_max < self.energy_min:
            raise ValueError(
                f"energy range upside down: maximum {self.energy_max:g} GeV is below "
                f"minimum {self.energy_min:g} GeV"
            )
        _range("zenith", self.zenith, 0, 90)
        _range("azimuth", self.azimuth, -360, 360)
        if self.viewcone is not None:
            _range("view cone", self.viewcone, 0, 180)
        for name, value in zip(("BX", "BZ"), self.magnetic_field, strict=True):
            if not -100 <= value <= 100:
                raise ValueError(f"magnetic field {name} {value} µT is outside -100..100")
        if self.scatter is not None:
            reuse, x, y = self.scatter
            if not 1 <= reuse <= 100 or not (0 <= x <= 100_000 and 0 <= y <= 100_000):
                raise ValueError("CSCAT: 1-100 uses, radii 0-100000 m")
        if len(self.telescopes) > 1000:
            raise ValueError(f"{len(self.telescopes)} telescopes: at most 1000")
        if self.telescopes and self.scatter is None:
            raise ValueError("telescopes need a core scatter area (CSCAT)")
        return self

    @property
    def keywords(self) -> set[str]:
        """The keywords that depend on build options this card uses."""
        used = {"TELESCOPE"} if self.telescopes else set()
        used |= {"CSCAT"} if self.scatter else set()
        used |= {"ATMOSPHERE"} if self.atmosphere is not None else set()
        used |= {"VIEWCONE"} if self.viewcone is not None else set()
        return used | ({"THIN"} if self.thinning else set())

    def for_build(self, build: BuildConfig) -> Self:
        """The card, refused when it uses a keyword the build cannot read."""
        build.refuse_missing(self.keywords)
        return self

    def render(self) -> str:
        """The card as CORSIKA reads it: one keyword per line, lengths in cm, ending in EXIT."""
        return self._lines(f"{self.run:06d}")

    def template(self) -> str:
        """The card with the run number left as RUN_PLACEHOLDER: each job of an array fills it."""
        return self._lines(RUN_PLACEHOLDER)

    def _lines(self, run: str) -> str:
        lines = [
            f"RUNNR   {run}",
            f"EVTNR   {self.first_event}",
            f"NSHOW   {self.showers}",
            f"PRMPAR  {self.primary}",
            f"ESLOPE  {_number(self.slope)}",
            f"ERANGE  {_number(self.energy_min)} {_number(self.energy_max)}",
            f"THETAP  {_number(self.zenith[0])} {_number(self.zenith[1])}",
            f"PHIP    {_number(self.azimuth[0])} {_number(self.azimuth[1])}",
        ]
        if self.viewcone is not None:
            lines.append(f"VIEWCONE {_number(self.viewcone[0])} {_number(self.viewcone[1])}")
        # three sequences, each seed = run x 10 + k (written as the run's six digits and k)
        lines += [f"SEED    {run}{k} 0 0" for k in (1, 2, 3)]
        lines += [
            f"OBSLEV  {_number(self.observation_level * 100)}",
            f"MAGNET  {_number(self.magnetic_field[0])} {_number(self.magnetic_field[1])}",
        ]
        if self.atmosphere is not None:
            lines.append(f"ATMOSPHERE {self.atmosphere} T")
        if self.thinning is not None:
            t = self.thinning
            lines.append(
                f"THIN    {_number(t.fraction)} {_number(t.max_weight)} {_number(t.radius * 100)}"
            )
        if self.scatter is not None:
            reuse, x, y = self.scatter
            lines.append(f"CSCAT   {reuse} {_number(x * 100)} {_number(y * 100)}")
        lines += [
            f"TELESCOPE {_number(t.x * 100)} {_number(t.y * 100)} {_number(t.z * 100)} "
            f"{_number(t.radius * 100)}"
            for t in self.telescopes
        ]
        return "\n".join([*lines, "DIRECT  ./", "EXIT", ""])

    @property
    def digest(self) -> str:
        """sha256 of the rendered card: what "rerun exactly this" compares."""
        return hashlib.sha256(self.render().encode()).hexdigest()


def _range(what: str, bounds: tuple[float, float], low: float, high: float) -> None:
    first, last = bounds
    for value in bounds:
        if not (math.isfinite(value) and low <= value <= high):
            raise ValueError(f"{what} {value} is outside {low:g}..{high:g} degrees")
    if last < first:
        raise ValueError(f"{what} range upside down: {last:g} is below {first:g}")


class ParticleFile(BaseModel):
    """What a CORSIKA particle file says about its run (read with corsikaio)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run: int
    showers: int
    primary: int
    energy_min: float
    energy_max: float


def read_particle_file(path: Path) -> ParticleFile:
    """Read a CORSIKA 7 particle file through: its run, showers, primary and energies.

    Raises:
        ValueError: the file is not a whole CORSIKA particle file, or mixes primaries.
    """
    from corsikaio import CorsikaParticleFile

    try:
        with CorsikaParticleFile(str(path)) as data:
            run = int(data.run_header["run_number"])
            primaries, energies = set(), []
            for event in data:
                primaries.add(int(event.header["particle_id"]))
                energies.append(float(event.header["total_energy"]))
            counted = int(data.run_end["n_events"].item())  # a record, or an array of one
    except (OSError, ValueError, StopIteration) as exc:
        raise ValueError(f"{path.name} is not a whole CORSIKA particle file: {exc}") from None
    if len(primaries) > 1:
        raise ValueError(f"{path.name} mixes primaries {sorted(primaries)}")
    if not energies or counted != len(energies):
        raise ValueError(f"{path.name}: its run end counts {counted} showers, not {len(energies)}")
    return ParticleFile(
        run=run,
        showers=len(energies),
        primary=primaries.pop(),
        energy_min=min(energies),
        energy_max=max(energies),
    )
