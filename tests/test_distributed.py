"""Collectives and shuffle-BN in one process and in two gloo processes."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from densessl.distributed import all_gather, shuffle_bn_forward
from densessl.methods import Step
from densessl.methods.densecl import DenseCL, DenseCLConfig
from tests.helpers import random_views, run_in_gloo_processes, tiny_factory


def bn_encoder() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )


def test_gather_is_identity_in_one_process():
    x = torch.randn(3, 2)
    assert all_gather(x) is x


def test_shuffle_then_unshuffle_is_identity():
    x = torch.randn(8, 3, 5, 5)
    out = shuffle_bn_forward(
        lambda t: (t, t.sum(dim=(1, 2, 3))), x, torch.Generator().manual_seed(3), groups=4
    )
    assert torch.equal(out[0], x)
    assert torch.allclose(out[1], x.sum(dim=(1, 2, 3)))


def test_single_process_shuffle_bn_uses_group_statistics():
    encoder = bn_encoder().train()
    x = torch.randn(8, 3, 6, 6)
    (out,) = shuffle_bn_forward(lambda t: (encoder(t),), x, torch.Generator().manual_seed(5), groups=2)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(5))
    expected = torch.empty_like(out)
    for chunk in perm.chunk(2):
        expected[chunk] = encoder(x[chunk])
    assert torch.allclose(out, expected, atol=1e-6)
    assert not torch.allclose(out, encoder(x), atol=1e-4)  # whole-batch statistics differ


def _worker(rank: int, world: int) -> tuple:
    # shuffle-BN across processes equals the single-process substitute with groups=world
    encoder = bn_encoder().train()
    x = torch.randn(8, 3, 6, 6, generator=torch.Generator().manual_seed(11))
    local = x.chunk(world)[rank]
    (bn_out,) = shuffle_bn_forward(lambda t: (encoder(t),), local, torch.Generator().manual_seed(5))

    # DenseCL with DDP on a BN-free backbone: same losses and queues as one process
    model = DenseCL(DenseCLConfig(dim=4, hidden_dim=6, queue_size=12, momentum=0.9), tiny_factory())
    ddp = nn.parallel.DistributedDataParallel(model, broadcast_buffers=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    losses = []
    for step in range(3):
        views = random_views(4, seed=step)
        views.images = [v.chunk(world)[rank] for v in views.images]
        out = ddp(views, Step(step, 10, 0, torch.Generator().manual_seed(step)))
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        reduced = out["loss"].detach().clone()
        dist.all_reduce(reduced)
        losses.append(float(reduced) / world)
    keys = (model.queue.keys.numpy().copy(), model.dense_queue.keys.numpy().copy())
    return (bn_out.detach().numpy().copy(), losses, *keys)


def test_two_gloo_processes_match_one_process():
    world = 2
    results = [
        (rank, *result) for rank, result in sorted(run_in_gloo_processes(_worker, world=world).items())
    ]

    encoder = bn_encoder().train()
    x = torch.randn(8, 3, 6, 6, generator=torch.Generator().manual_seed(11))
    (expected_bn,) = shuffle_bn_forward(
        lambda t: (encoder(t),), x, torch.Generator().manual_seed(5), groups=world
    )
    gathered_bn = torch.cat([torch.from_numpy(r[1]) for r in results])
    assert torch.allclose(gathered_bn, expected_bn, atol=1e-5)

    model = DenseCL(DenseCLConfig(dim=4, hidden_dim=6, queue_size=12, momentum=0.9), tiny_factory())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    single = []
    for step in range(3):
        out = model(random_views(4, seed=step), Step(step, 10, 0, torch.Generator().manual_seed(step)))
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        single.append(float(out["loss"].detach()))
    for rank_result in results:
        assert all(abs(a - b) < 1e-5 for a, b in zip(rank_result[2], single, strict=True)), (
            rank_result[2],
            single,
        )
        assert torch.allclose(torch.from_numpy(rank_result[3]), model.queue.keys, atol=1e-5)
        assert torch.allclose(torch.from_numpy(rank_result[4]), model.dense_queue.keys, atol=1e-5)


def _batchnorm_case():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(8, 4, 3, 3, generator=g) * 3 + 1
    probe = torch.randn(8, 4, 3, 3, generator=g)
    bn = nn.BatchNorm2d(4, momentum=0.3)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(4, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(4, generator=g))
    return x, probe, bn


def _batchnorm_worker(rank: int, world: int) -> list:
    from densessl.distributed import GlobalBatchNorm, convert_sync_batchnorm

    x, probe, bn = _batchnorm_case()
    model = convert_sync_batchnorm(nn.Sequential(bn), torch.device("cpu"))
    assert isinstance(model[0], GlobalBatchNorm)
    local = x.chunk(world)[rank].clone().requires_grad_(True)
    out = model(local)
    (out * probe.chunk(world)[rank]).sum().backward()
    results = [out.detach(), local.grad, model[0].weight.grad, model[0].bias.grad]
    results += [model[0].running_mean, model[0].running_var]
    return [t.detach().numpy().copy() for t in results]


def test_global_batchnorm_in_two_gloo_processes_is_batchnorm_on_the_whole_batch():
    world = 2
    results = run_in_gloo_processes(_batchnorm_worker, world=world)
    x, probe, bn = _batchnorm_case()
    x.requires_grad_(True)
    out = bn(x)
    (out * probe).sum().backward()
    got = [torch.from_numpy(results[r][0]) for r in range(world)]
    torch.testing.assert_close(torch.cat(got), out.detach(), atol=1e-5, rtol=1e-5)
    grads = torch.cat([torch.from_numpy(results[r][1]) for r in range(world)])
    torch.testing.assert_close(grads, x.grad, atol=1e-5, rtol=1e-5)
    # each process holds its share of the affine gradients; DDP sums (averages) them
    weight_grad = sum(torch.from_numpy(results[r][2]) for r in range(world))
    bias_grad = sum(torch.from_numpy(results[r][3]) for r in range(world))
    torch.testing.assert_close(weight_grad, bn.weight.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(bias_grad, bn.bias.grad, atol=1e-5, rtol=1e-5)
    for r in range(world):
        torch.testing.assert_close(torch.from_numpy(results[r][4]), bn.running_mean, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(torch.from_numpy(results[r][5]), bn.running_var, atol=1e-6, rtol=1e-5)


def test_global_batchnorm_alone_is_plain_batchnorm():
    from densessl.distributed import convert_sync_batchnorm

    x, _, bn = _batchnorm_case()
    converted = convert_sync_batchnorm(nn.Sequential(_batchnorm_case()[2]), torch.device("cpu"))
    torch.testing.assert_close(converted(x), bn(x))
    assert set(converted.state_dict()) == {f"0.{k}" for k in bn.state_dict()}
