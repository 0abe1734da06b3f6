"""A whole pharmacy's life against a real S3 server (SeaweedFS on 127.0.0.1), through the real
command line: init, backup, restore byte for byte, check --read-data, a day of changes,
forget and prune, and a damaged object found by check."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from test_storage import fresh_s3_url

from conftest import Coffre, age_tree, make_tree, snapshot_ids, tree_digest


def s3_coffre(seaweedfs: object, s3_env: dict[str, str], pwfile: Path, cache_dir: Path) -> Coffre:
    c = Coffre(fresh_s3_url(seaweedfs), pwfile, cache_dir)
    c.env.update(s3_env)
    return c


def test_backup_restore_check_forget_prune_over_s3(
    seaweedfs: object, s3_env: dict[str, str], pwfile: Path, cache_dir: Path, tmp_path: Path
) -> None:
    c = s3_coffre(seaweedfs, s3_env, pwfile, cache_dir)
    res = c.ok("init")
    assert "s3+http://127.0.0.1" in res.out + res.err
    src = make_tree(tmp_path / "src")
    c.ok("backup", str(src))
    first = snapshot_ids(c)[0]
    # A day: one file changed, one added, one removed.
    (src / "docs" / "lettre-3.txt").write_text("modifiée\n" * 50)
    (src / "docs" / "nouvelle.txt").write_text("ordonnance\n" * 20)
    (src / "docs" / "lettre-4.txt").unlink()
    age_tree(src)
    c.ok("backup", str(src))
    restored = tmp_path / "restored"
    c.ok("restore", "latest", "--target", str(restored), "--verify")
    assert tree_digest(restored / str(src).lstrip("/")) == tree_digest(src)
    # The metadata is kept locally: the next runs list it but do not download it again.
    kept = {p.parent.name for p in cache_dir.glob("*/objects/*/*")}
    assert kept == {"index", "snapshots", "keys"}
    check = c.ok("check", "--read-data")
    assert "no errors" in check.out
    c.ok("forget", first, "--prune")
    assert len(snapshot_ids(c)) == 1
    c.ok("check", "--read-data")
    again = tmp_path / "again"
    c.ok("restore", "latest", "--target", str(again))
    assert tree_digest(again / str(src).lstrip("/")) == tree_digest(src)


def test_a_command_over_s3_starts_without_what_it_does_not_use(
    seaweedfs: object, s3_env: dict[str, str], pwfile: Path, cache_dir: Path, tmp_path: Path
) -> None:
    """Every daily command on an S3 repository pays for its start: with keys from the
    environment (or the AWS files) it imports neither botocore (~0.1 s warm, storage/s3wire.py)
    nor boto3's transfer manager nor urllib3's pyOpenSSL adapter (installed here for the FTPS
    tests); the backup still works and lists its snapshot."""
    c = s3_coffre(seaweedfs, s3_env, pwfile, cache_dir)
    c.ok("init")
    src = make_tree(tmp_path / "src")
    code = ("import sys\n"
            "from coffre.cli.main import main\n"
            "code = main(sys.argv[1:])\n"
            "heavy = {'botocore', 'boto3', 's3transfer', 'OpenSSL'}\n"
            "loaded = sorted({m.split('.')[0] for m in sys.modules} & heavy)\n"
            "adapter = sys.modules.get('urllib3.contrib.pyopenssl')\n"
            "print(code, loaded, adapter)\n")
    out = subprocess.run([sys.executable, "-c", code, *c.argv("backup", str(src))[3:]],
                         env={**c.env}, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "0 [] None", out.stdout
    assert len(snapshot_ids(c)) == 1


def test_damaged_object_on_s3_is_found_by_check(
    seaweedfs: object, s3_env: dict[str, str], pwfile: Path, cache_dir: Path, tmp_path: Path
) -> None:
    c = s3_coffre(seaweedfs, s3_env, pwfile, cache_dir)
    c.ok("init")
    src = make_tree(tmp_path / "src")
    c.ok("backup", str(src))
    # Overwrite one pack behind Coffre's back, as a faulty storage would.
    import boto3

    from coffre.storage.url import parse_s3

    where = parse_s3(str(c.repo))
    client = boto3.client("s3", endpoint_url=where.endpoint, region_name="us-east-1",
                          aws_access_key_id=s3_env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=s3_env["AWS_SECRET_ACCESS_KEY"])
    listed = client.list_objects_v2(Bucket=where.bucket, Prefix=where.prefix + "data/")
    victim = listed["Contents"][0]["Key"]
    body = bytearray(client.get_object(Bucket=where.bucket, Key=victim)["Body"].read())
    body[len(body) // 3] ^= 0xFF
    client.put_object(Bucket=where.bucket, Key=victim, Body=bytes(body))
    res = c("check", "--read-data")
    assert res.code != 0
    assert victim.rsplit("/", 1)[1][:12] in res.out + res.err


def test_unreachable_storage_fails_clearly(pwfile: Path, cache_dir: Path, tmp_path: Path) -> None:
    """Nothing listens on the port: the command says the storage refused the connection, at
    once (tests/test_fail_fast.py), and exits non-zero; the password and keys never appear."""
    from servers import free_port

    c = Coffre(f"s3+http://127.0.0.1:{free_port()}/bucket/p", pwfile, cache_dir)
    c.env.update({"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "very-secret-key-xyz",
                  "COFFRE_STORAGE_RETRIES": "1"})
    res = c("init")
    assert res.code != 0
    assert "refused the connection" in res.err
    assert "trying again" not in res.err
    assert "very-secret-key-xyz" not in res.out + res.err
    assert pwfile.read_text().strip() not in res.out + res.err


def test_secrets_never_in_the_process_list(
    seaweedfs: object, s3_env: dict[str, str], pwfile: Path, cache_dir: Path, tmp_path: Path
) -> None:
    c = s3_coffre(seaweedfs, s3_env, pwfile, cache_dir)
    c.ok("init")
    src = make_tree(tmp_path / "src", big=20_000_000)
    proc = c.popen("backup", str(src))
    try:
        seen = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    finally:
        proc.communicate()
    assert proc.returncode == 0
    assert s3_env["AWS_SECRET_ACCESS_KEY"] not in seen
    assert pwfile.read_text().strip() not in seen
    assert str(c.repo) in seen  # the backup was running when the list was taken
