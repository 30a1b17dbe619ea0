"""The recipe as typed dataclasses: one section per stage, a docstring line per field.

Values are the authors' (docs/design.md §4) unless a recipe overrides them. `recipe.py` turns YAML into
these objects and reports bad input; this module only declares what a recipe may say.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

from ..algos.registry import INFERENCE_LOSSES, NAMES

from . import graph


def doc(text: str, default=None, **kw):
    """A dataclass field with its one-line documentation in the metadata."""
    if "default_factory" in kw:
        return field(default_factory=kw["default_factory"], metadata={"doc": text, **kw.get("meta", {})})
    return field(default=default, metadata={"doc": text, **kw.get("meta", {})})


def rng(lo=None, hi=None):
    return {"meta": {"min": lo, "max": hi}}


@dataclass
class EnvConfig:
    name: str = doc("task distribution (see `mbml envs`)", "point_goal")
    horizon: int = doc("episode length H; 0 = the distribution's default", 0, **rng(0, 1_000_000))
    n_train: int = doc("number of training tasks K; 0 = the distribution's default", 0, **rng(0, 10_000))
    n_test: int = doc("number of test tasks; 0 = the distribution's default", 0, **rng(0, 10_000))
    observation: str = doc("what the agent sees: full (the gymnasium env's observation) or compact (without the "
                           "simulator's derived body quantities — com inertia and velocity, actuator and contact "
                           "forces; ant_dir, ant_goal and humanoid_dir_m only; a departure from the paper)", "full",
                           meta={"choices": ["full", "compact"]})


@dataclass
class DataConfig:
    """Imported batches in the place of `collect` (`mbml import`; docs in mbml_cli/datasets/)."""
    format: str = doc("where the training batches come from: '' = `collect` (SAC on env.name), "
                      "minari or arrays (then the collect stage imports them)", "",
                      meta={"choices": ["", "minari", "arrays"]})
    sources: list = doc("Minari dataset ids, dataset paths or a namespace (one dataset per task), or one "
                        ".npz file / a directory of them", default_factory=list, meta={"strings": True})
    tasks: str = doc("YAML or CSV file of task parameters; empty = from the datasets themselves", "")
    holdout: float = doc("without an environment (env.name: none): fraction of each dataset's episodes, its last "
                         "ones, kept out of training for eval's offline check", 0.1, **rng(0, 0.9))


@dataclass
class CollectConfig:
    """SAC on every training task at once; its replay buffer is the task's batch."""
    steps: int = doc("environment steps per task", 60_000, **rng(1))
    random_steps: int = doc("initial steps with uniform random actions", 10_000, **rng(0))
    hidden: list = doc("hidden layer widths of actor and critics", default_factory=lambda: [256, 256])
    lr: float = doc("Adam learning rate", 3e-4, **rng(0))
    gamma: float = doc("discount", 0.99, **rng(0, 1))
    tau: float = doc("Polyak rate of the target critics", 5e-3, **rng(0, 1))
    batch_size: int = doc("mini-batch per task and update", 256, **rng(1))
    updates_per_step: int = doc("gradient updates per environment step", 1, **rng(0))
    log_every: int = doc("environment steps between metric rows", 1000, **rng(1))
    checkpoint_every: int = doc("environment steps between resumable checkpoints", 5000, **rng(1))
    common_noise: bool = doc("common random numbers: every task starts from the same SAC weights and takes the same "
                             "random draws (reset seeds, random actions, exploration and update noise, mini-batch "
                             "rows), so tasks differ only by their rewards and neighbouring tasks tend to learn the "
                             "same gait; a task's batch is then the same in any shard", False)


