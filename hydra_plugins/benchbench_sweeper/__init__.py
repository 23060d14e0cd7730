"""benchbench's Hydra sweeper plugin (hydra/sweeper=benchbench, the default in its config)."""
