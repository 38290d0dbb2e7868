from pathlib import Path

import pytest
import torch

from runtime.preprocess import PreprocessSpec
from train.checkpoint import CHECKPOINT_FORMAT, CheckpointError, load_checkpoint, save_checkpoint
from train.model import U2Net, build_model, build_model_from_args


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
    assert ckpt.spec == PreprocessSpec(size=288)  # loose format-/1 meta keys still describe the spec


def test_model_args_and_preprocess_are_stored_as_plain_dicts(tmp_path, weights):
    model = build_model("u2netp")
    model.load_state_dict(weights)
    spec = PreprocessSpec(size=96, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), divide_by_max=False)
    path = tmp_path / "new.pth"
    save_checkpoint(path, model, "u2netp", meta={"note": "x"}, spec=spec)
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == CHECKPOINT_FORMAT
    assert raw["preprocess"] == {"size": 96, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
                                 "divide_by_max": False}
    assert raw["model_args"]["name"] == "u2netp" and len(raw["model_args"]["encoder"]) == 6
    assert raw["model_args"]["encoder"][0] == {"height": 7, "in_ch": 3, "mid_ch": 16, "out_ch": 64, "dilated": False}
    assert "input_size" not in raw["meta"]  # the spec lives in one place
    ckpt = load_checkpoint(path)
    assert ckpt.spec == spec and ckpt.variant == "u2netp" and ckpt.model_args == raw["model_args"]
    assert _same_weights(ckpt.model, weights)


def test_the_file_s_model_args_rebuild_the_network_not_the_built_in_table(tmp_path):
    # A narrower U²-NetP (mid_ch 8) exists in no table here: only the file's model_args can rebuild it.
    args = build_model("u2netp").model_args()
    for part in ("encoder", "decoder"):
        args[part] = [{**stage, "mid_ch": 8} for stage in args[part]]
    torch.manual_seed(2)
    narrow = build_model_from_args(args)
    path = tmp_path / "narrow.pth"
    save_checkpoint(path, narrow, "u2netp")
    ckpt = load_checkpoint(path)
    assert ckpt.model.stage1.rebnconv1.conv_s1.out_channels == 8
    assert _same_weights(ckpt.model, narrow.state_dict())
    assert ckpt.spec is None  # saved without a spec: the file does not say


def test_format_1_training_checkpoint_still_loads(tmp_path, weights):
    # What this project wrote before model_args: loose spec keys in meta, DDP-prefixed weights.
    path = tmp_path / "old.pth"
    meta = {"variant": "u2netp", "input_size": 160, "mean": [0.4, 0.4, 0.4], "std": [0.2, 0.2, 0.2],
            "divide_by_max": True, "iteration": 3}
    torch.save({"format": "u2net-toolkit/1", "variant": "u2netp", "model": {"module." + k: v for k, v in weights.items()},
                "meta": meta, "iteration": 3}, path)
    ckpt = load_checkpoint(path)
    assert ckpt.variant == "u2netp" and ckpt.meta == meta
    assert ckpt.spec == PreprocessSpec(size=160, mean=(0.4, 0.4, 0.4), std=(0.2, 0.2, 0.2))
    assert ckpt.model_args == build_model("u2netp").model_args()
    assert _same_weights(ckpt.model, weights)


def test_official_raw_state_dict_has_no_spec(tmp_path, weights):
    path = tmp_path / "u2netp.pth"
    torch.save(weights, path)
    assert load_checkpoint(path).spec is None


def _saved_then_edited(tmp_path, weights, **changes):
    model = build_model("u2netp")
    model.load_state_dict(weights)
    path = tmp_path / "edited.pth"
    save_checkpoint(path, model, "u2netp", spec=PreprocessSpec(size=64))
    raw = torch.load(path, weights_only=True)
    raw.update(changes)
    torch.save(raw, path)
    return path


@pytest.mark.parametrize(("changes", "message"), [
    ({"model_args": {"name": "u2netp", "encoder": "x", "decoder": []}}, "unusable model_args: model_args encoder"),
    ({"model_args": {"name": "u2netp", "encoder": [{"height": 7}], "decoder": []}}, "unusable model_args"),
    ({"preprocess": {"size": "320"}}, "bad preprocessing spec: size is '320', expected a positive whole number"),
    ({"preprocess": {"std": [0.2, 0.0, 0.2]}}, "bad preprocessing spec: std"),
])
def test_bad_model_args_or_spec_are_one_line_errors(tmp_path, weights, changes, message):
    assert message in _message(_saved_then_edited(tmp_path, weights, **changes))


def test_model_args_that_disagree_with_the_weights(tmp_path, weights):
    path = _saved_then_edited(tmp_path, weights, model_args=build_model("u2net").model_args())
    assert "weights do not match its own model_args" in _message(path)
    path = _saved_then_edited(tmp_path, weights)
    assert "does not match --model u2net (it holds u2netp weights)" in _message(path, model="u2net")


def test_wrapped_models_are_saved_unwrapped(tmp_path, weights):
    class Wrapper(torch.nn.Module):  # DDP and torch.compile both keep the network as an attribute
        def __init__(self, inner: U2Net) -> None:
            super().__init__()
            self.module = inner

    model = build_model("u2netp")
    model.load_state_dict(weights)
    path = tmp_path / "wrapped.pth"
    save_checkpoint(path, Wrapper(model), "u2netp")
    assert not any(k.startswith("module.") for k in torch.load(path, weights_only=True)["model"])
    assert _same_weights(load_checkpoint(path).model, weights)


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