@dataclass
class BCQConfig:
    """BCQ (Fujimoto et al. 2019), one per training task, batched over tasks."""
    iterations: int = doc("gradient steps", 50_000, **rng(1))
    actor_hidden: list = doc("perturbation actor ξ widths", default_factory=lambda: [400, 300])
    critic_hidden: list = doc("twin critic widths", default_factory=lambda: [400, 300])
    vae_hidden: list = doc("VAE encoder/decoder widths", default_factory=lambda: [750, 750])
    phi: float = doc("max perturbation φ (fraction of the action range)", 0.05, **rng(0, 1))
    lmbda: float = doc("λ of the soft clipped double-Q target", 0.75, **rng(0, 1))
    kl_weight: float = doc("weight of the VAE's KL term", 0.5, **rng(0))
    lr: float = doc("Adam learning rate", 3e-4, **rng(0))
    batch_size: int = doc("mini-batch per task", 100, **rng(1))
    gamma: float = doc("discount", 0.99, **rng(0, 1))
    tau: float = doc("Polyak rate of targets", 5e-3, **rng(0, 1))
    n_candidates: int = doc("candidate actions at selection and in the target", 10, **rng(1))
    eval_every: int = doc("iterations between policy evaluations on each task", 5000, **rng(1))
    eval_episodes: int = doc("episodes per task and evaluation", 1, **rng(1))
    checkpoint_every: int = doc("iterations between resumable checkpoints", 5000, **rng(1))
    relabelled: bool = doc("teachers from every task's data: task i's mini-batches also draw other tasks' "
                           "transitions relabelled with R̂_i where Eq. 7 holds (the paper's Sec. 3 proposes it; a "
                           "departure). bcq then runs after relabel", False)
    relabelled_share: float = doc("with `relabelled`: the share of each mini-batch drawn from the relabelled "
                                  "transitions; the rest from the task's own batch", 0.5, **rng(0, 1))
    relabelled_generator: str = doc("with `relabelled`: the rows BCQ's generative model G (the batch constraint) "
                                    "learns from: all (own and relabelled) or own (the task's own behaviour only; the "
                                    "critics and ξ still learn from both)", "all", meta={"choices": ["all", "own"]})
    relabelled_next: str = doc("with `relabelled`, where tasks differ in dynamics (`reward.next_state`): next "
                               "states predicted by task i's next-state ensemble, or the stored ones pooled as "
                               "they are", "predicted", meta={"choices": ["predicted", "stored"]})


@dataclass
class RewardConfig:
    """Per-task reward-model ensembles (and next-state ensembles where dynamics differ)."""
    ensemble_size: int = doc("members per task", 20, **rng(1))
    hidden: int = doc("width of the single hidden layer", 128, **rng(1))
    steps: int = doc("gradient steps", 4000, **rng(1))
    lr: float = doc("Adam learning rate", 3e-4, **rng(0))
    batch_size: int = doc("bootstrap mini-batch per member", 256, **rng(1))
    holdout: float = doc("fraction of each batch held out to measure error", 0.1, **rng(0, 0.9))
    next_state: bool = doc("also fit next-state ensembles (tasks differ in dynamics)", False)


@dataclass
class RelabelConfig:
    std_threshold: float = doc("ensemble std below which a relabelled reward is eligible (Eq. 7)", 0.05, **rng(0))
    next_state_threshold: float = doc("next-state ensemble std threshold (dynamics tasks)", 0.2, **rng(0))


