#!/usr/bin/env python3
"""A stand-in for a CORSIKA 7 executable (tests only): the steering card on standard input,
a CORSIKA particle file DAT<run> in the DIRECT folder and a log on standard output.

No physics: energies follow the card's spectrum, each shower gets a few particles. Keywords
the build was not configured for are refused, as the options file beside it says.
"""

from __future__ import annotations

import math
import random
import struct
import sys
import time
from pathlib import Path

SUBBLOCK = 273
PER_RECORD = 21
NEEDS = {
    "TELESCOPE": "IACT",
    "CSCAT": "IACT",
    "ATMOSPHERE": "IACT",
    "VIEWCONE": "VIEWCONE",
    "THIN": "THIN",
}
KNOWN = {
    "RUNNR",
    "EVTNR",
    "NSHOW",
    "PRMPAR",
    "ESLOPE",
    "ERANGE",
    "THETAP",
    "PHIP",
    "SEED",
    "OBSLEV",
    "MAGNET",
    "DIRECT",
    "EXIT",
    *NEEDS,
}


def build_options() -> dict[str, str]:
    options = Path(sys.argv[0] + ".options")
    pairs = (line.split("=", 1) for line in options.read_text().splitlines() if "=" in line)
    return dict(pairs)


def read_card(options: set[str]) -> dict[str, list[list[str]]]:
    card: dict[str, list[list[str]]] = {}
    for number, line in enumerate(sys.stdin, start=1):
        words = line.split()
        if not words:
            continue
        key = words[0].upper()
        if key not in KNOWN:
            sys.exit(f" CORSIKA stand-in: line {number}: unknown keyword {key}")
        if key in NEEDS and NEEDS[key] not in options:
            sys.exit(f" CORSIKA stand-in: keyword {key} needs the {NEEDS[key]} option")
        card.setdefault(key, []).append(words[1:])
        if key == "EXIT":
            break
    for required in ("RUNNR", "NSHOW", "PRMPAR", "ERANGE", "EXIT"):
        if required not in card:
            sys.exit(f" CORSIKA stand-in: the card has no {required}")
    return card


class Writer:
    """Sub-blocks of 273 floats, 21 to a Fortran record (length markers around it)."""

    def __init__(self, path: Path) -> None:
        self.handle = path.open("wb")
        self.pending: list[bytes] = []

    def subblock(self, tag: bytes, values: dict[int, float]) -> None:
        floats = [0.0] * SUBBLOCK
        for position, value in values.items():
            floats[position - 1] = value
        data = bytearray(struct.pack(f"<{SUBBLOCK}f", *floats))
        if tag:
            data[:4] = tag
        self.pending.append(bytes(data))
        if len(self.pending) == PER_RECORD:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        while len(self.pending) < PER_RECORD:
            self.pending.append(bytes(4 * SUBBLOCK))
        record = b"".join(self.pending)
        marker = struct.pack("<i", len(record))
        self.handle.write(marker + record + marker)
        self.pending = []

    def close(self) -> None:
        self.flush()
        self.handle.close()


def sample_energy(rng: random.Random, low: float, high: float, slope: float) -> float:
    u = rng.random()
    if abs(slope + 1) < 1e-9:
        return float(low * (high / low) ** u)
    g = slope + 1
    return float((low**g + u * (high**g - low**g)) ** (1 / g))


def main() -> int:
    built = build_options()
    options = set(built.get("OPTIONS", "").replace(",", " ").split())
    card = read_card(options)
    run = int(card["RUNNR"][0][0])
    first = int(card.get("EVTNR", [["1"]])[0][0])
    showers = int(card["NSHOW"][0][0])
    primary = float(card["PRMPAR"][0][0])
    low, high = (float(x) for x in card["ERANGE"][0][:2])
    slope = float(card.get("ESLOPE", [["-1"]])[0][0])
    theta = [float(x) for x in card.get("THETAP", [["0", "0"]])[0][:2]]
    phi = [float(x) for x in card.get("PHIP", [["0", "0"]])[0][:2]]
    obslev = float(card.get("OBSLEV", [["11000"]])[0][0])
    seed = int(card.get("SEED", [["1"]])[0][0])
    folder = Path(card.get("DIRECT", [["./"]])[0][0])
    version = int(built.get("VERSION", "77550")) / 10000
    rng = random.Random(seed)
    print(f" CORSIKA stand-in {version:.4f} ({built.get('HE')} + {built.get('LE')})")
    print(f" RUN NUMBER {run}, {showers} SHOWERS OF PRIMARY {int(primary)}")
    out = Writer(folder / f"DAT{run:06d}")
    date = float(time.strftime("%y%m%d"))
    common = {16: slope, 17: low, 18: high}
    out.subblock(
        b"RUNH",
        {2: run, 3: date, 4: version, 5: 1, 6: obslev, **common, 93: showers},
    )
    for event in range(first, first + showers):
        energy = sample_energy(rng, low, high, slope)
        zenith = math.radians(rng.uniform(*theta))
        azimuth = math.radians(rng.uniform(*phi))
        particles = [
            [
                rng.choice((1, 2, 3, 5, 6)) * 1000 + 1,
                rng.gauss(0, 1),
                rng.gauss(0, 1),
                energy * rng.random() / 10,
                rng.gauss(0, 5000),
                rng.gauss(0, 5000),
                100.0,
            ]
            for _ in range(rng.randint(3, 30))
        ]
        out.subblock(
            b"EVTH",
            {
                2: event,
                3: primary,
                4: energy,
                11: zenith,
                12: azimuth,
                44: run,
                45: date,
                46: version,
                47: 1,
                48: obslev,
                58: slope,
                59: low,
                60: high,
            },
        )
        for start in range(0, len(particles), 39):
            values = {}
            for index, row in enumerate(particles[start : start + 39]):
                for column, value in enumerate(row):
                    values[1 + 7 * index + column] = value
            out.subblock(b"", values)
        out.subblock(b"EVTE", {2: event, 7: len(particles)})
        print(f" EVENT {event}: E = {energy:.6g} GeV, {len(particles)} PARTICLES")
    out.subblock(b"RUNE", {2: run, 3: showers})
    out.close()
    print(f" END OF RUN {run} WITH {showers} EVENTS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
