"""The IVOA UWS 1.1 schema (and the XLink attributes it uses), shipped for offline validation.

`UWS_XSD` is its path wherever the package is installed.
"""

from __future__ import annotations

from pathlib import Path

UWS_XSD = Path(__file__).resolve().parent / "UWS.xsd"
