"""Task distributions: API conformance, task sampling, and the reward checked against a hand
computation from the simulator state (read from `env.unwrapped.data`, independent of features())."""
from __future__ import annotations

import warnings

import mujoco
import numpy as np
import pytest
from gymnasium.envs.mujoco.walker2d_v5 import Walker2dEnv
from gymnasium.utils.env_checker import check_env

from mbml_cli.recipe.config import EnvConfig
from mbml_cli.envs import REGISTRY, get, of

MUJOCO = ["halfcheetah_vel", "ant_dir", "ant_goal", "humanoid_dir_m", "walker_param", "umaze_goal_m"]
ALL = list(REGISTRY)


def test_registry_order():
    assert ALL == ["point_goal"] + MUJOCO


# ---- API ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_check_env(name):
    dist = get(name)
    env = dist.make_env(dist.tasks("train", 1, seed=0)[0])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped, skip_render_check=True)   # the simulator itself
        check_env(env, skip_render_check=True)             # what the pipeline steps
    # tolerated: unbounded observation boxes (every MuJoCo env has them) and check_env's advice
    # to check the unwrapped env (done above as well)
    benign = ("infinity", "different from the unwrapped")
    other = [str(w.message) for w in caught if not any(b in str(w.message) for b in benign)]
    assert other == []
    assert env.action_space.low.min() == -1 and env.action_space.high.max() == 1


@pytest.mark.parametrize("name", ALL)
def test_task_sampling(name):
    dist = get(name)
    a, b = dist.tasks("train", dist.n_train, seed=3), dist.tasks("train", dist.n_train, seed=3)
    assert a.shape[0] == dist.n_train and a.dtype == np.float64
    np.testing.assert_array_equal(a, b)                                    # deterministic per seed
    assert not np.allclose(a, dist.tasks("train", dist.n_train, seed=4))  # and seed-dependent
    test = dist.tasks("test", dist.n_test, seed=3)
    unseen = dist.tasks("unseen", dist.n_test, seed=3)
    for x, y in [(a, test), (a, unseen), (test, unseen)]:                 # splits are disjoint
        close = np.isclose(x[:, None, :], y[None, :, :], atol=1e-9).all(-1)
        assert not close.any()


def test_task_ranges():
    """Each distribution's parameter ranges (docs/design.md §2); umaze_goal_m has its own test below."""
    n = 200
    v_train = get("halfcheetah_vel").tasks("train", n, seed=0)[:, 0]
    assert v_train.min() >= 0 and v_train.max() <= 1.5 and v_train.min() < 0.5
    for split in ("test", "unseen"):
        v = get("halfcheetah_vel").tasks(split, n, seed=0)[:, 0]
        assert v.min() >= 0.5 and v.max() <= 1.5
    for name in ("ant_dir", "humanoid_dir_m"):
        theta = get(name).tasks("train", n, seed=0)
        assert theta.shape == (n, 1) and theta.min() >= 0 and theta.max() <= 2 * np.pi / 3
    goal = get("ant_goal").tasks("train", n, seed=0)
    radius, angle = np.linalg.norm(goal, axis=1), np.arctan2(goal[:, 1], goal[:, 0])
    assert radius.max() <= 3 and angle.min() >= 0 and angle.max() <= 2 * np.pi / 3 + 1e-12
    assert np.mean(radius < 3 / np.sqrt(2)) == pytest.approx(0.5, abs=0.1)   # uniform over the area
    u = get("walker_param").tasks("train", n, seed=0)
    assert u.shape == (n, 65) and np.abs(u).max() <= 2 and np.abs(u).max() > 1.9


def test_no_mujoco_log_file(tmp_path, monkeypatch):
    """Building the envs must not drop MUJOCO_LOG.TXT (MuJoCo's warning log) in the working dir."""
    monkeypatch.chdir(tmp_path)
    for name in MUJOCO:
        get(name).make_env(get(name).tasks("train", 1, seed=0)[0])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ALL)
def test_task_not_in_observation(name):
    dist = get(name)
    t1, t2 = dist.tasks("train", 2, seed=0)
    e1, e2 = dist.make_env(t1), dist.make_env(t2)
    assert e1.observation_space.shape == e2.observation_space.shape
    o1, _ = e1.reset(seed=5)
    o2, _ = e2.reset(seed=5)
    np.testing.assert_array_equal(o1, o2)
    if name != "walker_param":   # same dynamics: the whole trajectory is task-independent
        act = np.random.default_rng(0).uniform(-1, 1, (3,) + e1.action_space.shape)
        for a in act:
            np.testing.assert_array_equal(e1.step(a)[0], e2.step(a)[0])


