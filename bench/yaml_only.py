"""The baseline of bench/check_big.py: load a YAML file with PyYAML, nothing else."""

from __future__ import annotations

import sys

import yaml

if __name__ == "__main__":
    path, loader = sys.argv[1], sys.argv[2]
    with open(path, encoding="utf-8") as handle:
        data = yaml.load(handle, Loader=getattr(yaml, loader))
    print(f"{len(data['schedules'])} schedules loaded")
