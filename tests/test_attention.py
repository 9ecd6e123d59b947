"""coursekit.attention against torch's and diffusers' implementations, with the weights copied across."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from coursekit.attention import (GEGLU, Attention, FeedForward, SpatialTransformer, TransformerBlock, merge_heads,
                                 scaled_dot_product_attention, split_heads)

TOL = dict(atol=1e-5, rtol=1e-5)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_sdpa_equals_torch_without_and_with_mask():
    q, k, v = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 6)
    out, weights = scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), **TOL)
    assert weights.shape == (2, 3, 5, 7)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 5), **TOL)

    mask = torch.rand(2, 1, 5, 7) > 0.4
    mask[..., 0] = True  # every query keeps at least one key
    out, weights = scaled_dot_product_attention(q, k, v, mask=mask)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), **TOL)
    assert (weights[~mask.expand_as(weights)] == 0).all()
    # a custom scale as well
    out, _ = scaled_dot_product_attention(q, k, v, scale=0.3)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, scale=0.3), **TOL)


def test_scaling_keeps_score_variance_at_one():
    # With unit-variance q and k, q.k has variance d_k; dividing by sqrt(d_k) brings it back to 1.
    for d_k in (4, 64, 512):
        q, k = torch.randn(4096, d_k), torch.randn(4096, d_k)
        raw = (q * k).sum(-1)
        assert abs(raw.var().item() / d_k - 1) < 0.1
        assert abs((raw / d_k ** 0.5).var().item() - 1) < 0.1


def test_split_and_merge_heads_are_inverse():
    x = torch.randn(2, 5, 12)
    heads = split_heads(x, 3)
    assert heads.shape == (2, 3, 5, 4)
    torch.testing.assert_close(heads[:, 1], x[..., 4:8])  # head 1 sees features 4..7
    torch.testing.assert_close(merge_heads(heads), x)
    with pytest.raises(ValueError, match="not divisible"):
        split_heads(x, 5)


def _copy_to_mha(ours: Attention, mha: nn.MultiheadAttention) -> None:
    with torch.no_grad():
        if mha._qkv_same_embed_dim:
            mha.in_proj_weight.copy_(torch.cat([ours.to_q.weight, ours.to_k.weight, ours.to_v.weight]))
        else:
            mha.q_proj_weight.copy_(ours.to_q.weight)
            mha.k_proj_weight.copy_(ours.to_k.weight)
            mha.v_proj_weight.copy_(ours.to_v.weight)
        mha.in_proj_bias.zero_()
        mha.out_proj.weight.copy_(ours.to_out[0].weight)
        mha.out_proj.bias.copy_(ours.to_out[0].bias)


def test_self_attention_equals_torch_multihead_attention():
    ours = Attention(16, heads=4, dim_head=4).eval()
    mha = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    _copy_to_mha(ours, mha)
    x = torch.randn(3, 10, 16)
    torch.testing.assert_close(ours(x), mha(x, x, x, need_weights=False)[0], **TOL)


def test_cross_attention_with_padding_mask_equals_torch_multihead_attention():
    ours = Attention(16, context_dim=12, heads=2, dim_head=8).eval()
    mha = nn.MultiheadAttention(16, 2, kdim=12, vdim=12, batch_first=True).eval()
    _copy_to_mha(ours, mha)
    x, context = torch.randn(3, 9, 16), torch.randn(3, 6, 12)
    keep = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    ours.store_weights = True
    out = ours(x, context, mask=keep)
    # torch's key_padding_mask marks the keys to IGNORE
    expected = mha(x, context, context, key_padding_mask=~keep, need_weights=False)[0]
    torch.testing.assert_close(out, expected, **TOL)
    assert ours.last_weights.shape == (3, 2, 9, 6)
    assert (ours.last_weights[1, :, :, 3:] == 0).all() and (ours.last_weights[2, :, :, 1:] == 0).all()
    # padded context tokens do not matter at all
    changed = context.clone()
    changed[1, 3:] = 100 * torch.randn(3, 12)
    torch.testing.assert_close(ours(x, changed, mask=keep), out, **TOL)


def test_geglu_and_feedforward():
    ff = FeedForward(8)
    x = torch.randn(2, 3, 8)
    proj = ff.net[0].proj
    value, gate = (x @ proj.weight.T + proj.bias).split(32, dim=-1)
    expected = (value * 0.5 * gate * (1 + torch.erf(gate / 2 ** 0.5))) @ ff.net[2].weight.T + ff.net[2].bias
    torch.testing.assert_close(ff(x), expected, **TOL)
    assert isinstance(ff.net[0], GEGLU)


def _randomise(module: nn.Module) -> None:
    """Non-trivial values everywhere (norm scales around 1, biases and weights around 0), so that no
    piece can agree with its counterpart merely by being initialised to zero or one."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            scale = 1.0 if name.endswith("weight") and p.ndim == 1 else 0.0
            p.copy_(scale + 0.3 * torch.randn_like(p))


