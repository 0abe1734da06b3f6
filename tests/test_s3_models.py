"""botocore's model files, decoded by Coffre's faster loader (storage/s3.py): the S3 client
must see exactly what botocore's own loader gives, in the same order."""

from __future__ import annotations

import json
from pathlib import Path

import botocore.loaders
import pytest

from coffre.storage import s3


def loaded_by_a_client(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The model files (paths without extension) an S3 client reads when it is made."""
    paths: list[str] = []
    real = s3._FastJSONFileLoader.load_file

    def recording(self: s3._FastJSONFileLoader, file_path: str) -> object:
        paths.append(file_path)
        return real(self, file_path)

    monkeypatch.setattr(s3._FastJSONFileLoader, "load_file", recording)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    client = s3.s3_client("http://127.0.0.1:9")
    assert client.meta.service_model.operation_model("GetObject").name == "GetObject"
    monkeypatch.undo()
    return paths


def test_the_s3_client_reads_its_models_with_the_fast_loader_and_sees_what_botocore_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    paths = loaded_by_a_client(monkeypatch)
    names = {Path(p).name for p in paths}
    assert {"service-2", "endpoints", "endpoint-rule-set-1"} <= names, names
    botocore_own = botocore.loaders.JSONFileLoader()
    for path in paths:
        ours = s3._FastJSONFileLoader().load_file(path)
        theirs = botocore_own.load_file(path)
        # json.dumps keeps the key order: the same data, in the same order
        assert json.dumps(ours) == json.dumps(theirs), path


def test_a_model_file_msgspec_refuses_is_read_by_botocores_loader(tmp_path: Path) -> None:
    """NaN is accepted by the standard json module, not by msgspec: such a file (one put on
    AWS_DATA_PATH) reads as botocore would read it. A missing file is None for both."""
    (tmp_path / "custom.json").write_text('{"b": NaN, "a": [1, {"z": 2, "y": 3}]}')
    ours = s3._FastJSONFileLoader().load_file(str(tmp_path / "custom"))
    theirs = botocore.loaders.JSONFileLoader().load_file(str(tmp_path / "custom"))
    assert json.dumps(ours) == json.dumps(theirs) == '{"b": NaN, "a": [1, {"z": 2, "y": 3}]}'
    assert s3._FastJSONFileLoader().load_file(str(tmp_path / "absent")) is None
