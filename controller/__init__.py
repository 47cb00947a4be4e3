"""spawn: the CLI that launches disposable, self-cleaning EC2 instances."""

__version__ = "0.1.0"
