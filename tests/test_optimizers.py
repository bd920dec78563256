import pytest
import torch

from cifar10_classifier.training.optimizers import MuonSGD, lookahead_decay, lookahead_step, orthogonalize


def test_orthogonalize_flattens_the_singular_values():
    torch.manual_seed(0)
    for shape in [(8, 32), (32, 8)]:
        matrix = torch.randn(*shape) @ torch.diag(torch.logspace(-1, 1, shape[1]))  # badly conditioned
        singular_values = torch.linalg.svdvals(orthogonalize(matrix))
        # Newton-Schulz with these coefficients lands every singular value near 1 (roughly 0.7-1.2), not exactly.
        assert singular_values.min() > 0.5 and singular_values.max() < 1.3, singular_values


def test_muon_groups_keep_the_filter_norm_and_sgd_groups_match_torch_sgd():
    torch.manual_seed(0)
    filters = torch.nn.Parameter(torch.randn(4, 3, 3, 3))
    bias = torch.nn.Parameter(torch.randn(4))
    reference_bias = torch.nn.Parameter(bias.detach().clone())
    optimizer = MuonSGD(
        [
            {"params": [filters], "lr": 0.1, "momentum": 0.6, "orthogonal": True},
            {"params": [bias], "lr": 0.05, "weight_decay": 0.01},
        ],
        momentum=0.9,
    )
    reference = torch.optim.SGD([reference_bias], lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)
    for _ in range(3):
        gradient = torch.randn(4)
        filters.grad, bias.grad, reference_bias.grad = torch.randn_like(filters), gradient, gradient.clone()
        before = filters.detach().clone()
        optimizer.step()
        reference.step()
        assert not torch.equal(before, filters)
    # The filter bank is renormalized to sqrt(out_channels) before each step of size ~lr: its norm stays put.
    assert abs(filters.norm().item() - 2.0) < 0.5
    assert torch.allclose(bias, reference_bias, atol=1e-6)
    state = optimizer.state_dict()
    assert len(state["param_groups"]) == 2 and len(state["state"]) == 2


def test_lookahead_step_averages_then_resets_the_weights():
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    average = lookahead_step(model, None, 0.0)
    with torch.no_grad():
        model.weight.fill_(3.0)
    lookahead_step(model, average, 0.75)  # average moves a quarter of the way: 1 -> 1.5
    assert torch.allclose(model.weight, torch.full((1, 2), 1.5)) and torch.equal(average["weight"], model.weight)
    assert lookahead_decay(0, 100) == 0.0
    assert lookahead_decay(100, 100) == pytest.approx(0.95**5)