@dataclass
class DistillConfig:
    """The `distill:` section: MBML's distillation (Alg. 1, Eq. 3-10), its ablations and the baselines.
    Each algorithm's trainer takes only the keys it reads (its config dataclass in algos/, built with
    `pick`); the epochs, evaluation and checkpoint keys are the distill stage's own."""
    epochs: int = doc("epochs", 1000, **rng(1))
    steps_per_epoch: int = doc("gradient steps per epoch", 100, **rng(1))
    q_hidden: list = doc("Q_D widths", default_factory=lambda: [1024] * 9)
    g_hidden: list = doc("G_D widths", default_factory=lambda: [1024] * 7)
    xi_hidden: list = doc("ξ_D widths", default_factory=lambda: [1024] * 8)
    encoder_hidden: list = doc("encoder q_φ widths", default_factory=lambda: [200, 200, 200])
    latent_dim: int = doc("dimension of the task embedding z", 20, **rng(1))
    kl_beta: float = doc("β, weight of KL(q_φ(c) ‖ N(0, I)) (Eq. 3)", 0.1, **rng(0))
    margin: float = doc("triplet margin m (Eq. 8)", 2.0, **rng(0))
    context_size: int = doc("own transitions per context", 64, **rng(1))
    relabel_context: int = doc("relabelled transitions of other tasks added to a context", 64, **rng(0))
    batch_size: int = doc("(s, a) samples per task and step", 128, **rng(1))
    n_contexts: int = doc("contexts per task for Eq. 11 hardest-pair mining (no_relabel) and for dml's pairs", 4, **rng(2))
    inference_loss: str = doc("the full model's (`mbml`'s) task-inference loss: triplet (relabelled, Eq. 8-9), hardest "
                              "(Eq. 11), dml (FOCAL) or infonce (CORRO); the named algorithms (no_relabel, mbml_dml, "
                              "mbml_infonce, ...) keep theirs", "triplet",
                              meta={"choices": list(INFERENCE_LOSSES)})
    # FOCAL's β, n, ε: the authors' code (FOCAL-ICLR, rlkit/torch/sac/sac.py `z_loss`): 1 / (d² + 100·1e-3)
    dml_beta: float = doc("dml: β, weight of the negative pairs' term β / (‖z_a − z_b‖ⁿ + ε) (FOCAL: 1)", 1.0, **rng(0))
    dml_power: float = doc("dml: n, the negative power of the distance (FOCAL: 2)", 2.0, **rng(0))
    dml_epsilon: float = doc("dml: ε, keeps β / (‖z_a − z_b‖ⁿ + ε) finite (FOCAL: 0.1)", 0.1, **rng(0))
    # CORRO's τ: the authors' code (CORRO, offline_rl_config/args_*.py `--infonce-temp`, every environment)
    infonce_temperature: float = doc("infonce: τ, the temperature of the cosine similarity (CORRO: 0.1)", 0.1,
                                     **rng(1e-6))
    lr: float = doc("Adam learning rate", 3e-4, **rng(0))
    generator_lr: float = doc("Adam learning rate of G_D and ξ_D (MBML and its ablations); 0: lr", 0.0, **rng(0))
    lr_schedule: str = doc("learning rates over the distillation: constant (the paper) or cosine (every rate decays "
                           "to 0 at the last epoch)", "constant", meta={"choices": ["constant", "cosine"]})
    eval_every: int = doc("epochs between evaluations on the test tasks", 50, **rng(1))
    checkpoint_every: int = doc("epochs between resumable checkpoints (weights, Adam and RNG state)", 10, **rng(1))
    # ---- metagenrl (algos/metagenrl.py; the authors': hidden [350]*3, windows 100, the rest as here) ----
    metagenrl_hidden: list = doc("metagenrl: widths of each agent's layer-normed twin critics and policy",
                                 default_factory=lambda: [64, 64])
    metagenrl_objective_hidden: list = doc("metagenrl: widths of the learned objective L_α's input transforms and "
                                           "output MLP", default_factory=lambda: [32, 32, 32])
    metagenrl_lstm_units: int = doc("metagenrl: units of L_α's LSTM (run backwards over a window)", 32, **rng(1))
    metagenrl_window: int = doc("metagenrl: steps per trajectory window L_α reads", 20, **rng(1))
    metagenrl_windows: int = doc("metagenrl: windows per agent and step (the mini-batch)", 16, **rng(1))
    metagenrl_lr: float = doc("metagenrl: Adam learning rate of critics, policies and L_α", 1e-3, **rng(0))
    metagenrl_inner_lr: float = doc("metagenrl: η of the second-order step φ′ = φ − η∇_φ L_α", 1e-3, **rng(0))
    metagenrl_policy_delay: int = doc("metagenrl: critic steps per policy, L_α and target update", 2, **rng(1))
    metagenrl_anneal_steps: int = doc("metagenrl: steps over which the policy loss moves from −Q to L_α "
                                      "(0: L_α from the start)", 10_000, **rng(0))
    metagenrl_test_steps: int = doc("metagenrl: meta-test, steps of the new agent trained by L_α on a test "
                                    "task's context after each episode", 200, **rng(1))
    # ---- end metagenrl ----


@dataclass
class EvalConfig:
    """PEARL protocol on test tasks: episode 1 from the prior, then the posterior."""
    episodes: int = doc("episodes per task", 5, **rng(3, 1000))
    skip: int = doc("leading episodes not counted in the score", 2, **rng(0))
    unseen_seed: int = doc("seed offset for `--unseen` draws", 1000, **rng(0, 2 ** 31))
    probe_draws: int = doc("contexts drawn per task for `mbml probe` (each gives K(K-1) pairs)", 8, **rng(1, 10_000))
    repeats: int = doc("independent runs of the protocol per task (own z draws and resets); returns are "
                       "averaged over them", 1, **rng(1, 1000))


