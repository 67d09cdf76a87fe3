import pytest
import torch

from raylrec.models import ModelConfig, build_model
from raylrec.train.losses import bce_loss, cross_entropy_loss, sample_negatives

TINY = dict(hidden_size=16, max_len=8, num_layers=1, num_heads=2, inner_size=32, dropout=0.0, attn_dropout=0.0)


@pytest.fixture(
    params=[{"name": "sasrec"}, {"name": "sasrec", "norm_first": True}, {"name": "gru4rec"}],
    ids=["sasrec", "sasrec-norm-first", "gru4rec"],
)
def model(request):
    torch.manual_seed(0)
    return build_model(30, ModelConfig(**request.param, **TINY)).eval()


def test_shapes_and_padding_column(model):
    seq = torch.tensor([[0, 0, 0, 3, 4, 5, 6, 7], [1, 2, 3, 4, 5, 6, 7, 8]])
    hidden = model.encode(seq)
    assert hidden.shape == (2, 8, 16)
    scores = model.score_all(model.user_vector(seq))
    assert scores.shape == (2, 31)
    assert torch.isinf(scores[:, 0]).all() and torch.isfinite(scores[:, 1:]).all()


def test_no_position_sees_the_future(model):
    seq = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8]])
    changed = seq.clone()
    changed[0, 6:] = torch.tensor([20, 21])
    a, b = model.encode(seq), model.encode(changed)
    assert torch.allclose(a[0, :6], b[0, :6], atol=1e-6)
    assert not torch.allclose(a[0, 6:], b[0, 6:])


def test_padding_positions_are_zero(model):
    hidden = model.encode(torch.tensor([[0, 0, 0, 3, 4, 5, 6, 7]]))
    assert (hidden[0, :3] == 0).all()


@pytest.mark.parametrize("ffn_dropout, random", [(None, False), (0.0, False), (0.9, True)])
def test_sasrec_feed_forward_dropout_is_its_own_knob(ffn_dropout, random):
    """With every other dropout at 0, training-mode outputs vary only if the feed-forward drops out
    (None follows attn_dropout, as torch's encoder layer does)."""
    torch.manual_seed(0)
    sasrec = build_model(30, ModelConfig(name="sasrec", **{**TINY, "ffn_dropout": ffn_dropout})).train()
    seq = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8]])
    assert torch.equal(sasrec.encode(seq), sasrec.encode(seq)) is not random


@pytest.mark.parametrize("norm_first", [False, True])
def test_sasrec_skips_padding_columns_without_changing_any_output(norm_first):
    """Rows are encoded in groups of similar length, each from its first column holding an item; every output equals
    that of running the blocks over the whole window, whatever the lengths (here: 0 to 8 items in 8 columns)."""
    torch.manual_seed(0)
    sasrec = build_model(30, ModelConfig(name="sasrec", norm_first=norm_first, **TINY)).eval()
    lengths = [3, 8, 0, 1, 5, 2, 7, 4, 6]
    seq = torch.zeros(len(lengths), 8, dtype=torch.long)
    for row, n in enumerate(lengths):
        seq[row, 8 - n :] = torch.randint(1, 31, (n,))
    assert sasrec.first_item_columns(seq).tolist() == [8 - n if n else 7 for n in lengths]
    whole_window = sasrec.encode_columns(sasrec.item_embedding(seq), seq, first_position=0)
    assert torch.allclose(sasrec.encode(seq), whole_window, atol=1e-6)
    assert torch.allclose(sasrec.encode(seq[4:5]), whole_window[4:5], atol=1e-6)  # one row, one group


def test_gru_ignores_the_amount_of_left_padding():
    torch.manual_seed(0)
    gru = build_model(30, ModelConfig(name="gru4rec", **TINY)).eval()
    short = gru.user_vector(torch.tensor([[0, 0, 0, 0, 5, 6, 7, 8]]))
    longer_window = gru.user_vector(torch.tensor([[5, 6, 7, 8]]))
    assert torch.allclose(short, longer_window, atol=1e-6)


@pytest.mark.parametrize("loss", ["ce", "bce"])
def test_losses_decrease_when_training(model, loss):
    torch.manual_seed(1)
    model.train()
    window = torch.tensor([[0, 0, 1, 2, 3, 4, 5, 6, 7], [0, 9, 8, 7, 6, 5, 4, 3, 2]])
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(30):
        hidden = model(window[:, :-1])
        if loss == "ce":
            value = cross_entropy_loss(model, hidden, window[:, 1:])
        else:
            negatives = sample_negatives(window[:, 1:], window, 30, generator)
            value = bce_loss(model, hidden, window[:, 1:], negatives)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        losses.append(value.item())
    assert losses[-1] < 0.5 * losses[0]


def test_label_smoothing_spreads_the_target_over_real_items_only():
    """Hand-computed on 3 items: (1 - ε)·(-log p_target) + ε·mean over the 3 items of -log p; the padding column
    (-inf) gets no share, else the loss would be infinite."""
    model = build_model(3, ModelConfig(name="gru4rec", **TINY))
    table = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    model.item_table = lambda: table
    hidden, targets = torch.tensor([[[2.0, 0.0]]]), torch.tensor([[1]])
    log_p = torch.log_softmax(torch.tensor([2.0, 0.0, 2.0]), dim=0)
    expected = 0.8 * -log_p[0] + 0.2 * -log_p.mean()
    assert torch.isclose(cross_entropy_loss(model, hidden, targets, label_smoothing=0.2), expected)
    assert torch.isclose(cross_entropy_loss(model, hidden, targets), -log_p[0])


def test_sampled_negatives_avoid_the_window():
    window = torch.arange(1, 10).repeat(64, 1)  # items 1..9 seen; 10..12 unseen
    negatives = sample_negatives(
        window[:, 1:], window, num_items=12, generator=torch.Generator().manual_seed(0), retries=20
    )
    assert (negatives >= 10).all() and (negatives <= 12).all()


def test_sasrec_norm_first_normalises_before_each_sub_layer_and_after_the_last_block():
    """The authors' layout: pre-norm layers plus a final norm; the default (RecBole's) has neither."""
    pre = build_model(30, ModelConfig(name="sasrec", norm_first=True, **TINY))
    post = build_model(30, ModelConfig(name="sasrec", **TINY))
    assert all(layer.norm_first for layer in pre.blocks.layers) and isinstance(pre.blocks.norm, torch.nn.LayerNorm)
    assert not any(layer.norm_first for layer in post.blocks.layers) and post.blocks.norm is None
