"""Fine-tuning on an unseen task, initialised from the MBML policy (paper Sec. 5.3, Fig. 8), and the
same SAC from a random initialisation — R runs (every task × {mbml, scratch}) as one batched agent.

Sec. 5.3, step by step, and where each step lives:
  1. "use the multi-task policy to collect 10K transitions": episode 1 with z from the prior, then z
     from the posterior of everything collected so far (the evaluation protocol) — `sample_z`,
     called by the stage loop (`pipeline/finetune.py`), which steps the R environments in lockstep;
  2. "the task inference module infers a task identity z from the 10K transitions" — `frozen_z`;
  3. "train a new policy to imitate the actions taken by maximizing their log likelihood ... a
     diagonal Gaussian" — a tanh-Gaussian [256, 256] without z, `behaviour_clone` with
     `log_prob` (the tanh change of variables, SAC Eq. 21);
  4. "Fixing z as input, the distilled value function Q_D initializes the new value function" —
     `ZCritic` has Q_D's architecture with z as a frozen input buffer; `init_from_mbml` copies Q_D's
     nn.Linear weights (out, in) into the batched (in, out) layout;
  5. "we perform target policy smoothing [43] and double-Q learning [44] by training two identically
     initialized value functions with different mini-batches" — `update`.
  6. Fig. 8's comparison: interactions each run needs to reach a return — `interactions_to_threshold`.

The scratch runs use the same `ZCritic` (Q_D-shaped, z fixed to 0, random weights, the two critics
identical copies like the MBML runs') and the same actor, so the initialisation is the only
difference. Every tensor carries a leading run dimension R (`nets.BatchedMLP`); losses are summed
over runs (each run's own mean), so batched = R separate runs, and `update` has no loop over runs.
Haarnoja et al. 2018b (arXiv:1812.05905) equation numbers are marked "SAC Eq. n", Fujimoto et al.
2018 (TD3, arXiv:1802.09477) "TD3 Sec. n"; a bare "Sec. 5.3" is the MBML paper.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn

from .nets import BatchedMLP, soft_update, adam
from .sac import SACOptimisers, TanhGaussianActor, frozen, gaussian_draws

BC_ACTION_CLIP = 0.999      # |a| is clipped to this before atanh: the MBML policy's actions hit ±1 exactly


# ---- 1-2. task embedding from the collected transitions -------------------------------------------
def sample_z(policy, context: dict[str, np.ndarray], generator: torch.Generator) -> np.ndarray:
    """z ~ q_φ(c) for one run's context (N, ·), or from the prior N(0, I) when N = 0 (episode 1)."""
    if len(context["rew"]) == 0:
        return policy.sample(policy.prior(), generator)
    return policy.sample(policy.infer(context["obs"], context["act"], context["rew"], context["next_obs"]),
                         generator)


def frozen_z(policy, context: dict[str, np.ndarray]) -> np.ndarray:
    """The z every later step uses: the posterior mean given all collected transitions (Sec. 5.3;
    with thousands of transitions the product-of-Gaussians posterior is so narrow that its mean and a
    sample coincide, and the mean makes the initialisation independent of one more random draw)."""
    return np.asarray(policy.infer(context["obs"], context["act"], context["rew"], context["next_obs"]).mean,
                      np.float32)


