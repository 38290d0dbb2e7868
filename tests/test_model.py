import pytest
import torch

from train.model import MODEL_NAMES, RSU, StageSpec, U2Net, build_model, count_parameters


@pytest.mark.parametrize("name,expected", [("u2net", 44_009_869), ("u2netp", 1_131_181)])
def test_parameter_counts_match_the_paper(name, expected):
    assert count_parameters(build_model(name)) == expected


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_official_parameter_names(name):
    keys = set(build_model(name).state_dict())
    # A sample of the official names, from every kind of layer and both ends of the network.
    for key in [
        "stage1.rebnconvin.conv_s1.weight",
        "stage1.rebnconv7.conv_s1.weight",
        "stage1.rebnconv6d.bn_s1.running_mean",
        "stage1.rebnconv1d.bn_s1.num_batches_tracked",
        "stage4.rebnconv4.conv_s1.bias",
        "stage5.rebnconv4.conv_s1.weight",
        "stage6.rebnconv3d.bn_s1.running_var",
        "stage5d.rebnconv1d.conv_s1.weight",
        "stage1d.rebnconv7.conv_s1.weight",
        "side1.weight",
        "side6.bias",
        "outconv.weight",
    ]:
        assert key in keys, key
    assert not any(k.startswith(("stage7", "side7", "stage6d")) for k in keys)
    assert all(k.split(".")[0] in {f"stage{i}" for i in range(1, 7)} | {f"stage{i}d" for i in range(1, 6)}
               | {f"side{i}" for i in range(1, 7)} | {"outconv"} for k in keys)


def test_u2net_stage_shapes_follow_the_table():
    sd = build_model("u2net").state_dict()
    assert sd["stage1.rebnconvin.conv_s1.weight"].shape == (64, 3, 3, 3)
    assert sd["stage1.rebnconv1.conv_s1.weight"].shape == (32, 64, 3, 3)
    assert sd["stage5d.rebnconvin.conv_s1.weight"].shape == (512, 1024, 3, 3)
    assert sd["stage1d.rebnconv1.conv_s1.weight"].shape == (16, 64, 3, 3)
    assert sd["side3.weight"].shape == (1, 128, 3, 3)
    assert sd["side6.weight"].shape == (1, 512, 3, 3)
    assert sd["outconv.weight"].shape == (1, 6, 1, 1)


def test_rsu4f_dilations_and_rsu_bottom_dilation():
    block = RSU(StageSpec(4, 8, 4, 8, dilated=True))
    assert [block.get_submodule(f"rebnconv{i}").conv_s1.dilation for i in range(1, 5)] == [(1, 1), (2, 2), (4, 4), (8, 8)]
    assert [block.get_submodule(f"rebnconv{i}d").conv_s1.dilation for i in (3, 2, 1)] == [(4, 4), (2, 2), (1, 1)]
    block = RSU(StageSpec(7, 8, 4, 8))
    assert block.rebnconv7.conv_s1.dilation == (2, 2)
    assert block.rebnconv6.conv_s1.dilation == (1, 1)
    assert block.rebnconv1d.conv_s1.dilation == (1, 1)


@pytest.mark.parametrize("shape", [(1, 3, 64, 64), (2, 3, 37, 53), (1, 3, 17, 100), (1, 3, 5, 7)])
def test_eval_returns_fused_probability_map_for_any_size(shape):
    torch.manual_seed(0)
    model = build_model("u2netp").eval()
    with torch.no_grad():
        out = model(torch.randn(*shape))
    assert out.shape == (shape[0], 1, *shape[2:])
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_train_returns_seven_logit_maps_fused_first():
    torch.manual_seed(0)
    model = build_model("u2netp").train()
    x = torch.randn(2, 3, 45, 61)
    maps = model(x)
    assert len(maps) == 7
    assert all(m.shape == (2, 1, 45, 61) for m in maps)
    assert any(float(m.detach().min()) < 0 or float(m.detach().max()) > 1 for m in maps)  # logits, not probabilities
    # The fused map is the 1x1 fuse conv over the six side maps.
    expected = model.outconv(torch.cat(maps[1:], 1))
    torch.testing.assert_close(maps[0], expected)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), torch.sigmoid(model.forward_logits(x)[0]))


def test_unknown_model_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="u2net, u2netp"):
        U2Net("u2netx")
