"""fireflyhpc: a web visualization on an HPC compute node, in your browser, with one command."""

__version__ = "0.1.0"

__all__ = ["__version__"]
