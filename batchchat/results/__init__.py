"""After a run: an output's lines as flat rows (`export`) and a per-id account of them (`report`)."""
