"""The store's schema: every artefact of an experiment store, named once.

Each `Artefact` is a path pattern, its kind and what writes it. Code builds paths only through
these (`layout.BATCH("train", 3)` → `data/train/3`); no other module spells a store path. The
README's store-layout section is `markdown()` (a test checks that they agree; `python -m
mbml_cli.core.layout` prints it), and a test checks that every node a run writes matches an artefact.

Kinds: `array` one zarr array; `table` an append-only row table (a group of equally long columns
whose `n` attribute counts the complete rows, see `store.py`); `weights` one array per tensor in
two slots `a`/`b` with the `current` one named in the group's attributes (a checkpoint packs its
tensors into one array per dtype, see `checkpoint.py`); `attrs` a group whose
attributes are the record; `group` a group of arrays with attributes.
"""
from __future__ import annotations

import os
import re
import socket
import string
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Artefact:
    pattern: str        # e.g. "data/{split}/{task}"; the last field may contain "/"
    kind: str           # array | table | weights | attrs | group
    writer: str         # the stage (or command) that writes it
    doc: str

    @property
    def fields(self) -> list[str]:
        return [f for _, f, _, _ in string.Formatter().parse(self.pattern) if f]

    def __call__(self, *parts) -> str:
        if len(parts) != len(self.fields):
            raise TypeError(f"{self.pattern}: needs {self.fields}, got {parts}")
        return self.pattern.format(**dict(zip(self.fields, map(str, parts))))

    def matches(self, path: str) -> bool:
        regex, last = "", self.fields[-1] if self.fields else None
        for literal, field, _, _ in string.Formatter().parse(self.pattern):
            regex += re.escape(literal)
            if field:
                regex += ".+" if field == last and self.pattern.endswith("}") else "[^/]+"
        return re.fullmatch(regex, path) is not None


# ---- the artefacts, in the order of the pipeline: name | pattern | kind | writer | what ------------
_TABLE = """
TASKS              | tasks/{split}                      | array   | run         | task parameters (T, p) of `train` and `test`; attrs: `param` (what they mean); imported data also records its source, each task's dataset and the action bounds
BATCH              | data/{split}/{task}                | table   | collect     | one task's batch: obs, act (in [−1, 1]), rew, next_obs, terminal, truncated, info
HELDOUT_BATCH      | data/heldout/{task}                | table   | collect     | imported data without an environment: episodes kept out of training for eval's offline check
SAC                | models/collect/sac/{task}          | weights | collect     | the collecting SAC agent of one task
CHECKPOINT         | models/{stage}/checkpoint/{shard}  | weights | collect, bcq, finetune | resumable state (see `checkpoint.py`); shard: `all` or the task indices
BCQ                | models/bcq/{which}/{task}          | weights | bcq         | one task's BCQ teacher; which: final, best
REWARD_MODEL       | models/reward/{kind}               | weights | reward      | the K ensembles; kind: reward, next_state (dynamics distributions)
REWARD_ERROR       | models/reward/{name}               | array   | reward      | (K, K) held-out MSE of model i on task j; name: error, error_single, error_next_state
RELABEL            | relabel/{name}                     | array   | relabel     | R̂_i on task j's rows (K, K, N): mean, std, mask (Eq. 7), next_obs; (K, K) eligible
RELABEL_INFO       | relabel                            | attrs   | relabel     | std_threshold, sizes (rows per task it was made from)
DISTILL            | models/distill/{algo}/{which}      | weights | distill     | a distilled policy; which: final, best
DISTILL_CHECKPOINT | models/distill/{algo}/checkpoint   | weights | distill     | resumable state of one algorithm's distillation (see `checkpoint.py`)
FINETUNE_BATCH     | data/finetune/{init}/{task}        | table   | finetune    | every transition of one fine-tuning run; init: mbml, scratch
FINETUNE_WEIGHTS   | models/finetune/{init}/{task}      | weights | finetune    | a fine-tuned agent
METRICS            | metrics/{stage}/{name}             | table   | every stage | training curves, one row per log interval; a per-task metric is one (rows, K) column, its K tasks in the attribute `tasks`
EVAL_HISTORY       | eval/{algo}/history                | table   | distill     | evaluations during training: epoch, score, returns (T, E), z_mean (T, L)
AGENT_HISTORY      | eval/{algo}/agents                 | table   | distill     | MetaGenRL: each training agent's return on its own task at each evaluation: epoch, returns (K,)
EVALUATION         | eval/{algo}/{split}                | group   | eval        | split: test, unseen; returns (T, E), z_mean (T, L), z_points (T, n, L), tasks; attrs: score, score_std, skip, which, epoch; split offline (data without an environment): td_error, action_error per task
PROBE              | eval/{algo}/probe                  | group   | probe       | closer, kl_own, kl_other (K, K); attrs: score (fraction of pairs read by reward)
OFFLINE_CHECK      | eval/{algo}/offline                | group   | eval        | data without an environment: td_error, action_error (K,) on held-out episodes; attrs: their means, rows, in_sample
FINETUNE_CURVE     | finetune/{init}/{task}             | table   | finetune    | interactions, return
FINETUNE_SUMMARY   | finetune/summary/{task}            | attrs   | finetune    | interactions each init needs to reach the threshold, saving, returns
STAGE              | stages/{key}                       | attrs   | every stage | status, hash (the record's digest: recipe/graph.py), inputs and run (the run tokens it read, its own), started/updated/ended, progress, message; key: stage, stage/algo or stage/task
"""
NAMES = tuple(line.split("|")[0].strip() for line in _TABLE.strip().splitlines())
SCHEMA = tuple(Artefact(*(cell.strip() for cell in line.split("|")[1:])) for line in _TABLE.strip().splitlines())
(TASKS, BATCH, HELDOUT_BATCH, SAC, CHECKPOINT, BCQ, REWARD_MODEL, REWARD_ERROR, RELABEL, RELABEL_INFO, DISTILL,
 DISTILL_CHECKPOINT, FINETUNE_BATCH, FINETUNE_WEIGHTS, METRICS, EVAL_HISTORY, AGENT_HISTORY, EVALUATION, PROBE, OFFLINE_CHECK,
 FINETUNE_CURVE, FINETUNE_SUMMARY, STAGE) = SCHEMA