@pytest.mark.parametrize("name, full, compact", [("ant_dir", 105, 27), ("ant_goal", 107, 29),
                                                 ("humanoid_dir_m", 348, 45)])
def test_compact_observation(name, full, compact):
    """`env.observation: compact` drops the derived body quantities and keeps the leading qpos/qvel block;
    the task, the dynamics and the reward are unchanged."""
    dist = get(name)
    small = of(EnvConfig(name=name, observation="compact"))
    assert small is not dist and dist.observation == "full" and of(EnvConfig(name=name)) is dist
    task = dist.tasks("train", 1, seed=0)[0]
    e1, e2 = dist.make_env(task), small.make_env(task)
    o1, _ = e1.reset(seed=3)
    o2, _ = e2.reset(seed=3)
    assert (o1.shape, o2.shape, e2.observation_space.shape) == ((full,), (compact,), (compact,))
    np.testing.assert_array_equal(o1[:compact], o2)
    for a in np.random.default_rng(0).uniform(-1, 1, (5,) + e1.action_space.shape):
        s1, r1, *_ = e1.step(a)
        s2, r2, *_ = e2.step(a)
        np.testing.assert_array_equal(s1[:compact], s2)
        assert r1 == r2


def test_compact_observation_refused_where_absent():
    with pytest.raises(LookupError, match="point_goal has no 'compact' observation"):
        of(EnvConfig(name="point_goal", observation="compact"))


# ---- reward: hand computation ------------------------------------------------------------------
def snapshot(env):
    """What the hand computation needs, copied from the simulator (subtree_com[0]: whole-body COM)."""
    model, d = env.unwrapped.model, env.unwrapped.data
    torso = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "torso")
    return {"qpos": d.qpos.copy(), "torso": d.xpos[torso].copy() if torso >= 0 else None,
            "com": d.subtree_com[0].copy(), "cfrc": d.cfrc_ext.copy(), "ctrl": d.ctrl.copy()}


def hand_reward(name, before, after, task, dt):
    ctrl_sq = np.sum(after["ctrl"].astype(np.float64) ** 2)   # the control applied during the step
    if name == "halfcheetah_vel":
        return -abs((after["qpos"][0] - before["qpos"][0]) / dt - task[0]) - 0.05 * ctrl_sq
    if name == "ant_dir":
        v = (after["torso"][:2] - before["torso"][:2]) / dt
        contact = np.sum(np.clip(after["cfrc"], -1, 1) ** 2)
        return v @ [np.cos(task[0]), np.sin(task[0])] - 0.5 * ctrl_sq - 5e-4 * contact + 1.0
    if name == "ant_goal":
        contact = np.sum(np.clip(after["cfrc"], -1, 1) ** 2)
        return -np.abs(after["torso"][:2] - task).sum() - 0.1 * ctrl_sq - 5e-4 * contact
    if name == "humanoid_dir_m":
        v = (after["com"][:2] - before["com"][:2]) / dt
        contact = min(5e-7 * np.sum(after["cfrc"] ** 2), 10.0)
        return 1.25 * v @ [np.cos(task[0]), np.sin(task[0])] - 0.1 * ctrl_sq - contact + 5.0
    if name == "walker_param":
        return (after["qpos"][0] - before["qpos"][0]) / dt + 1.0 - 1e-3 * ctrl_sq
    if name == "umaze_goal_m":
        return np.exp(-np.linalg.norm(after["qpos"][:2] - task))
    raise KeyError(name)


def hand_terminated(name, qpos):
    if name == "ant_dir":
        return not (0.2 <= qpos[2] <= 1.0)
    if name == "humanoid_dir_m":
        return not (1.0 < qpos[2] < 2.0)
    if name == "walker_param":
        return not (0.8 < qpos[1] < 2.0 and -1.0 < qpos[2] < 1.0)
    return False


