"""CUDA-graph replay of the diffusion models' forward: same outputs as eager, eager wherever it cannot replay."""

import pytest
import torch

from engine.cuda_graphs import GraphedForward, use_cuda_graphs


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(8, 16), torch.nn.Linear(16, 8)

    def forward(self, x, t, *, extra=None, scale=1.0, return_dict=True):
        y = self.b(torch.relu(self.a(x) + t[..., None])) * scale
        if extra is not None:
            y = y + sum(extra)
        return (y, [y * 2]) if not return_dict else {"y": y}


def test_cpu_inputs_and_grad_mode_run_eagerly():
    net = Net()
    use_cuda_graphs(net, True)
    assert isinstance(net.forward, GraphedForward)
    x, t = torch.randn(2, 8), torch.tensor(0.5)
    with torch.no_grad():
        out = net(x, t, return_dict=False)
    assert net.forward.captures == 0 and not net.forward.graphs
    assert torch.equal(out[0], Net.forward(net, x, t, return_dict=False)[0])
    use_cuda_graphs(net, False)
    assert not net.forward.enabled
    plain = Net()
    use_cuda_graphs(plain, False)  # never enabled: nothing installed
    assert "forward" not in plain.__dict__


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device (run on the GPU machine)")
def test_replay_matches_eager_per_signature():
    net = Net().cuda().half()
    use_cuda_graphs(net, True)
    g = torch.Generator(device="cuda").manual_seed(0)
    with torch.no_grad():
        for step in range(4):
            x = torch.randn(2, 8, device="cuda", generator=g).half()
            t = torch.tensor(float(step), device="cuda").half()
            extra = [torch.randn(2, 8, device="cuda", generator=g).half()]
            out, doubled = net(x, t, extra=extra, scale=0.5, return_dict=False)
            ref, ref2 = Net.forward(net, x, t, extra=extra, scale=0.5, return_dict=False)
            assert torch.equal(out, ref) and torch.equal(doubled[0], ref2[0])
        assert net.forward.captures == 1  # one signature, captured once, replayed after
        net(torch.randn(3, 8, device="cuda").half(), t, scale=0.5, return_dict=False)  # another shape: another graph
        assert net.forward.captures == 2
        kept = net(x, t, scale=0.5, return_dict=False)[0]
        net(x * 2, t, scale=0.5, return_dict=False)
        assert torch.equal(kept, Net.forward(net, x, t, scale=0.5, return_dict=False)[0])  # outputs are copies
