"""Layers and MLPs with a leading task (or task × member) dimension.

One `BatchedMLP` holds K independent networks: weights (K, in, out), inputs (K, B, in). One
`torch.baddbmm` per layer trains all K at once — no Python loop over tasks. Task k's slice of every
parameter is exactly the network a single-task run would have, so weights can be stored, loaded
and compared per task (`task_state`, `stack_states`).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..recipe.limits import auto_threads


class BatchedLinear(nn.Module):
    def __init__(self, n: int, d_in: int, d_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, d_in, d_out))
        self.bias = nn.Parameter(torch.empty(n, 1, d_out))
        bound = 1.0 / math.sqrt(d_in)           # nn.Linear's default initialisation
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class BatchedMLP(nn.Module):
    """K MLPs d_in → hidden... → d_out with ReLU between layers; (K, B, d_in) → (K, B, d_out). With
    `layer_norm`, each hidden layer is normalised (no gain or bias) before its ReLU."""

    def __init__(self, n: int, d_in: int, hidden: list[int], d_out: int, layer_norm: bool = False):
        super().__init__()
        sizes = [d_in, *hidden, d_out]
        self.layers = nn.ModuleList(BatchedLinear(n, a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.layer_norm = layer_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = layer(x)
            if self.layer_norm:
                x = nn.functional.layer_norm(x, x.shape[-1:])
            x = x.relu_()             # in place: neither baddbmm's nor layer_norm's backward needs its output
        return self.layers[-1](x)


def mlp(d_in: int, hidden: list[int], d_out: int) -> nn.Sequential:
    """A single (unbatched) ReLU MLP, for the distilled multi-task networks."""
    sizes = [d_in, *hidden]
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(sizes[-1], d_out))


def task_state(module: nn.Module, k: int) -> dict[str, torch.Tensor]:
    """Task k's slice of every parameter/buffer of a batched module (leading dim removed)."""
    return {name: t[k].detach().clone() for name, t in module.state_dict().items()}


def stack_states(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Inverse of `task_state` over tasks: a state dict for a batched module of len(states)."""
    return {name: torch.stack([torch.as_tensor(s[name]) for s in states]) for name in states[0]}


def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging θ' ← τθ + (1 − τ)θ', every tensor in one call."""
    with torch.no_grad():
        torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)


def adam(params, lr: float) -> torch.optim.Adam:
    """Adam as every algorithm here uses it: the multi-tensor (`foreach`) implementation, one call per
    operation over all of a part's tensors instead of a Python loop over them (the same numbers)."""
    return torch.optim.Adam(params, lr=lr, foreach=True)


def device_of(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int, threads: int = 0, device: torch.device | str = "cpu") -> torch.Generator:
    """Deterministic CPU runs: same seed → same numbers. Returns a generator on `device`. `threads`
    0: `auto_threads()`."""
    torch.manual_seed(seed)
    torch.set_num_threads(threads or auto_threads())
    return torch.Generator(device=device).manual_seed(seed)
