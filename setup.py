"""Package layout that pyproject.toml alone cannot express.

The repository keeps `config/` and `slurm_templates/` at the top level (where users
look for them), while the program reads them as package resources. They are mapped
into the wheel as `fireflyhpc.config` and `fireflyhpc.slurm_templates`, so a
non-editable install carries them too.
"""
from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["fireflyhpc", "fireflyhpc.*"])
    + ["fireflyhpc.config", "fireflyhpc.slurm_templates"],
    package_dir={
        "fireflyhpc.config": "config",
        "fireflyhpc.slurm_templates": "slurm_templates",
    },
    package_data={
        "fireflyhpc": ["py.typed", "data/*", "data/**/*"],
        "fireflyhpc.config": ["*.toml"],
        "fireflyhpc.slurm_templates": ["*.sbatch"],
    },
)