def test_attention_equals_diffusers_attention():
    from diffusers.models.attention_processor import Attention as DiffusersAttention

    theirs = DiffusersAttention(query_dim=16, cross_attention_dim=12, heads=2, dim_head=8).eval()
    ours = Attention(16, context_dim=12, heads=2, dim_head=8).eval()
    ours.load_state_dict(theirs.state_dict())  # strict: the same names and shapes
    x, context = torch.randn(2, 9, 16), torch.randn(2, 5, 12)
    torch.testing.assert_close(ours(x, context), theirs(x, encoder_hidden_states=context), **TOL)
    keep = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    bias = ((1 - keep.float()) * -10000.0)[:, None, :]  # diffusers' additive form
    torch.testing.assert_close(ours(x, context, mask=keep),
                               theirs(x, encoder_hidden_states=context, attention_mask=bias), **TOL)


@pytest.mark.parametrize("cross", [True, False])
def test_transformer_block_equals_diffusers_basic_transformer_block(cross):
    from diffusers.models.attention import BasicTransformerBlock

    context_dim = 12 if cross else None
    theirs = BasicTransformerBlock(16, 2, 8, cross_attention_dim=context_dim, activation_fn="geglu").eval()
    ours = TransformerBlock(16, 2, 8, context_dim=context_dim).eval()
    _randomise(theirs)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 9, 16)
    if cross:
        context = torch.randn(2, 5, 12)
        keep = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
        bias = ((1 - keep.float()) * -10000.0)[:, None, :]
        expected = theirs(x, encoder_hidden_states=context, encoder_attention_mask=bias)
        torch.testing.assert_close(ours(x, context, keep), expected, **TOL)
    else:
        torch.testing.assert_close(ours(x), theirs(x), **TOL)


@pytest.mark.parametrize("linear_projection", [False, True])
def test_spatial_transformer_equals_diffusers_transformer2d(linear_projection):
    from diffusers.models.transformers.transformer_2d import Transformer2DModel

    theirs = Transformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=16, num_layers=2,
                                cross_attention_dim=12, norm_num_groups=4,
                                use_linear_projection=linear_projection).eval()
    ours = SpatialTransformer(16, heads=2, dim_head=8, context_dim=12, depth=2, num_groups=4,
                              linear_projection=linear_projection).eval()
    _randomise(theirs)
    ours.load_state_dict(theirs.state_dict())
    x, context = torch.randn(2, 16, 5, 6), torch.randn(2, 4, 12)
    keep = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    expected = theirs(x, encoder_hidden_states=context, encoder_attention_mask=keep).sample
    out = ours(x, context, keep)
    assert out.shape == x.shape
    torch.testing.assert_close(out, expected, **TOL)


def test_clear_errors():
    q = torch.randn(2, 3, 5, 8)
    with pytest.raises(ValueError, match="feature size d_k"):
        scaled_dot_product_attention(q, torch.randn(2, 3, 7, 4), torch.randn(2, 3, 7, 4))
    with pytest.raises(ValueError, match="does not broadcast"):
        scaled_dot_product_attention(q, q, q, mask=torch.ones(2, 7, dtype=torch.bool))
    with pytest.raises(ValueError, match="no key at all"):
        scaled_dot_product_attention(q, q, q, mask=torch.zeros(5, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="boolean or 0/1"):
        scaled_dot_product_attention(q, q, q, mask=torch.full((5, 5), -1e4))
    cross = Attention(16, context_dim=12, heads=2, dim_head=8)
    with pytest.raises(ValueError, match="pass a context"):
        cross(torch.randn(2, 9, 16))
    with pytest.raises(ValueError, match=r"context of shape \(2, tokens, 12\)"):
        cross(torch.randn(2, 9, 16), torch.randn(2, 5, 16))
    with pytest.raises(ValueError, match=r"padding mask must have shape \(batch, context tokens\) = \(2, 5\)"):
        cross(torch.randn(2, 9, 16), torch.randn(2, 5, 12), mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match="tokens of shape"):
        cross(torch.randn(2, 16))
    with pytest.raises(ValueError, match="takes no context"):
        TransformerBlock(16, 2, 8)(torch.randn(2, 9, 16), torch.randn(2, 5, 16))
    with pytest.raises(ValueError, match="divisible by num_groups"):
        SpatialTransformer(10, 2, 8, num_groups=4)
    with pytest.raises(ValueError, match="feature map"):
        SpatialTransformer(16, 2, 8, num_groups=4)(torch.randn(2, 8, 4, 4))
