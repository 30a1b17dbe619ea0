"""MetaGenRL in the batch setting — the paper's Fig. 5 baseline: Kirsch, van Steenkiste & Schmidhuber
2020, "Improving Generalization in Meta Reinforcement Learning using Learned Objectives" (ICLR),
trained only from the K stored batches (no environment step).

One agent per training task, all K in one module (`nets.BatchedMLP`, leading task dimension):
- twin critics Q_k (TD3: target policy smoothing with noise 0.2 clipped at 0.5, clipped double-Q,
  Polyak τ), trained every step on windows of task k's own batch;
- a deterministic policy π_φk, updated every `policy_delay` steps ONLY through the shared learned
  objective L_α (MetaGenRL Sec. 3.2). While the objective is annealed in (its first
  `anneal_steps` steps, as the authors' code does) the policy loss is p·L_α − (1 − p)·Q(s, π(s)),
  p = step / anneal_steps; after that it is L_α alone.
- L_α (shared by the K agents): per step t of a 20-step window, the policy's action against the
  batch's action (each action dimension through a small MLP, averaged over dimensions) and
  (r̂_t, t/W, V̂(s_{t+1})(1 − d_t), V̂(s_t)) through another, an LSTM run BACKWARDS over the window,
  an MLP to a scalar error bounded by tanh (MetaGenRL Sec. 3.2, App. B). V(s) = Q1(s, π(s)) with no
  gradient; r̂ and V̂ are z-normalised within each agent's mini-batch.
- meta-training of α (MetaGenRL Eq. 6): one second-order step per agent,
  φ′ = φ − η ∇_φ L_α(φ), and α ascends Σ_k Q1_k(s, π_φ′k(s)); gradients reach α only.

Meta-test on a test task (what `mbml eval` and distill's evaluations run; the PEARL protocol of
`run/evaluate.py`): MetaGenRL has no task inference; its meta-test trains a NEW agent on the task
with the frozen L_α. Here: before any episode, the agent is a freshly initialised policy
(the "prior": every weight ~ N(0, σ²), σ the scale of the default initialisation). After each
episode, a fresh agent (policy drawn from that prior with a fixed seed, new twin critics) is
trained for `test_steps` steps on everything collected on that task so far: TD3 critics, and the
policy by L_α alone (no annealing, no −Q term). Its policy's weights, divided by σ, are the
"posterior mean" (variance 0), so `z` is the test agent's policy and `act(obs, z)` runs it. The
whole inference is a deterministic function of the context, batched over the test tasks.

The policy never sees the task parameter: the agents see states, actions, rewards of the batches.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from ..recipe.config import Recipe, pick
from .data import TaskData, gather_rows
from .nets import BatchedMLP, adam, mlp, soft_update

TARGET_NOISE, NOISE_CLIP = 0.2, 0.5     # TD3's target policy smoothing (the authors' values)
ERROR_SCALE = 1e-3                      # L_α's error: tanh(ERROR_SCALE·e)/ERROR_SCALE (the authors')
TRANSFORM_OUT = 8                       # width of each input transform's output (the authors')
TEST_SEED = 12345                       # the meta-test agent's initialisation (same on every call)


@dataclass(frozen=True)
class MetaGenRLConfig:
    """The `distill.metagenrl_*` keys, and BCQ's γ and τ. The authors' sizes: 3×350 layer-normed
    critics and policies, objective MLPs 3×32, LSTM 32, lr 1e-3, η 1e-3, 100 windows of 20 steps,
    policy delay 2, 10,000 annealing steps."""
    metagenrl_hidden: list              # critics and policies (layer-normed)
    metagenrl_objective_hidden: list    # L_α's input transforms and output MLP
    metagenrl_lstm_units: int
    metagenrl_window: int               # W steps per trajectory window
    metagenrl_windows: int              # windows per agent and step
    metagenrl_lr: float                 # critics, policies and α
    metagenrl_inner_lr: float           # η of the second-order step
    metagenrl_policy_delay: int
    metagenrl_anneal_steps: int
    metagenrl_test_steps: int           # meta-test: steps of the new agent per inference
    gamma: float                        # bcq.gamma
    tau: float                          # bcq.tau

    @classmethod
    def of(cls, r: Recipe) -> "MetaGenRLConfig":
        return pick(cls, r.distill, gamma=r.bcq.gamma, tau=r.bcq.tau)


# ---- trajectories: windows of consecutive steps that never cross an episode's end ----------------
@dataclass
class Trajectories:
    """K tasks' transitions in the order they were collected, (K, N, ·); `valid` rows (K, N) and
    `ends` (K, N): the last step of an episode (terminal, a time-limit cut or the data's end)."""
    obs: torch.Tensor
    act: torch.Tensor
    rew: torch.Tensor
    next_obs: torch.Tensor
    terminal: torch.Tensor
    valid: torch.Tensor
    ends: torch.Tensor

    @classmethod
    def of_batches(cls, data: TaskData, obs_mean, obs_std) -> "Trajectories":
        """The stored batches: an episode ends where it terminates or where s′ is not the next row's s."""
        N = data.obs.shape[1]
        valid = torch.arange(N, device=data.obs.device)[None, :] < data.sizes[:, None]
        cut = torch.ones_like(valid)
        cut[:, :-1] = (data.next_obs[:, :-1] != data.obs[:, 1:]).any(-1) | ~valid[:, 1:]
        norm = lambda s: (s - obs_mean) / obs_std
        return cls(norm(data.obs), data.act, data.rew, norm(data.next_obs), data.terminal.float(), valid,
                   valid & (cut | (data.terminal > 0)))

    @classmethod
    def of_context(cls, obs, act, rew, next_obs, mask, obs_mean, obs_std) -> "Trajectories":
        """A meta-test context (T, N, ·), episodes of H steps one after another, padded (mask 0) after a
        termination: a step followed by padding was terminal; a full episode ends where s′ ≠ next s."""
        valid = mask > 0
        nxt = torch.zeros_like(valid)
        nxt[:, :-1] = valid[:, 1:]
        terminal = valid.clone()
        terminal[:, -1] = False                        # the context's last step: cut, not terminal
        terminal &= ~nxt
        cut = torch.ones_like(valid)
        cut[:, :-1] = (next_obs[:, :-1] != obs[:, 1:]).any(-1) | ~nxt[:, :-1]
        norm = lambda s: (s - obs_mean) / obs_std
        return cls(norm(obs), act, rew, norm(next_obs), terminal.float(), valid, valid & cut)

    def windows(self, n: int, W: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """n windows of W steps per task, (K, n, W, ·), starting at valid rows drawn uniformly; `mask`
        (K, n, W) is 1 up to and including the first episode end (the authors' seq_mask)."""
        N = self.obs.shape[1]
        weight = self.valid.float()
        weight[weight.sum(-1) == 0] = 1.0                # an empty context: any start, every step masked
        start = torch.multinomial(weight, n, replacement=True, generator=generator)                 # (K, n)
        idx = start[..., None] + torch.arange(W, device=start.device)                               # (K, n, W)
        inside = idx < N
        idx = idx.clamp_max(N - 1)
        out = {f: gather_rows(getattr(self, f), idx) for f in ("obs", "act", "rew", "next_obs", "terminal")}
        ends = gather_rows(self.ends.float(), idx)
        before = ends.cumsum(-1) - ends                                  # episode ends strictly before t
        out["mask"] = (gather_rows(self.valid.float(), idx) * inside * (before == 0)).float()
        return out


# ---- networks ----------------------------------------------------------------------------------------
def flat(fn, x: torch.Tensor) -> torch.Tensor:
    """fn on (K, ..., d) inputs through its (K, M, d) shape."""
    K, lead = x.shape[0], x.shape[1:-1]
    y = fn(x.reshape(K, -1, x.shape[-1]))
    return y.reshape((K, *lead, y.shape[-1]))


class Agents(nn.Module):
    """K TD3 agents: deterministic policies `actor` (tanh), twin critics `q1`, `q2`, their Polyak
    targets, and the step counter (for the policy delay and the annealing; saved in checkpoints)."""

    def __init__(self, n: int, obs_dim: int, act_dim: int, hidden: list[int]):
        super().__init__()
        self.actor = BatchedMLP(n, obs_dim, list(hidden), act_dim, layer_norm=True)
        self.q1 = BatchedMLP(n, obs_dim + act_dim, list(hidden), 1, layer_norm=True)
        self.q2 = BatchedMLP(n, obs_dim + act_dim, list(hidden), 1, layer_norm=True)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.q1_target = copy.deepcopy(self.q1).requires_grad_(False)
        self.q2_target = copy.deepcopy(self.q2).requires_grad_(False)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("policy_loss", torch.zeros(n))   # of the last policy step (logged every step)
        self.register_buffer("future_q", torch.zeros(n))      # Q1(s, π_φ′(s)) of the last meta-step

    def pi(self, s: torch.Tensor, params: dict | None = None) -> torch.Tensor:
        """π_φ(s), or π_φ′(s) with the parameters `params` of `actor`. (K, ..., obs) → (K, ..., act)."""
        if params is None:
            return torch.tanh(flat(self.actor, s))
        return torch.tanh(flat(lambda x: functional_call(self.actor, params, (x,)), s))

    def critic_parameters(self) -> list[nn.Parameter]:
        return [*self.q1.parameters(), *self.q2.parameters()]

    def targets(self) -> tuple[list[nn.Module], list[nn.Module]]:
        return [self.actor_target, self.q1_target, self.q2_target], [self.actor, self.q1, self.q2]


def q(net: nn.Module, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Q(s, a) of K critics: (K, ..., obs), (K, ..., act) → (K, ...)."""
    return flat(net, torch.cat([s, a], -1)).squeeze(-1)


class Objective(nn.Module):
    """L_α: (policy action, batch action, r, V(s), V(s′), done, mask) of windows (M, W, ·) → an error
    per step (M, W). Shared by every agent (one network, no task dimension)."""

    def __init__(self, hidden: list[int], lstm_units: int):
        super().__init__()
        self.action_in = mlp(2, list(hidden), TRANSFORM_OUT)           # (a_batch_d, π(s)_d), each dimension d
        self.value_in = mlp(4, list(hidden), TRANSFORM_OUT)            # (r̂, t/W, V̂(s′)(1 − d), V̂(s))
        self.lstm = nn.LSTMCell(2 * TRANSFORM_OUT, lstm_units)
        self.out = mlp(lstm_units, list(hidden), 1)

    def forward(self, pi_act, batch_act, rew_n, v_n, v_next_n, done, mask) -> torch.Tensor:
        M, W = mask.shape
        acts = self.action_in(torch.stack([batch_act, pi_act], -1)).mean(-2)        # (M, W, 8)
        time = (torch.arange(W, device=mask.device, dtype=mask.dtype) / W).expand(M, W)
        vals = self.value_in(torch.stack([rew_n, time, v_next_n * (1 - done), v_n], -1))
        x = torch.cat([acts, vals], -1)
        h = c = x.new_zeros(M, self.lstm.hidden_size)
        outs = []
        for t in reversed(range(W)):                                  # backwards in time
            h2, c2 = self.lstm(x[:, t], (h, c))
            m = mask[:, t, None]
            h, c = m * h2 + (1 - m) * h, m * c2 + (1 - m) * c          # padding leaves the state at 0
            outs.append(h)
        e = self.out(torch.stack(outs[::-1], 1)).squeeze(-1)
        return torch.tanh(ERROR_SCALE * e) / ERROR_SCALE               # a bounded error


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per agent: mean over its valid window steps. (K, n, W) → (K,)."""
    return (x * mask).sum((1, 2)) / mask.sum((1, 2)).clamp_min(1.0)


def normalised(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """z-normalised within each agent's valid steps, statistics without gradient. (K, n, W)."""
    with torch.no_grad():
        mean = masked_mean(x, mask)[:, None, None]
        std = masked_mean((x - mean) ** 2, mask).sqrt()[:, None, None]
    return (x - mean) / (std + 1e-6)


def objective_loss(agents: Agents, objective: Objective, w: dict, params: dict | None = None) -> torch.Tensor:
    """L_α(φ) per agent (K,), on windows `w`: its gradient reaches φ through π(s) only."""
    K, n, W = w["mask"].shape
    pi_act = agents.pi(w["obs"], params)
    with torch.no_grad():
        v = q(agents.q1, w["obs"], agents.pi(w["obs"]))                 # V(s_t) = Q1(s_t, π(s_t))
        v_next = q(agents.q1, w["next_obs"], agents.pi(w["next_obs"]))  # V(s_{t+1})
    m = w["mask"]
    rows = lambda t: t.reshape((K * n,) + t.shape[2:])
    e = objective(rows(pi_act), rows(w["act"]), rows(normalised(w["rew"], m)), rows(normalised(v, m)),
                  rows(normalised(v_next, m)), rows(w["terminal"]), rows(m))
    return masked_mean(e.reshape(K, n, W), m)


# ---- one update of each part -----------------------------------------------------------------------
def critic_update(agents: Agents, opt: torch.optim.Optimizer, w: dict, noise: torch.Tensor,
                  gamma: float) -> dict[str, torch.Tensor]:
    """TD3's critic step on every agent's valid window steps: y = r + γ(1 − d) min_j Q′_j(s′, ã),
    ã = clip(π′(s′) + clip(ε, ±0.5), ±1), ε ~ N(0, 0.2²). Returns per-agent (K,) loss, Q and |TD|."""
    m = w["mask"]
    with torch.no_grad():
        eps = (TARGET_NOISE * noise).clamp(-NOISE_CLIP, NOISE_CLIP)
        a2 = (torch.tanh(flat(agents.actor_target, w["next_obs"])) + eps).clamp(-1.0, 1.0)
        y = w["rew"] + gamma * (1 - w["terminal"]) * torch.min(q(agents.q1_target, w["next_obs"], a2),
                                                               q(agents.q2_target, w["next_obs"], a2))
    q1, q2 = q(agents.q1, w["obs"], w["act"]), q(agents.q2, w["obs"], w["act"])
    loss = masked_mean((q1 - y) ** 2, m) + masked_mean((q2 - y) ** 2, m)          # (K,)
    opt.zero_grad(set_to_none=True)
    loss.sum().backward()                     # summed: agent k's slice gets agent k's own gradient
    opt.step()
    return {"critic_loss": loss.detach(), "q": masked_mean(q1.detach(), m),
            "td": masked_mean((q1.detach() - y).abs(), m)}


def policy_update(agents: Agents, objective: Objective, opt: torch.optim.Optimizer, w: dict,
                  progress: float) -> torch.Tensor:
    """The policy step: p·L_α − (1 − p)·Q1(s, π(s)) while annealing (p < 1), then L_α alone. Only φ
    moves (the objective's and critics' parameters take no gradient here). Returns (K,)."""
    loss = progress * objective_loss(agents, objective, w)
    if progress < 1.0:
        loss = loss - (1.0 - progress) * masked_mean(q(agents.q1, w["obs"], agents.pi(w["obs"])), w["mask"])
    opt.zero_grad(set_to_none=True)
    grads = torch.autograd.grad(loss.sum(), list(agents.actor.parameters()))
    for p, g in zip(agents.actor.parameters(), grads):
        p.grad = g
    opt.step()
    return loss.detach()


def meta_gradient(agents: Agents, objective: Objective, w: dict, inner_lr: float
                  ) -> tuple[list[torch.Tensor], torch.Tensor]:
    """MetaGenRL Eq. 6: φ′ = φ − η ∇_φ L_α(φ) (kept differentiable in α), and the gradient of
    −Σ_k mean Q1_k(s, π_φ′k(s)) with respect to α only. Returns (α's gradients, per-agent Q (K,))."""
    names, phi = zip(*agents.actor.named_parameters())
    inner = torch.autograd.grad(objective_loss(agents, objective, w).sum(), phi, create_graph=True)
    updated = {k: p - inner_lr * g for k, p, g in zip(names, phi, inner)}         # φ′
    future = masked_mean(q(agents.q1, w["obs"], agents.pi(w["obs"], updated)), w["mask"])
    return list(torch.autograd.grad(-future.sum(), list(objective.parameters()))), future.detach()


# ---- the policy a store keeps: L_α and the meta-test ----------------------------------------------
def init_scale(actor: nn.Module) -> torch.Tensor:
    """σ of every policy weight, flattened: the std of PyTorch's default uniform(±1/√fan_in) initialisation."""
    parts = []
    for layer in actor.layers:
        std = 1.0 / math.sqrt(3.0 * layer.weight.shape[1])
        parts += [torch.full((layer.weight[0].numel(),), std), torch.full((layer.bias[0].numel(),), std)]
    return torch.cat(parts)


class MetaGenRLPolicy(nn.Module):
    """The learned objective L_α and what its meta-test needs: the agents' sizes and settings, and
    the training batches' state statistics. `encoder(context)` trains new agents on the contexts
    (see the module's docstring); `act(obs, z)` runs the policy whose weights are σ·z."""
    infers_task = False          # no task encoder: `mbml probe` skips it

    def __init__(self, obs_dim: int, act_dim: int, hidden: list, objective_hidden: list, lstm_units: int,
                 window: int, windows: int, lr: float, policy_delay: int, test_steps: int, gamma: float,
                 tau: float):
        super().__init__()
        self.meta = {"kind": "metagenrl", "obs_dim": obs_dim, "act_dim": act_dim, "hidden": list(hidden),
                     "objective_hidden": list(objective_hidden), "lstm_units": int(lstm_units),
                     "window": int(window), "windows": int(windows), "lr": float(lr),
                     "policy_delay": int(policy_delay), "test_steps": int(test_steps), "gamma": float(gamma),
                     "tau": float(tau)}
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.objective = Objective(objective_hidden, lstm_units)
        self.shape = BatchedMLP(1, obs_dim, list(hidden), act_dim, layer_norm=True).requires_grad_(False)   # π's layout
        self.register_buffer("obs_mean", torch.zeros(obs_dim))
        self.register_buffer("obs_std", torch.ones(obs_dim))
        self.register_buffer("sigma", init_scale(self.shape))

    @classmethod
    def from_meta(cls, meta: dict) -> "MetaGenRLPolicy":
        return cls(**{k: meta[k] for k in ("obs_dim", "act_dim", "hidden", "objective_hidden", "lstm_units",
                                            "window", "windows", "lr", "policy_delay", "test_steps", "gamma",
                                            "tau")})

    def set_stats(self, obs_mean, obs_std, rew_mean=None, rew_std=None) -> None:
        self.obs_mean.copy_(torch.as_tensor(obs_mean, dtype=torch.float32))
        self.obs_std.copy_(torch.as_tensor(obs_std, dtype=torch.float32))

    @property
    def latent_dim(self) -> int:
        """z is a whole policy: its number of weights."""
        return int(self.sigma.numel())

    def unflatten(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """z (B, L) → policy parameters with a leading dimension B (one policy per row)."""
        theta, out, i = z * self.sigma, {}, 0
        for name, p in self.shape.named_parameters():
            n = p[0].numel()
            out[name] = theta[:, i:i + n].reshape((len(z),) + p.shape[1:])
            i += n
        return out

    def flatten(self, actor: nn.Module) -> torch.Tensor:
        """A batched policy's parameters (B, ...) → z (B, L)."""
        return torch.cat([p.detach().reshape(p.shape[0], -1) for p in actor.parameters()], 1) / self.sigma

    @torch.no_grad()
    def act(self, obs: torch.Tensor, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The deterministic action of the policy σ·z on each row: (B, obs), (B, L) → (B, act)."""
        s = ((obs - self.obs_mean) / self.obs_std).unsqueeze(1)
        return torch.tanh(functional_call(self.shape, self.unflatten(z), (s,))).squeeze(1)

    def encoder(self, obs, act, rew, next_obs, mask=None) -> tuple[torch.Tensor, torch.Tensor]:
        """The meta-test: new agents trained with the frozen L_α on each context (..., N, ·); returns
        (z, 0) with z the trained policy's weights / σ (..., L). An empty context gives the prior's mean."""
        lead = obs.shape[:-2]
        shaped = lambda t: t.reshape((-1,) + t.shape[len(lead):])
        obs, act, rew, next_obs = map(shaped, (obs, act, rew, next_obs))
        mask = torch.ones(rew.shape, device=rew.device) if mask is None else shaped(mask)
        with torch.enable_grad():
            z = meta_test(self, Trajectories.of_context(obs, act, rew, next_obs, mask, self.obs_mean, self.obs_std))
        z = torch.where((mask.sum(-1) > 0)[:, None], z, torch.zeros_like(z))
        return z.reshape(lead + z.shape[-1:]), torch.zeros(lead + z.shape[-1:], device=z.device)


def meta_test(policy: MetaGenRLPolicy, traj: Trajectories) -> torch.Tensor:
    """T new agents (one per context) trained for `test_steps` steps on their contexts: TD3 critics,
    the policy by L_α alone. Deterministic: seeded by TEST_SEED. Returns their policies as z (T, L)."""
    m = policy.meta
    T = traj.obs.shape[0]
    gen = torch.Generator(device=traj.obs.device).manual_seed(TEST_SEED)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TEST_SEED)
        agents = Agents(T, m["obs_dim"], m["act_dim"], m["hidden"]).to(traj.obs.device)
    eps = torch.randn((T, policy.latent_dim), generator=gen, device=traj.obs.device)
    with torch.no_grad():                                          # π from the prior, as in episode 1
        for p, v in zip(agents.actor.parameters(), policy.unflatten(eps).values()):
            p.copy_(v)
        agents.actor_target.load_state_dict(agents.actor.state_dict())
    critic_opt, actor_opt = adam(agents.critic_parameters(), m["lr"]), adam(agents.actor.parameters(), m["lr"])
    for step in range(m["test_steps"]):
        w = traj.windows(m["windows"], m["window"], gen)
        noise = torch.randn(w["act"].shape, generator=gen, device=w["act"].device)
        critic_update(agents, critic_opt, w, noise, m["gamma"])
        if (step + 1) % m["policy_delay"] == 0:
            policy_update(agents, policy.objective, actor_opt, w, 1.0)      # L_α alone
            for target, source in zip(*agents.targets()):
                soft_update(target, source, m["tau"])
    return policy.flatten(agents.actor)


# ---- training -----------------------------------------------------------------------------------------
class MetaGenRLTrainer:
    """One MetaGenRL step on all K agents at once: critics every step; every `policy_delay` steps the
    policies (through L_α), α (the second-order step) and the Polyak targets."""

    def __init__(self, policy: MetaGenRLPolicy, data: TaskData, cfg: MetaGenRLConfig):
        self.policy, self.cfg = policy, cfg
        self.traj = Trajectories.of_batches(data, policy.obs_mean, policy.obs_std)
        self.agents = Agents(data.n_tasks, policy.obs_dim, policy.act_dim, cfg.metagenrl_hidden).to(data.obs.device)
        self.critic_opt = adam(self.agents.critic_parameters(), cfg.metagenrl_lr)
        self.actor_opt = adam(self.agents.actor.parameters(), cfg.metagenrl_lr)
        self.objective_opt = adam(policy.objective.parameters(), cfg.metagenrl_lr)

    def optimisers(self) -> dict[str, torch.optim.Optimizer]:
        return {"critic": self.critic_opt, "actor": self.actor_opt, "objective": self.objective_opt}

    def modules(self) -> dict[str, nn.Module]:
        return {"policy": self.policy, "agents": self.agents}

    @torch.no_grad()
    def agents_act(self, obs) -> "np.ndarray":
        """Each training agent's deterministic action on its own task: numpy (K, obs) → (K, act), for
        `rollout.run_episode` over the K training tasks (the authors' Fig. 5 plots these returns)."""
        s = torch.as_tensor(obs, dtype=torch.float32, device=self.policy.obs_mean.device)
        s = (s - self.policy.obs_mean) / self.policy.obs_std
        return self.agents.pi(s.unsqueeze(1)).squeeze(1).cpu().numpy()

    def progress(self) -> float:
        """The annealing weight p of L_α in the policy loss: t / anneal_steps, at most 1."""
        n = self.cfg.metagenrl_anneal_steps
        return 1.0 if n <= 0 else min(1.0, int(self.agents.steps) / n)

    def step(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        cfg, a = self.cfg, self.agents
        w = self.traj.windows(cfg.metagenrl_windows, cfg.metagenrl_window, generator)
        noise = torch.randn(w["act"].shape, generator=generator, device=w["act"].device)
        out = critic_update(a, self.critic_opt, w, noise, cfg.gamma)                  # TD3 critics
        a.steps += 1
        if int(a.steps) % cfg.metagenrl_policy_delay == 0:
            a.policy_loss.copy_(policy_update(a, self.policy.objective, self.actor_opt, w, self.progress()))
            grads, future = meta_gradient(a, self.policy.objective, w, cfg.metagenrl_inner_lr)
            a.future_q.copy_(future)
            self.objective_opt.zero_grad(set_to_none=True)
            for param, g in zip(self.policy.objective.parameters(), grads):
                param.grad = g
            self.objective_opt.step()                                                  # α: Eq. 6
            for target, source in zip(*a.targets()):
                soft_update(target, source, cfg.tau)
        K = out["q"].shape[0]
        per_agent = {f"{name}_{k}": out[name][k] for name in ("q", "td") for k in range(K)}
        return {"critic_loss": out["critic_loss"].mean(), "policy_loss": a.policy_loss.mean(),
                "future_q": a.future_q.mean(), "q_max": out["q"].abs().max(),
                "td_max": out["td"].max(), **per_agent, "total": out["critic_loss"].sum()}


POLICY = MetaGenRLPolicy


def build_trainer(r: Recipe, data: TaskData, device) -> MetaGenRLTrainer:
    """MetaGenRL from the recipe's keys (`MetaGenRLConfig`), on the K batches."""
    cfg = MetaGenRLConfig.of(r)
    policy = MetaGenRLPolicy(data.obs.shape[-1], data.act.shape[-1], cfg.metagenrl_hidden,
                             cfg.metagenrl_objective_hidden, cfg.metagenrl_lstm_units, cfg.metagenrl_window,
                             cfg.metagenrl_windows, cfg.metagenrl_lr, cfg.metagenrl_policy_delay,
                             cfg.metagenrl_test_steps, cfg.gamma, cfg.tau).to(device)
    policy.set_stats(*data.stats())
    return MetaGenRLTrainer(policy, data, cfg)
