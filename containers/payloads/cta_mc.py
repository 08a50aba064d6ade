"""Stand-in for a CTA Monte Carlo run (CORSIKA, then sim_telarray) where neither is installed.

Writes the CORSIKA steering card a production would use and small deterministic toy outputs.
"""

import argparse
import json
import math
import random

PRIMARY = {"gamma": 1, "gamma-diffuse": 1, "electron": 3, "proton": 14, "helium": 402, "muon": 6}
ENERGY_GEV = {
    "gamma": (3e-3, 330e3),
    "gamma-diffuse": (3e-3, 330e3),
    "electron": (3e-3, 330e3),
    "proton": (4e-3, 600e3),
    "helium": (10e-3, 1200e3),
    "muon": (1e-1, 1e3),
}
VIEWCONE = {
    "gamma": 0.0,
    "gamma-diffuse": 10.0,
    "electron": 10.0,
    "proton": 10.0,
    "helium": 10.0,
    "muon": 10.0,
}
AZIMUTH = {"North": 180.0, "South": 0.0, "East": 270.0, "West": 90.0}
SITE = {
    "Paranal": {"obslev_m": 2147, "atmosphere": 26, "bx": 21.36, "bz": -8.86},
    "LaPalma": {"obslev_m": 2158, "atmosphere": 36, "bx": 30.75, "bz": 24.08},
}


def steering_card(args: argparse.Namespace, seed: int) -> str:
    """CORSIKA input for one run, with the keywords CTA productions set."""
    site = SITE[args.site]
    low, high = ENERGY_GEV[args.particle]
    lines = [
        f"RUNNR {args.run}",
        "EVTNR 1",
        f"NSHOW {args.showers}",
        f"PRMPAR {PRIMARY[args.particle]}",
        "ESLOPE -2.0",
        f"ERANGE {low:.3E} {high:.3E}",
        f"THETAP {args.zenith:.2f} {args.zenith:.2f}",
        f"PHIP {AZIMUTH[args.pointing]:.2f} {AZIMUTH[args.pointing]:.2f}",
        f"VIEWCONE 0. {VIEWCONE[args.particle]:.1f}",
        *(f"SEED {seed + i} 0 0" for i in range(4)),
        f"OBSLEV {site['obslev_m'] * 100:.1f}",
        f"ATMOSPHERE {site['atmosphere']} Y",
        f"MAGNET {site['bx']:.2f} {site['bz']:.2f}",
        "CSCAT 20 1500.E2 0.",
        f"TELFIL run{args.run:06d}.corsika.zst",
        "DIRECT ./",
        "EXIT",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    """One run: steering card, toy showers and, unless CORSIKA-only, toy telescope events."""
    parser = argparse.ArgumentParser()
    for name in ("site", "particle", "pointing", "layout", "version"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--run", type=int, required=True)
    parser.add_argument("--zenith", type=float, required=True)
    parser.add_argument("--nsb", type=float, required=True)
    parser.add_argument("--showers", type=int, required=True)
    parser.add_argument("--corsika-only", action="store_true")
    args = parser.parse_args()
    stem = f"run{args.run:06d}"
    seed = args.run * 7919 + PRIMARY[args.particle] * 104729
    with open(f"{stem}.corsika.input", "w") as handle:
        handle.write(steering_card(args, seed))
    rng = random.Random(seed)
    low, high = ENERGY_GEV[args.particle]
    a, b = low**-1.0, high**-1.0
    energies = [1.0 / (a + rng.random() * (b - a)) for _ in range(args.showers)]
    showers = {
        "run": args.run,
        "site": args.site,
        "particle": args.particle,
        "zenith": args.zenith,
        "software": args.version,
        "showers": len(energies),
        "energy_gev": {
            "min": min(energies),
            "max": max(energies),
            "median": sorted(energies)[len(energies) // 2],
        },
    }
    with open(f"{stem}.corsika.json", "w") as handle:
        json.dump(showers, handle, indent=1)
    if not args.corsika_only:
        threshold = 0.03 * (1 + math.log10(args.nsb + 1))
        triggered = sum(e > threshold * (1 + rng.random()) for e in energies)
        with open(f"{stem}.simtel.json", "w") as handle:
            json.dump(
                {
                    "run": args.run,
                    "layout": args.layout,
                    "nsb": args.nsb,
                    "triggered": triggered,
                    "showers": len(energies),
                },
                handle,
                indent=1,
            )
    print(
        f"{stem}: {len(energies)} showers of {args.particle} at {args.site}, zenith {args.zenith}"
    )


if __name__ == "__main__":
    main()
