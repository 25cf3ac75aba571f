"""The filtering loop (:mod:`vrnn.kernels.filtering`): its gates against the library cells, its
hand-written backward pass against finite differences."""

import pytest
import torch
from torch import nn

from vrnn import build_model, model_config
from vrnn.kernels.filtering import LoopWeights, filtering_loop, gru_gates, lstm_gates


@pytest.mark.parametrize("B", [1, 3])
def test_gates_are_the_library_cells(B):
    """The one statement of the LSTM / GRU update against ``nn.LSTMCell`` / ``nn.GRUCell`` with
    the same weights: catches a wrong gate order, a b_hn outside r * (.), an h_t = u n + ..."""
    torch.manual_seed(0)
    X, H = 5, 4
    x, h, c = torch.randn(B, X), torch.randn(B, H), torch.randn(B, H)
    lstm = nn.LSTMCell(X, H)
    h_ref, c_ref = lstm(x, (h, c))
    pre = x @ lstm.weight_ih.T + lstm.bias_ih + h @ lstm.weight_hh.T + lstm.bias_hh
    h_new, c_new = lstm_gates(pre, c)
    torch.testing.assert_close(h_new, h_ref)
    torch.testing.assert_close(c_new, c_ref)
    gru = nn.GRUCell(X, H)
    gi = x @ gru.weight_ih.T + gru.bias_ih
    gh = h @ gru.weight_hh.T + gru.bias_hh
    torch.testing.assert_close(gru_gates(gi, gh, h), gru(x, h))
    # the buffered form the hand-written loop uses writes the same numbers where it is told
    act, h_out = torch.empty(B, 3 * H), torch.empty(B, H)
    with torch.no_grad():
        gru_gates(gi, gh, h, act=act, h_out=h_out)
    torch.testing.assert_close(h_out, gru(x, h))
    torch.testing.assert_close(act[:, H:2 * H], torch.sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H]))


@pytest.mark.parametrize("cell,replicas", [("lstm", 1), ("gru", 1), ("lstm", 2), ("gru", 3)])
def test_hand_written_backward_against_finite_differences(cell, replicas):
    """gradcheck in float64 on every input of the loop (phi_x features, initial state, every
    weight) with random gradients flowing into every output (h_{t-1} of each step, z,
    phi_z(z), the encoder's loc and scale, the final state)."""
    cfg = model_config("vrnn-gauss", x_dim=3, preset="tiny", cell=cell, h_dim=8, z_dim=3,
                       phi_x=(4,), encoder=(6, 5), phi_z=(4, 5))
    torch.manual_seed(0)
    model = build_model(cfg).double()
    B, T = 2, 4
    N = replicas * B
    gen = torch.Generator().manual_seed(0)
    feat_x = torch.randn(B, T, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    noise = torch.randn(N, T, 3, generator=gen, dtype=torch.float64)
    state = tuple(torch.randn(N, 8, generator=gen, dtype=torch.float64, requires_grad=True)
                  for _ in model.initial_state)
    weights = model.loop_weights()
    params = [p.detach().clone().requires_grad_() for p in weights.flat()]

    def loop(feat_x, *inputs):
        state, flat = inputs[:len(model.initial_state)], inputs[len(model.initial_state):]
        w = LoopWeights.from_flat(flat, len(weights.encoder), len(weights.phi_z))
        out = filtering_loop(feat_x, noise, state, w, min_scale=1e-4, replicas=replicas)
        return (*out[:-1], *out.state)

    assert torch.autograd.gradcheck(loop, (feat_x, *state, *params), eps=1e-6, atol=1e-6,
                                    rtol=1e-5, fast_mode=True)


def test_loop_weights_round_trip_and_are_the_parameters():
    """``flat`` / ``from_flat`` are inverses, and the loop reads the parameters themselves."""
    model = build_model(model_config("vrnn-gmm", x_dim=3, preset="tiny", encoder=(6, 5),
                                     phi_z=()))
    w = model.loop_weights()
    again = LoopWeights.from_flat(w.flat(), len(w.encoder), len(w.phi_z))
    assert [t.data_ptr() for t in again.flat()] == [t.data_ptr() for t in w.flat()]
    assert again.phi_z == () and len(again.encoder) == 2
    assert w.head[0] is model.encoder.gaussian.linear.weight
    assert w.cell[1] is model.cell.weight_hh
