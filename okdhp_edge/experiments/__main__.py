"""``python -m okdhp_edge.experiments``."""

from okdhp_edge.experiments import main
from okdhp_edge.utils.cli import run_cli

if __name__ == "__main__":
    run_cli(main)