# ---- 3-4. networks ---------------------------------------------------------------------------------
class ZCritic(nn.Module):
    """Q(s, a) = MLP([s_n, a, z]) with Q_D's widths and z a frozen per-run buffer (R, 1, L):
    (R, B, obs) normalised states, (R, B, act) → (R, B, 1)."""

    def __init__(self, n_runs: int, obs_dim: int, act_dim: int, latent_dim: int, hidden: list[int]):
        super().__init__()
        self.net = BatchedMLP(n_runs, obs_dim + act_dim + latent_dim, list(hidden), 1)
        self.register_buffer("z", torch.zeros(n_runs, 1, latent_dim))

    def forward(self, s_n: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        z = self.z.expand(s_n.shape[0], s_n.shape[1], self.z.shape[-1])
        return self.net(torch.cat([s_n, a, z], dim=-1))


class FinetuneAgent(nn.Module):
    """R SAC agents: `actor` (tanh-Gaussian, no z), `critic1`/`critic2` (`ZCritic`, identical at
    initialisation — Sec. 5.3), their Polyak targets, one log α per run, and the fixed state
    normalisation (R, 1, obs) of the MBML networks, applied to actor and critic inputs alike."""

    def __init__(self, n_runs: int, obs_dim: int, act_dim: int, latent_dim: int, actor_hidden: list[int],
                 critic_hidden: list[int], alpha_init: float = 1.0):
        super().__init__()
        self.n_runs, self.obs_dim, self.act_dim, self.latent_dim = n_runs, obs_dim, act_dim, latent_dim
        self.actor = TanhGaussianActor(n_runs, obs_dim, act_dim, actor_hidden)
        self.critic1 = ZCritic(n_runs, obs_dim, act_dim, latent_dim, critic_hidden)
        self.critic2 = copy.deepcopy(self.critic1)                  # "two identically initialized" (Sec. 5.3)
        self.target1 = copy.deepcopy(self.critic1).requires_grad_(False)
        self.target2 = copy.deepcopy(self.critic2).requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.full((n_runs,), math.log(alpha_init)))
        self.register_buffer("obs_mean", torch.zeros(n_runs, 1, obs_dim))
        self.register_buffer("obs_std", torch.ones(n_runs, 1, obs_dim))
        self.target_entropy = -float(act_dim)                       # −|A|, as in collection

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp()

    def critic_parameters(self) -> list[nn.Parameter]:
        return [*self.critic1.parameters(), *self.critic2.parameters()]

    def norm(self, s: torch.Tensor) -> torch.Tensor:
        return (s - self.obs_mean) / self.obs_std

    def q(self, s: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both critics on raw states (R, B, obs): ((R, B), (R, B))."""
        s_n = self.norm(s)
        return self.critic1(s_n, a).squeeze(-1), self.critic2(s_n, a).squeeze(-1)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False,
            generator: torch.Generator | None = None) -> torch.Tensor:
        """(R, obs) → (R, act): a sample of π (exploration), or tanh(μ) (evaluation)."""
        s_n = self.norm(obs.unsqueeze(1))
        a = self.actor.mode(s_n) if deterministic else self.actor(s_n, generator=generator)[0]
        return a.squeeze(1)


def set_obs_stats(agent: FinetuneAgent, obs_mean: torch.Tensor, obs_std: torch.Tensor) -> None:
    """Every run uses the MBML networks' fixed state statistics (part of Q_D's architecture, so the
    scratch runs get them too: they differ only in their weights)."""
    with torch.no_grad():
        agent.obs_mean.copy_(torch.as_tensor(obs_mean).reshape(1, 1, -1).expand_as(agent.obs_mean))
        agent.obs_std.copy_(torch.as_tensor(obs_std).reshape(1, 1, -1).expand_as(agent.obs_std))


def linear_layers(seq: nn.Sequential) -> list[nn.Linear]:
    return [m for m in seq if isinstance(m, nn.Linear)]


@torch.no_grad()
def load_q_d(critic: ZCritic, rows: list[int], q_d: nn.Sequential, z: torch.Tensor,
             scale: float = 1.0, shift: float = 0.0) -> None:
    """Critic rows `rows` ← scale·Q_D(·, ·, z_r) + shift (Sec. 5.3; scale and shift are the distilled
    policy's `q_std` and `q_mean`, folded into the last layer). nn.Linear keeps W (out, in) and
    computes x Wᵀ; `BatchedLinear` keeps W (R, in, out) and computes x W, so each run's slice is Wᵀ;
    biases (out,) become (1, out). z (len(rows), L) goes into the frozen input buffer."""
    layers = linear_layers(q_d)
    if len(layers) != len(critic.net.layers):
        raise ValueError(f"critic has {len(critic.net.layers)} layers, Q_D has {len(layers)}")
    idx = torch.as_tensor(rows, device=critic.z.device)
    for ours, theirs in zip(critic.net.layers, layers):
        if ours.weight.shape[1:] != theirs.weight.T.shape:
            raise ValueError(f"critic layer {tuple(ours.weight.shape[1:])} ≠ Q_D layer {tuple(theirs.weight.T.shape)}")
        ours.weight[idx] = theirs.weight.T.to(ours.weight)
        ours.bias[idx] = theirs.bias.reshape(1, -1).to(ours.bias)
    last = critic.net.layers[-1]                        # Q_D's output scale, folded into its last layer
    last.weight[idx] *= scale
    last.bias[idx] = last.bias[idx] * scale + shift
    critic.z[idx] = torch.as_tensor(z, dtype=critic.z.dtype, device=critic.z.device).reshape(len(rows), 1, -1)


@torch.no_grad()
def init_from_mbml(agent: FinetuneAgent, rows: list[int], q_d: nn.Sequential, z,
                   scale: float = 1.0, shift: float = 0.0) -> None:
    """Both critics and both targets of the MBML runs ← scale·Q_D(·, ·, z) + shift (Sec. 5.3)."""
    for critic in (agent.critic1, agent.critic2, agent.target1, agent.target2):
        load_q_d(critic, rows, q_d, z, scale, shift)


# ---- 3. behaviour cloning by maximum likelihood -----------------------------------------------------
def log_prob(actor: TanhGaussianActor, s_n: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """log π(a|s) of the tanh-Gaussian at a given action a ∈ (−1, 1): with u = atanh(a),
    log N(u; μ, σ) − Σ log(1 − tanh²u) (SAC Eq. 21). (R, B, obs), (R, B, act) → (R, B)."""
    mean, log_std = actor.mean_log_std(s_n)
    u = torch.atanh(a.clamp(-BC_ACTION_CLIP, BC_ACTION_CLIP))
    logp = (-0.5 * ((u - mean) / log_std.exp()).pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
    return logp - (2 * (math.log(2) - u - nn.functional.softplus(-2 * u))).sum(-1)             # SAC Eq. 21


def behaviour_clone(agent: FinetuneAgent, obs: torch.Tensor, act: torch.Tensor, weight: torch.Tensor,
                    steps: int, lr: float, batch_size: int, generator: torch.Generator) -> list[float]:
    """Fit the actor to the collected actions by maximum likelihood (Sec. 5.3): `steps` Adam steps
    on −E log π(a|s) over mini-batches of the runs' data obs (R, N, obs), act (R, N, act).
    `weight` (R,) is 1 for runs to fit and 0 for the others, whose gradient is then exactly zero, so
    Adam leaves their weights untouched. Returns the weighted loss of every step."""
    opt = adam(agent.actor.parameters(), lr)
    R, N = obs.shape[:2]
    rows = torch.arange(R, device=obs.device)[:, None]
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, N, (R, batch_size), generator=generator, device=obs.device)
        nll = -log_prob(agent.actor, agent.norm(obs[rows, idx]), act[rows, idx]).mean(dim=1)   # (R,)
        loss = (weight * nll).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()) / max(float(weight.sum()), 1.0))
    return losses


# ---- 5. the SAC update: two critics on different mini-batches, target policy smoothing -----------
def sample_noise(n_runs: int, batch_size: int, act_dim: int, generator: torch.Generator | None = None,
                 device="cpu") -> dict[str, torch.Tensor]:
    """The Gaussian draws one `update` consumes: a′ ~ π(s′) and the smoothing noise for both
    mini-batches (R, 2B, act), and ã ~ π(s) for the actor (R, B, act)."""
    two, one = (n_runs, 2 * batch_size, act_dim), (n_runs, batch_size, act_dim)
    return gaussian_draws({"next": two, "smooth": two, "pi": one}, generator, device)


def update(agent: FinetuneAgent, opt: SACOptimisers, batch1: dict, batch2: dict, gamma: float, tau: float,
           policy_noise: float, noise_clip: float, noise: dict | None = None,
           generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """One SAC step on every run. critic1 learns from `batch1`, critic2 from `batch2` (Sec. 5.3,
    double-Q learning with different mini-batches); each batch: obs, act, rew (R, B), next_obs,
    terminal (R, B). Only `terminal` stops the bootstrap. Returns per-run (R,) values."""
    B = batch1["rew"].shape[1]
    cat = lambda k: torch.cat([batch1[k], batch2[k]], dim=1)                  # both batches, (R, 2B, ·)
    s2, r, done = cat("next_obs"), cat("rew"), cat("terminal").float()
    if noise is None:
        noise = sample_noise(agent.n_runs, B, agent.act_dim, generator, r.device)
    alpha = agent.alpha.detach()[:, None]                                     # (R, 1)

    # ---- critics: the soft target of SAC Eq. 7-8 with target policy smoothing (TD3 Sec. 5.3)
    with torch.no_grad():
        s2_n = agent.norm(s2)
        a2, logp2 = agent.actor(s2_n, noise["next"])                           # a′ ~ π(·|s′)
        eps = (policy_noise * noise["smooth"]).clamp(-noise_clip, noise_clip)  # clip(N(0, σ̃²), −c, c)
        a2 = (a2 + eps).clamp(-1.0, 1.0)                                       # smoothed target action
        v2 = torch.min(agent.target1(s2_n, a2), agent.target2(s2_n, a2)).squeeze(-1) - alpha * logp2
        y = r + gamma * (1.0 - done) * v2                                      # SAC Eq. 7 (clipped double Q)
    q1 = agent.critic1(agent.norm(batch1["obs"]), batch1["act"]).squeeze(-1)   # critic1 on mini-batch 1
    q2 = agent.critic2(agent.norm(batch2["obs"]), batch2["act"]).squeeze(-1)   # critic2 on mini-batch 2
    critic_loss = (q1 - y[:, :B]).pow(2).mean(1) + (q2 - y[:, B:]).pow(2).mean(1)          # (R,) SAC Eq. 8
    opt.critic.zero_grad(set_to_none=True)
    critic_loss.sum().backward()
    opt.critic.step()

    # ---- actor: SAC Eq. 12 on mini-batch 1's states, min of both critics
    s_n = agent.norm(batch1["obs"])
    a_pi, logp = agent.actor(s_n, noise["pi"])
    with frozen(agent.critic1), frozen(agent.critic2):   # the actor's gradient flows through the critics' inputs only
        q_pi = torch.min(agent.critic1(s_n, a_pi), agent.critic2(s_n, a_pi)).squeeze(-1)
        actor_loss = (alpha * logp - q_pi).mean(1)                             # (R,)
        opt.actor.zero_grad(set_to_none=True)
        actor_loss.sum().backward()
    opt.actor.step()

    # ---- temperature: SAC Eq. 18, target entropy −|A|
    alpha_loss = -(agent.log_alpha[:, None] * (logp.detach() + agent.target_entropy)).mean(1)
    opt.alpha.zero_grad(set_to_none=True)
    alpha_loss.sum().backward()
    opt.alpha.step()

    soft_update(agent.target1, agent.critic1, tau)                             # Polyak, the recipe's τ
    soft_update(agent.target2, agent.critic2, tau)
    return {"critic_loss": critic_loss.detach(), "actor_loss": actor_loss.detach(),
            "alpha": agent.alpha.detach().clone(), "entropy": -logp.detach().mean(1),
            "q": q1.detach().mean(1)}


# ---- 6. Fig. 8's measure --------------------------------------------------------------------------
def trailing_mean(x: np.ndarray, k: int) -> np.ndarray:
    """Mean of the last min(k, i + 1) values at every i (the first value stays as it is)."""
    c = np.cumsum(np.concatenate([[0.0], np.asarray(x, np.float64)]))
    i = np.arange(1, len(x) + 1)
    lo = np.maximum(i - k, 0)
    return (c[i] - c[lo]) / (i - lo)


def interactions_to_threshold(curves: dict[str, tuple[np.ndarray, np.ndarray]], fraction: float,
                              smooth: int = 1) -> dict:
    """`curves`: init name → (interactions, return), each run's evaluations in order.

    Each curve is first smoothed by a trailing mean over `smooth` evaluations (one evaluation of a
    changing policy is noisy; a lucky episode should not count as reaching the threshold). The
    threshold lies `fraction` of the way from the worst initial return (the lower of the runs' first
    evaluations) to the best smoothed return any run reaches:  thr = worst₀ + fraction·(best − worst₀).
    With worst₀ = 0 this is `fraction` × the best return; it is well defined for negative returns.
    A run reaches it at the interactions of its first evaluation whose smoothed return is ≥ thr
    (None: never)."""
    smoothed = {name: trailing_mean(ret, smooth) for name, (_, ret) in curves.items()}
    worst0 = min(float(ret[0]) for _, ret in curves.values())
    best = max(float(np.max(v)) for v in smoothed.values())
    thr = worst0 + fraction * (best - worst0)
    reached = {}
    for name, (inter, _) in curves.items():
        hits = np.flatnonzero(smoothed[name] >= thr)
        reached[name] = int(inter[hits[0]]) if len(hits) else None
    return {"threshold": thr, "best": best, "worst_initial": worst0, "reached": reached}


def saving(mbml: int | None, scratch: int | None, total: int) -> tuple[float | None, bool]:
    """Interactions saved by the MBML initialisation, in % of the scratch run's: (value, is a lower
    bound). A scratch run that never reaches the threshold counts as `total` (so "≥ value")."""
    if mbml is None:
        return None, False
    if scratch is None:
        return 100.0 * (1.0 - mbml / total), True
    return 100.0 * (1.0 - mbml / scratch), False
