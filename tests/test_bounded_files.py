"""Issue 30: every JSON file that comes from outside (a checkpoint's, a LAM's, a dataset's
info, normalisation statistics, an evaluation's result) is refused unread when it is far
larger than any real one, with the reader's own error class and the file's name: one reader
(rotvla_common.text.read_json) for all of them."""

import pytest

from rotvla_common.text import MAX_JSON_BYTES


def huge(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"pad": "' + "x" * (MAX_JSON_BYTES + 10) + '"}')
    return path


def test_each_reader_refuses_an_oversized_file_unread(tmp_path):
    from rotvla_ros.data.lerobot_dataset import DatasetFormatError, read_info
    from rotvla_ros.eval.report import Summary
    from rotvla_ros.policy.checkpoint import CheckpointError, load_lam
    from rotvla_ros.policy.normalization import load_statistics

    huge(tmp_path / "data" / "meta" / "info.json")
    with pytest.raises(DatasetFormatError, match="info.json: .* bytes, more than such a file holds"):
        read_info(tmp_path / "data")
    huge(tmp_path / "lam" / "config.json")
    with pytest.raises(CheckpointError, match="config.json: .* bytes"):
        load_lam(tmp_path / "lam")
    with pytest.raises(ValueError, match="normalization.json: .* bytes"):
        load_statistics(huge(tmp_path / "normalization.json"))
    with pytest.raises(ValueError, match="result.json: .* bytes"):
        Summary.read(huge(tmp_path / "result.json"))
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="broken.json is not valid JSON"):
        Summary.read(tmp_path / "broken.json")