# The columns of a batch table (BATCH, HELDOUT_BATCH, FINETUNE_BATCH) and their dtypes: the one spec that
# collect, fine-tuning, the importers and the loaders share. `info` (per-step simulator features the
# reward reads) is there when the distribution has features; `truncated` (a time-limit cut) is kept
# apart from `terminal` and is not a training field.
BATCH_COLUMNS = {"obs": np.float32, "act": np.float32, "rew": np.float32, "next_obs": np.float32,
                 "terminal": np.bool_, "truncated": np.bool_, "info": np.float32}


def batch_shapes(obs_dim: int, act_dim: int, n_info: int | None) -> dict[str, tuple[int, ...]]:
    """Each batch column's shape per row (no `info` when `n_info` is None)."""
    shapes = {"obs": (obs_dim,), "act": (act_dim,), "rew": (), "next_obs": (obs_dim,), "terminal": (),
              "truncated": (), "info": (n_info or 0,)}
    return {k: v for k, v in shapes.items() if k != "info" or n_info is not None}


def stage_key(name: str, sub: str | int | None = None) -> str:
    """A stage record's key: the stage, or `stage/<algo|task>` for one of its parts."""
    return name if sub is None or sub == "" else f"{name}/{sub}"


def checkpoint(stage: str, name: str) -> str:
    """The one place a stage's checkpoint lives: distill's per algorithm, the others' per shard."""
    return DISTILL_CHECKPOINT(name) if stage == "distill" else CHECKPOINT(stage, name)


def parent(artefact: Artefact, *parts) -> str:
    """The group holding every instance of `artefact` with these leading fields (for listing)."""
    literal = artefact.pattern.split("{", 1)[0].rstrip("/")
    return "/".join([literal, *map(str, parts)]) if parts else literal


def find(path: str, kinds: set[str] | None = None) -> Artefact | None:
    """The artefact a stored node belongs to (of the patterns that match, of one of `kinds` when given,
    the one with the most literal text)."""
    hits = [a for a in SCHEMA if a.matches(path) and (kinds is None or a.kind in kinds)]
    literal = lambda a: sum(len(text) for text, *_ in string.Formatter().parse(a.pattern))
    return max(hits, key=literal) if hits else None


# ---- typed readers and writers --------------------------------------------------------------------
def children(store, group: str) -> list[str]:
    """Names of the subgroups of `group` (empty when it does not exist; one line when damaged)."""
    from .guard import reading
    if not store.exists(group):
        return []
    with reading(store.path, group):        # a child's damaged metadata is read here too
        return sorted(store.root[group].group_keys())


def read_tasks(store, split: str) -> np.ndarray:
    return store.read_array(TASKS(split))


def write_evaluation(store, algo: str, split: str, result, tasks: np.ndarray, **attrs) -> None:
    """An `EVALUATION` from an `evaluate.ProtocolResult`."""
    path = EVALUATION(algo, split)
    store.write_array(f"{path}/returns", result.returns.astype(np.float32))
    store.write_array(f"{path}/z_mean", result.z_mean.astype(np.float32))
    if result.z_points is not None:
        store.write_array(f"{path}/z_points", result.z_points.astype(np.float32))
    store.write_array(f"{path}/tasks", np.asarray(tasks, dtype=np.float64))
    store.group(path).attrs.update({"score": result.score, "score_std": float(result.per_task.std()),
                                    "skip": result.skip, **attrs})


def write_attrs(store, path: str, attrs: dict) -> None:
    """Replace the record at `path` (an `attrs` artefact) as a whole."""
    store.delete(path)
    store.group(path).attrs.update(attrs)


def read_attrs(store, path: str) -> dict:
    return dict(store.root[path].attrs) if store.exists(path) else {}


def holder() -> dict:
    """Who writes a running stage's record: its process and host."""
    return {"pid": os.getpid(), "host": socket.gethostname()}


def record_status(record: dict) -> str:
    """A stage record's status, where a `running` record whose process is gone (on this host) reads
    `interrupted` (killed without a chance to say so)."""
    status = str(record.get("status") or "pending")
    if status == "running" and record.get("host") == socket.gethostname():
        try:
            os.kill(int(record["pid"]), 0)
        except ProcessLookupError:
            return "interrupted"
        except (KeyError, TypeError, ValueError, PermissionError):
            pass
    return status


def markdown() -> str:
    """The README's store-layout table."""
    rows = ["| path | kind | written by | what |", "|---|---|---|---|"]
    rows += [f"| `{a.pattern}` | {a.kind} | {a.writer} | {a.doc} |" for a in SCHEMA]
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown())
