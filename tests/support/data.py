"""The real AWS files the tests and benchmarks use, shipped in tests/data and unpacked on demand.

The repository holds them gzip-compressed (see tests/data/README.md for where each came from and
its checksum); `data_file` unpacks one into a cache folder beside the system's temporary files,
once, and returns the path of the unpacked copy, which is byte for byte the original.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data"

# sha256 of each unpacked file, as published with it (tests/data/README.md).
SHA256 = {
    "aws-ip-ranges.json": "752894ac9db21ac9e4c274246f43f3c4b0257eb0b098b0420160db10e756c965",
    "history/ip-ranges-2020-06-19-14-09-13.json": (
        "ef08b82559f1f0e1f885d491942423d5d3cb365c1481579e164b2b292ab26c5a"
    ),
    "history/ip-ranges-2020-06-19-14-29-12.json": (
        "ea06079d49c6d2c1ce7212f120cf5d2eced724068fa09877418e6cf9bfd3caae"
    ),
}
GUIDE = DATA / "aws-guide-app-keys-tenant-ids.md"


def unpacked_dir() -> Path:
    """The folder holding the unpacked files (same layout as tests/data, without .gz)."""
    return Path(tempfile.gettempdir()) / f"chime-egress-test-data-{os.getuid()}"


def data_file(name: str) -> Path:
    """The unpacked copy of tests/data/NAME.gz, checked against its published sha256."""
    target = unpacked_dir() / name
    expected = SHA256[name]
    if target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == expected:
        return target
    data = gzip.decompress((DATA / f"{name}.gz").read_bytes())
    if hashlib.sha256(data).hexdigest() != expected:
        raise RuntimeError(f"tests/data/{name}.gz does not unpack to the published file")
    target.parent.mkdir(parents=True, exist_ok=True)
    # Another test process may unpack the same file at the same time: write, then rename.
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    os.replace(temporary, target)
    return target


AWS_RANGES = data_file("aws-ip-ranges.json")
HISTORY_OLD = data_file("history/ip-ranges-2020-06-19-14-09-13.json")  # three /24s
HISTORY_NEW = data_file("history/ip-ranges-2020-06-19-14-29-12.json")  # one /18 GLOBAL