@pytest.mark.parametrize("name", MUJOCO)
def test_reward_matches_hand_computation(name):
    dist = get(name)
    tasks = dist.tasks("train", 3, seed=1)
    task = tasks[0]
    env = dist.make_env(task)
    dt = env.unwrapped.dt
    obs, _ = env.reset(seed=2)
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(20):   # long enough for the humanoid's feet to touch the ground
        act = rng.uniform(-1, 1, env.action_space.shape)
        before = snapshot(env)
        next_obs, rew, term, trunc, info = env.step(act)
        after = snapshot(env)
        assert rew == pytest.approx(hand_reward(name, before, after, task, dt), rel=1e-5, abs=1e-6)
        assert term == hand_terminated(name, after["qpos"])
        assert info["features"].shape == (len(dist.info_names),)
        rows.append((obs, act, next_obs, info["features"], rew))
        obs = next_obs
        if term:
            break
    o, a, o2, f, r = (np.stack(x) for x in zip(*rows))
    if "contact_sq" in dist.info_names:   # the contact term was exercised, not always zero
        assert f[:, -1].max() > 1.0
    # vectorised over transitions: task (p,) and task (T, p)
    np.testing.assert_allclose(dist.reward(o, a, o2, f, task), r, rtol=1e-12)
    np.testing.assert_allclose(dist.reward(o, a, o2, f, np.broadcast_to(task, (len(r), task.size))), r,
                               rtol=1e-12)
    # relabelling: all tasks × all transitions at once equals one call per (task, transition)
    batch = dist.reward(o, a, o2, f, tasks[:, None, :])
    assert batch.shape == (len(tasks), len(r))
    for k, t in enumerate(tasks):
        for i in range(len(r)):
            assert batch[k, i] == pytest.approx(float(dist.reward(o[i], a[i], o2[i], f[i], t)), rel=1e-12)
    if name != "walker_param":   # different tasks give different rewards on the same transitions
        assert not np.allclose(batch[0], batch[1])


@pytest.mark.parametrize("name, index, value", [
    ("ant_dir", 2, 1.5), ("ant_goal", 2, 1.5),
    ("humanoid_dir_m", 2, 0.8), ("humanoid_dir_m", 2, 2.3), ("walker_param", 2, 1.4), ("walker_param", 1, 0.5)])
def test_termination(name, index, value):
    """Put the body out of (or, for ant_goal, in spite of) the healthy range: one step decides."""
    dist = get(name)
    env = dist.make_env(dist.tasks("train", 1, seed=0)[0])
    env.reset(seed=0)
    base = env.unwrapped
    qpos = base.data.qpos.copy()
    qpos[index] = value
    base.set_state(qpos, np.zeros(base.model.nv))
    _, _, term, _, _ = env.step(np.zeros(env.action_space.shape))
    assert term == (name != "ant_goal")
    assert term == hand_terminated(name, base.data.qpos)


# ---- walker_param: the physics really changes --------------------------------------------------
WALKER_ARRAYS = (("body_mass", 1.5), ("body_inertia", 1.5), ("geom_friction", 1.5), ("dof_damping", 1.3))


def split_task(u, model):
    out, i = {}, 0
    for name, _ in WALKER_ARRAYS:
        shape = getattr(model, name).shape
        out[name] = u[i:i + int(np.prod(shape))].reshape(shape)
        i += int(np.prod(shape))
    assert i == u.size
    return out


def test_walker_param_model_arrays():
    dist = get("walker_param")
    u1, u2 = dist.tasks("train", 2, seed=0)
    assert np.all(np.abs(u1) <= 2) and u1.size == 8 + 8 * 3 + 8 * 3 + 9
    stock = Walker2dEnv().model
    env = dist.make_env(u1)
    model = env.unwrapped.model
    parts = split_task(u1, stock)
    for name, base in WALKER_ARRAYS:
        np.testing.assert_allclose(getattr(model, name), getattr(stock, name) * base ** parts[name], rtol=1e-12)
        assert np.all((getattr(model, name) == 0) == (getattr(stock, name) == 0))   # zeros stay zero
    assert not np.allclose(model.body_mass, stock.body_mass)
    # MuJoCo's derived constants follow the new masses (mj_setConst)
    assert model.body_subtreemass[0] == pytest.approx(model.body_mass.sum(), rel=1e-12)
    # setting tasks again starts from the pristine arrays: no compounding
    env.unwrapped.set_task(u2)
    env.unwrapped.set_task(u1)
    env.unwrapped.set_task(u1)
    for name, base in WALKER_ARRAYS:
        np.testing.assert_allclose(getattr(model, name), getattr(stock, name) * base ** parts[name], rtol=1e-12)