@dataclass
class FinetuneConfig:
    """SAC on a test task from the MBML policy vs from scratch (Sec. 5.3, Fig. 8).

    Both runs of a task take `init_steps + steps` environment interactions with the same seeds. The
    MBML run collects its first `init_steps` with the MBML policy (z from the prior in episode 1,
    then from the posterior of everything collected), freezes z, fits its actor to those actions and
    initialises both critics from Q_D(·, ·, z); the scratch run takes uniform random actions for
    those steps (SAC's usual warm-up) and keeps random weights. Then both train the same SAC."""
    enabled: bool = doc("run fine-tuning in `mbml run` (after the recipe's stages)", False)
    n_tasks: int = doc("test tasks to fine-tune on in `mbml run` / `mbml finetune` without --task", 3, **rng(1))
    init_steps: int = doc("transitions collected with the MBML policy (random actions for scratch)", 10_000, **rng(1))
    steps: int = doc("online SAC environment steps after the initial ones", 100_000, **rng(1))
    bc_steps: int = doc("behaviour-cloning gradient steps (maximum likelihood of the collected actions)", 2000, **rng(1))
    hidden: list = doc("actor widths (tanh-Gaussian, no z input); the critics take Q_D's widths",
                       default_factory=lambda: [256, 256])
    lr: float = doc("Adam learning rate (behaviour cloning, actor, critics, temperature)", 3e-4, **rng(0))
    gamma: float = doc("discount", 0.99, **rng(0, 1))
    tau: float = doc("Polyak rate", 5e-3, **rng(0, 1))
    batch_size: int = doc("mini-batch per critic (each critic gets its own) and per BC step", 256, **rng(1))
    alpha_init: float = doc("initial entropy temperature α of both runs (then tuned towards entropy −dim A); "
                            "below SAC's usual 1 because with rewards of order 1 per step α = 1 lets the entropy "
                            "bonus undo the behaviour cloning (and slows scratch SAC too)", 0.1, **rng(0))
    policy_noise: float = doc("std of the Gaussian noise on the target action (target policy smoothing)", 0.2, **rng(0))
    noise_clip: float = doc("the target-action noise is clipped to ±noise_clip", 0.5, **rng(0))
    eval_every: int = doc("environment steps between evaluations (deterministic policy, not counted as interactions)",
                          1000, **rng(1))
    eval_episodes: int = doc("episodes per evaluation", 1, **rng(1))
    checkpoint_every: int = doc("environment steps between resumable checkpoints", 5000, **rng(1))
    threshold: float = doc("return counted as reached: the worst initial return plus this fraction of the way to "
                           "the best (smoothed) return either run reaches (= this fraction of the best when the "
                           "worst initial return is 0)", 0.9, **rng(0, 1))
    smooth: int = doc("evaluations in the trailing mean the threshold is applied to (1 = single evaluations)",
                      3, **rng(1))


# Keys measured in the distillation lever rounds (RESULTS.md, "Distillation levers"), rejected and
# removed, with the value every committed result has: a recipe, lock file or stored recipe that gives
# one of them this value still loads (the key is dropped); any
# other value is refused, since this version cannot repeat it (c5517c9 can).
RETIRED = {"distill": {"generator_z": "sample", "q_loss": "standardised", "encoder_from_generator": False,
                       "generator_steps": 1, "teachers": "final", "ema": 0.0}}


def pick(cls, section, **others):
    """An algorithm's config dataclass `cls` from a recipe section: each field is the section's key of
    that name, except the fields given in `others` (keys of other sections)."""
    return cls(**{f.name: getattr(section, f.name) for f in fields(cls) if f.name not in others}, **others)


ALGOS = NAMES                                # the distill algorithms (algos/registry.py)


@dataclass
class Recipe:
    """A whole run. Everything needed to repeat it is here, or in the lock written beside it."""
    name: str = doc("run name; the store defaults to runs/<name>-s<seed>.zarr", "run")
    seed: int = doc("master seed: tasks, networks, sampling", 0, **rng(0, 2 ** 32 - 1))
    store: str = doc("experiment store path or fsspec URL; empty = runs/<name>-s<seed>.zarr", "")
    device: str = doc("torch device: auto (CUDA when torch sees one, else the CPU), cpu or cuda", "auto",
                      meta={"choices": ["auto", "cpu", "cuda"]})
    threads: int = doc("torch CPU threads; 0 = auto: the share of the cores a `--jobs` launcher gives, else half the "
                       "cores (torch's default, every core, is about 10× slower on a busy 2-core machine)", 0, **rng(0, 1024))
    stages: list = doc("stages `mbml run` performs (in the stage graph's order; finetune by `finetune.enabled`)",
                       default_factory=lambda: list(graph.DEFAULT), meta={"items": graph.NAMES})
    algos: list = doc("distill algorithms to train and compare", default_factory=lambda: ["mbml", "neither"],
                      meta={"items": ALGOS})
    shards: int = doc("collect and bcq train the K training tasks as this many contiguous groups (np.array_split "
                      "order), each one batched network seeded from its tasks; `mbml run --jobs N` trains N groups "
                      "at once, with the same arrays as one at a time; 1 = one network over all K", 1,
                      **rng(1, 10_000))
    env: EnvConfig = field(default_factory=EnvConfig)
    data: DataConfig = field(default_factory=DataConfig)
    collect: CollectConfig = field(default_factory=CollectConfig)
    bcq: BCQConfig = field(default_factory=BCQConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    relabel: RelabelConfig = field(default_factory=RelabelConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
