"""Files between the stages: atomic writes, shard reading with checks, provenance.

A file appears under its final name only complete: it is written to a hidden
temporary name in the same folder, flushed to disk, then renamed (`os.replace`
is atomic on POSIX). A killed job leaves at most a `.tmp-*` file behind. A
table's sidecar is written after the table and removed with it on failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import socket
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

PROVENANCE_PACKAGES = (
    "deepsea-scaling", "jax", "jaxlib", "flax", "optax", "gymnax", "numpy",
    "pandas", "pyarrow", "scipy", "statsmodels", "matplotlib", "snakemake",
)


class ShardError(RuntimeError):
    """A results file is missing, truncated, corrupt or from another configuration."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync it and rename it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    # mkstemp creates the file 0600; give it the mode a plain open() would
    # (0666 less the umask), so that results stay readable by the group.
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_table(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Atomically write `df` as parquet (.parquet) or CSV (anything else)."""
    with atomic_path(path) as tmp:
        if str(path).endswith(".parquet"):
            pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp)
        else:
            df.to_csv(tmp, index=False)


def write_json(obj: dict, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_table_and_sidecar(df: pd.DataFrame, sidecar: dict, path: str | os.PathLike) -> None:
    """The table, then its provenance sidecar, each atomically: a sidecar never claims a missing table.

    Older outputs go first; if the new sidecar cannot be written, the new table
    is removed again, so a failure leaves neither and a rerun redoes the job.
    """
    path = Path(path)
    sidecar_path(path).unlink(missing_ok=True)
    path.unlink(missing_ok=True)
    write_table(df, path)
    try:
        write_json(sidecar, sidecar_path(path))
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def sidecar_path(table_path: str | os.PathLike) -> Path:
    """The provenance JSON that accompanies a shard table: same name, suffix .json."""
    return Path(table_path).with_suffix(".json")


def read_shard(path: str | os.PathLike, rebuild_hint: str | None = None) -> pd.DataFrame:
    """Read one shard table; ShardError naming the file and how to rebuild it if unreadable."""
    path = Path(path)
    hint = rebuild_hint or f"delete it and rerun, or run: snakemake --forcerun {path}"
    if not path.exists():
        raise ShardError(f"shard {path} is missing; {hint}")
    try:
        return pq.read_table(path).to_pandas()
    except Exception as err:  # pyarrow raises several types for truncated/corrupt files
        raise ShardError(f"shard {path} is unreadable ({type(err).__name__}: {err}); {hint}") from None


def package_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for name in PROVENANCE_PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what the platform module knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def host_facts() -> dict[str, str]:
    return {"hostname": socket.gethostname(), "platform": platform.platform(), "processor": platform.machine(),
            "cpu_model": cpu_model(), "cpu_count": str(os.cpu_count())}
