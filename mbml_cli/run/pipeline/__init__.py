"""Stage modules: each registers its stage with `mbml_cli.run.context.stage`; `common.py` (seeds, shards,
checkpoints, progress) and `online.py` (environments stepped in lockstep) hold what stages share."""