def rollout(env, actions, seed=0):
    env.reset(seed=seed)
    return np.stack([env.step(a)[0] for a in actions])


def test_walker_param_changes_dynamics():
    dist = get("walker_param")
    u1, u2 = dist.tasks("train", 2, seed=0)
    actions = np.random.default_rng(1).uniform(-1, 1, (10, 6))
    s1, s2 = rollout(dist.make_env(u1), actions), rollout(dist.make_env(u2), actions)
    assert np.abs(s1[0] - s2[0]).max() > 1e-4      # already the first transition differs
    assert np.abs(s1 - s2).max() > 1e-2
    np.testing.assert_array_equal(s1, rollout(dist.make_env(u1), actions))   # but deterministically
    # the task u = 0 is exactly stock Walker2d-v5
    stock = rollout(Walker2dEnv(), actions.astype(np.float32))   # make_env passes float32 actions
    np.testing.assert_array_equal(rollout(dist.make_env(np.zeros(u1.size)), actions), stock)


# ---- umaze_goal_m ------------------------------------------------------------------------------
@pytest.mark.parametrize("split, n", [("train", 10), ("test", 11)])
def test_umaze_goal_ranges(split, n):
    goals = get("umaze_goal_m").tasks(split, n, seed=0)
    left, right = goals[: (n + 1) // 2], goals[(n + 1) // 2:]
    assert len(left) == (n + 1) // 2 and len(right) == n // 2
    assert np.all((left[:, 0] >= 0.4) & (left[:, 0] <= 1.2))
    assert np.all((right[:, 0] >= 2.4) & (right[:, 0] <= 3.2))
    assert np.all((goals[:, 1] >= 1) & (goals[:, 1] <= 2))


def push(env, direction, steps):
    xy = []
    for _ in range(steps):
        obs = env.step(np.asarray(direction, dtype=np.float32))[0]
        np.testing.assert_array_equal(obs[:2], env.unwrapped.data.qpos)
        xy.append(obs[:2])
    return np.array(xy)


def test_umaze_walls_block_motion():
    env = get("umaze_goal_m").make_env(np.array([1.0, 1.5]))
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4,) and np.all(np.abs(obs[:2] - [2, 3]) <= 0.1) and np.all(obs[2:] == 0)
    r, tol = 0.1, 0.05   # the point's radius; contacts are soft (~0.03 penetration at full speed)
    xy = push(env, [0, 1], 40)        # up from the junction: the outer wall at y = 3.5
    assert xy[:, 1].max() <= 3.5 - r + tol and xy[-1, 1] > 3.5 - r - tol
    xy = push(env, [0, -1], 40)       # down from the junction: the wall between the arms (y = 2.5)
    assert xy[:, 1].min() >= 2.5 + r - tol and xy[-1, 1] < 2.5 + r + tol
    xy = push(env, [-1, 0], 40)       # left along the top corridor to the left arm, stopped at x = 0.5
    assert xy[:, 0].min() >= 0.5 + r - tol and xy[-1, 0] < 0.5 + r + tol
    xy = push(env, [0, -1], 60)       # down the left arm to its bottom wall at y = 0.5
    assert xy[:, 1].min() >= 0.5 + r - tol and xy[-1, 1] < 0.5 + r + tol
    assert np.all((xy[:, 0] >= 0.5 + r - tol) & (xy[:, 0] <= 1.5 - r + tol))
    xy = push(env, [1, 0], 40)        # right, into the wall between the arms (x = 1.5)
    assert xy[:, 0].max() <= 1.5 - r + tol and xy[-1, 0] > 1.5 - r - tol


def test_umaze_speed_is_sensible():
    env = get("umaze_goal_m").make_env(np.array([1.0, 1.5]))
    env.reset(seed=0)
    env.unwrapped.set_state(np.array([1.0, 3.0]), np.zeros(2))
    for _ in range(10):              # 0.3 s of full throttle along the open top corridor
        obs = env.step(np.array([1.0, 0.0], dtype=np.float32))[0]
    assert 2.5 < obs[2] < 5.0        # top speed gear/damping = 5, time constant 0.21 s
    assert 1.5 < obs[0] < 2.5
