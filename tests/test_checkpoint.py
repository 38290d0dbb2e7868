from pathlib import Path

import pytest
import torch

from train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from train.model import build_model


@pytest.fixture(scope="module")
def weights():
    torch.manual_seed(1)
    return build_model("u2netp").state_dict()


def _same_weights(model, state):
    got = model.state_dict()
    return all(torch.equal(got[k], v) for k, v in state.items())


def test_official_raw_state_dict(tmp_path, weights):
    path = tmp_path / "u2netp.pth"
    torch.save(weights, path)
    ckpt = load_checkpoint(path)
    assert ckpt.variant == "u2netp"
    assert not ckpt.model.training
    assert _same_weights(ckpt.model, weights)


def test_official_u2net_full_size_is_inferred(tmp_path):
    path = tmp_path / "u2net.pth"
    torch.save(build_model("u2net").state_dict(), path)
    assert load_checkpoint(path).variant == "u2net"


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod."])
def test_wrapped_prefixes_are_stripped(tmp_path, weights, prefix):
    path = tmp_path / "ddp.pth"
    torch.save({prefix + k: v for k, v in weights.items()}, path)
    assert _same_weights(load_checkpoint(path).model, weights)


def test_training_checkpoint_round_trip(tmp_path, weights):
    model = build_model("u2netp")
    model.load_state_dict(weights)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    path = tmp_path / "last.pth"
    save_checkpoint(path, model, "u2netp", meta={"input_size": 288}, optimizer=opt.state_dict(), iteration=7)
    assert not list(tmp_path.glob(".*tmp"))  # written atomically
    ckpt = load_checkpoint(path)
    assert ckpt.variant == "u2netp"
    assert ckpt.meta == {"input_size": 288}
    assert ckpt.raw["iteration"] == 7
    assert "optimizer" in ckpt.raw
    assert _same_weights(ckpt.model, weights)


def test_explicit_model_flag(tmp_path, weights):
    path = tmp_path / "p.pth"
    torch.save(weights, path)
    assert load_checkpoint(path, model="u2netp").variant == "u2netp"
    with pytest.raises(CheckpointError, match=r"does not match --model u2net \(it holds u2netp weights\)"):
        load_checkpoint(path, model="u2net")
    with pytest.raises(CheckpointError, match="unknown --model"):
        load_checkpoint(path, model="resnet")


def _message(path, **kw):
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, **kw)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg
    return msg


def test_missing_file(tmp_path):
    assert "no such file" in _message(tmp_path / "absent.pth")


def test_directory(tmp_path):
    assert "directory" in _message(tmp_path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pth"
    path.touch()
    assert "empty" in _message(path)


def test_truncated_file(tmp_path, weights):
    full = tmp_path / "full.pth"
    torch.save(weights, full)
    path = tmp_path / "truncated.pth"
    path.write_bytes(full.read_bytes()[: full.stat().st_size // 3])
    assert "not a readable PyTorch checkpoint" in _message(path)


def test_text_file(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("these are not weights\n")
    assert "not a readable PyTorch checkpoint" in _message(path)


def test_other_architecture_names_missing_keys(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(8, 3, 7, 7), "fc.bias": torch.zeros(10)}, path)
    msg = _message(path)
    assert "not a U²-Net or U²-NetP checkpoint" in msg
    assert "798 missing keys (stage1.rebnconvin.conv_s1.weight" in msg
    assert "2 unexpected keys" in msg


def test_partial_checkpoint_reports_counts(tmp_path, weights):
    path = tmp_path / "partial.pth"
    state = dict(weights)
    del state["outconv.weight"], state["side6.bias"]
    torch.save(state, path)
    assert "2 missing keys (side6.bias, outconv.weight)" in _message(path, model="u2netp")


class _RunsCode:
    """Unpickling this calls Path.touch(marker): code execution if loaded unsafely."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path, weights):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model": weights, "payload": _RunsCode(marker)}, path)
    msg = _message(path)
    assert "refused" in msg
    assert not marker.exists()
    # Control: an unsafe load of the same file really would have run it.
    torch.load(path, weights_only=False)
    assert marker.exists()
