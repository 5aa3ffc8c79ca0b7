"""Configuration: the value objects a run is described by (`settings`), and how they are built from flags,
the environment and a TOML file (`load`). Nothing here imports an HTTP client or the retry library."""
