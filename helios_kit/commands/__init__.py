"""The subcommands of `helios`, one module each (see helios_kit.cli)."""
