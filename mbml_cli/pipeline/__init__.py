"""Stage modules: each registers its stage with `mbml_cli.stages.stage`."""
