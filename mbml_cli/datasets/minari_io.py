"""Minari datasets in and out: one dataset per task under a shared namespace.

Reading goes through Minari's storage layer only (`MinariStorage.read` → h5py or pyarrow): the
spaces come from the JSON in `metadata.json`, the arrays from HDF5/Arrow, nothing is unpickled and
no environment is built (a dataset whose metadata lacks its spaces is refused rather than
`gym.make`-ing its env spec). Nothing is ever downloaded: an id is looked up under
`$MINARI_DATASETS_PATH` (default `~/.minari/datasets`).

The convention mbml reads and writes (Minari has no task field):
- metadata `task_params`: the task parameters, a list of numbers;
- metadata `mbml`: {env, horizon, task_param, info_names, run, task, seed}, when mbml wrote it;
- episode infos `features` (T+1, n): the simulator features of each step (row 0: the reset), for
  distributions whose reward needs them;
- the env spec (on export, for a distribution with an environment): entry point `task_env` with
  kwargs {env, task, horizon, observation}, so `recover_environment()` builds that task's
  environment (mbml installed), as `mbml collect` stepped it.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from ..errors import StageError
from .batches import TaskBatch, episodes, from_episodes, natural_key

EXTRA = "pip install 'mbml[minari]'"


def _minari():
    try:
        import minari
        from minari.dataset.minari_storage import MinariStorage
        from minari.storage.datasets_root_dir import get_dataset_path
    except ImportError:
        raise StageError(f"Minari is not installed: {EXTRA}") from None
    return minari, MinariStorage, get_dataset_path


# ---- finding datasets -------------------------------------------------------------------------------
def _data_dir(path: Path) -> Path | None:
    for d in (path / "data", path):
        if (d / "metadata.json").is_file():
            return d
    return None


def resolve(source: str) -> list[tuple[str, Path]]:
    """(label, data directory) of each dataset `source` names: a dataset directory, a dataset id,
    or a namespace (directory or id prefix) holding several — those sorted naturally."""
    _, _, get_dataset_path = _minari()
    candidates = [Path(source)] if Path(source).exists() else []
    candidates.append(Path(get_dataset_path(source)))
    for path in candidates:
        if not path.is_dir():
            continue
        found = _data_dir(path)
        if found is not None:
            return [(source, found)]
        inner = sorted((d for d in path.rglob("metadata.json") if d.parent.name == "data"),
                       key=lambda p: natural_key(p.parent.parent.relative_to(path)))
        if inner:
            return [(f"{source.rstrip('/')}/{p.parent.parent.relative_to(path)}", p.parent) for p in inner]
    root = get_dataset_path()
    raise StageError(f"{source}: no Minari dataset there nor under {root} (mbml never downloads; "
                     "`minari download ID` or set MINARI_DATASETS_PATH)")


# ---- reading ------------------------------------------------------------------------------------------
def _box(label: str, space, what: str):
    import gymnasium as gym
    if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
        raise StageError(f"{label}: {what} space {space} is not a flat Box (mbml reads vector observations and actions)")
    return space


def read_dataset(label: str, data_dir: Path, n_info_of) -> TaskBatch:
    """One dataset as a TaskBatch; `n_info_of(mbml metadata)`: the info features its distribution
    needs, their names or count (None: any)."""
    _, MinariStorage, _ = _minari()
    raw = MinariStorage.read_raw_metadata(data_dir)
    meta = dict(raw.get("mbml") or {})
    if "observation_space" not in raw or "action_space" not in raw:
        raise StageError(f"{label}: its metadata has no observation/action space (mbml does not build "
                         "environments to find them)")
    try:
        storage = MinariStorage.read(data_dir)
    except ImportError as e:
        raise StageError(f"{label}: {raw.get('data_format')} format needs a package not installed ({e})") from None
    obs_space = _box(label, storage.observation_space, "observation")
    act_space = _box(label, storage.action_space, "action")
    total = int(raw.get("total_episodes", 0))

    def eps():
        for ep in storage.get_episodes(range(total)):
            infos = ep.get("infos") or {}
            feats = infos.get("features") if isinstance(infos, dict) else None
            yield {**ep, "features": None if feats is None else np.asarray(feats)[1:]}

    columns = from_episodes(label, eps(), n_info_of(meta), act_space.low, act_space.high)
    if columns["obs"].shape[1:] != obs_space.shape:
        raise StageError(f"{label}: observations of shape {columns['obs'].shape[1:]} in a space of shape {obs_space.shape}")
    params = raw.get("task_params")
    return TaskBatch(label, columns, np.asarray(act_space.low, np.float64), np.asarray(act_space.high, np.float64),
                     None if params is None else np.asarray(params, np.float64), meta)


def read(sources: list[str], n_info_of=lambda meta: None) -> list[TaskBatch]:
    """Every dataset the sources name, in order."""
    return [read_dataset(label, data_dir, n_info_of) for source in sources for label, data_dir in resolve(source)]


# ---- writing --------------------------------------------------------------------------------------------
def episode_buffers(columns: dict, low, high) -> list:
    """Minari `EpisodeBuffer`s of one transition stream (actions back in the space's units)."""
    from minari.data_collector.episode_buffer import EpisodeBuffer
    from .batches import original_units
    act = columns["act"]
    if not (np.all(np.asarray(low) == -1) and np.all(np.asarray(high) == 1)):
        act = original_units(act, low, high).astype(columns["act"].dtype)
    info = columns["info"]
    n_info = info.shape[-1] if info.ndim == 2 else 0
    out = []
    for s, e in episodes(columns):
        infos = None
        if n_info:
            infos = {"features": np.concatenate([np.zeros((1, n_info), info.dtype), info[s:e]])}
        out.append(EpisodeBuffer(observations=np.concatenate([columns["obs"][s:e], columns["next_obs"][e - 1:e]]),
                                 actions=act[s:e], rewards=columns["rew"][s:e],
                                 terminations=columns["terminal"][s:e], truncations=columns["truncated"][s:e],
                                 infos=infos))
    return out


def task_env(env: str, task: list, horizon: int, observation: str = "full", action_low=None, action_high=None):
    """Distribution `env`'s environment for `task` (the entry point of exported datasets' env spec),
    its actions in [action_low, action_high] when the data's are (mbml's own: [-1, 1])."""
    import gymnasium as gym
    from .. import envs
    made = envs.seeing(envs.get(env), observation, env).make_env(np.asarray(task, np.float64), horizon)
    if action_low is None:
        return made
    dtype = made.action_space.dtype
    return gym.wrappers.RescaleAction(made, np.asarray(action_low, dtype), np.asarray(action_high, dtype))


def env_spec(env: str, task, horizon: int, observation: str = "full", low=None, high=None):
    """The gymnasium EnvSpec that `recover_environment()` makes into `task_env(...)`: the task
    parameters travel in its kwargs (no gymnasium id can carry them), and the action bounds where
    they are not ±1."""
    from gymnasium.envs.registration import EnvSpec
    kwargs = {"env": env, "task": [float(x) for x in task], "horizon": int(horizon), "observation": observation}
    if low is not None and not (np.all(np.asarray(low) == -1) and np.all(np.asarray(high) == 1)):
        kwargs.update(action_low=[float(x) for x in low], action_high=[float(x) for x in high])
    return EnvSpec(f"mbml/{env}-v0", entry_point=f"{__name__}:task_env", kwargs=kwargs)


def write_dataset(dataset_id: str, columns: dict, low, high, metadata: dict, description: str,
                  out_dir: str | None = None, spec=None):
    """One Minari dataset (HDF5) with `create_dataset_from_buffers` (no jax), its spaces of the
    stored dtypes, `spec` (an EnvSpec, or None) its environment. Returns its directory."""
    minari, _, get_dataset_path = _minari()
    import gymnasium as gym
    previous = os.environ.get("MINARI_DATASETS_PATH")
    if out_dir is not None:
        os.environ["MINARI_DATASETS_PATH"] = str(Path(out_dir).resolve())
    try:
        if Path(get_dataset_path(dataset_id)).exists():
            raise StageError(f"{get_dataset_path(dataset_id)}: a Minari dataset is already there; remove it or use --out")
        obs, act = columns["obs"], columns["act"]
        obs_space = gym.spaces.Box(-np.inf, np.inf, obs.shape[1:], obs.dtype)
        act_space = gym.spaces.Box(np.asarray(low, act.dtype), np.asarray(high, act.dtype), dtype=act.dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")      # Minari warns about every optional field left empty
            dataset = minari.create_dataset_from_buffers(
                dataset_id, episode_buffers(columns, low, high), env=spec, observation_space=obs_space,
                action_space=act_space, algorithm_name=metadata.get("algorithm", "unknown"), author="mbml export",
                code_permalink=metadata.get("code", ""), description=description, data_format="hdf5")
        dataset.storage.update_metadata({k: v for k, v in metadata.items() if k not in ("algorithm", "code")})
        return Path(get_dataset_path(dataset_id))
    finally:
        if out_dir is not None:
            if previous is None:
                os.environ.pop("MINARI_DATASETS_PATH", None)
            else:
                os.environ["MINARI_DATASETS_PATH"] = previous
