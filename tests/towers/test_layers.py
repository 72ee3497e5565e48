"""The SDPA training path of the encoder equals PyTorch's own encoder."""
import torch
from torch import nn

from jointspace.towers.layers import transformer_encoder


def test_training_forward_and_gradients_match_stock_encoder():
    torch.manual_seed(0)
    ours = transformer_encoder(32, layers=2, heads=4)
    stock = nn.TransformerEncoder(ours.layers[0], num_layers=2, enable_nested_tensor=False)
    stock.load_state_dict(ours.state_dict())
    x = torch.randn(5, 9, 32)
    pad = torch.zeros(5, 9, dtype=torch.bool)
    pad[1, 6:] = True
    pad[3, 2:] = True
    outs, grads = [], []
    for enc in (ours, stock):
        enc.train()
        xi = x.clone().requires_grad_()
        y = enc(xi, src_key_padding_mask=pad)
        y[~pad].sum().backward()  # padded positions' outputs are never used
        outs.append(y[~pad].detach())
        grads.append([xi.grad] + [p.grad for p in enc.parameters()])
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)
    for g_ours, g_stock in zip(*grads):
        torch.testing.assert_close(g_ours, g_stock, rtol=1e-4, atol=1e-5)
    with torch.no_grad():  # eval mode takes the stock fast path
        torch.testing.assert_close(ours.eval()(x, src_key_padding_mask=pad)[~pad],
                                   outs[1], rtol=1e-5, atol=1e-5)
