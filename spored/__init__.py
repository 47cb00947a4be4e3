"""spored: the agent that ends its own EC2 instance when its lifecycle says so."""

__version__ = "0.1.0"
