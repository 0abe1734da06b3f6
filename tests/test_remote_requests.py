"""What a backup asks of a remote storage, counted on a real S3 server (SeaweedFS) through the
bench's counting proxy: every listing the opening's checks need is made once, and the commit is
followed by no listing at all (each one is a round trip to an off-site server)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from test_bench_smoke import bench_module

from conftest import Coffre, make_tree


def counting_proxy(port: int) -> Any:
    return bench_module("proxy").CountingProxy(port)


def listing(path: str) -> str:
    """The kind a listing request lists ("" for any other request)."""
    if "list-type=2" not in path:
        return ""
    prefix = path.split("prefix=")[1].split("&")[0]
    return prefix.split("%2F")[-2]


def test_an_unchanged_backup_lists_each_kind_it_needs_once_and_nothing_after_its_commit(
    seaweedfs: Any, s3_env: dict[str, str], pwfile: Path, cache_dir: Path, tmp_path: Path,
) -> None:
    proxy = counting_proxy(seaweedfs.port)
    try:
        c = Coffre(f"s3+http://127.0.0.1:{proxy.port}/coffre-requests/repo", pwfile, cache_dir)
        c.env.update(s3_env)
        c.ok("init")
        src = make_tree(tmp_path / "src")
        c.ok("backup", str(src))
        proxy.counts.trace = []
        c.ok("backup", str(src))
        trace = list(proxy.counts.trace)
    finally:
        proxy.stop()
    kinds = [listing(path) for _method, path, _range, _size in trace]
    assert kinds.count("keys") == 1  # the opening's scan serves the config copies' check
    assert kinds.count("snapshots") == 1 and kinds.count("forgotten") == 1
    assert kinds.count("data") == 1  # the heal: packs the index lists but storage lacks
    snapshot_write = next(i for i, (method, path, _r, _s) in enumerate(trace)
                          if method == "PUT" and "/snapshots/" in path)
    after = [k for k in kinds[snapshot_write + 1:] if k]
    assert after == ["index"]  # the one check for a concurrent prune, then no listing at all
