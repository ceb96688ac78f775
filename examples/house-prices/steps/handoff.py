"""What the steps hand each other: JSON files in the marshal folder.

The folder is `.marshal` in the workspace volume, the step's working
directory; runner creates it before the step starts. Files are written
atomically with sorted keys, so a re-run writes the same bytes.
"""
import json
import os

MARSHAL = ".marshal"


def read_json(name):
    with open(os.path.join(MARSHAL, name), encoding="utf-8") as f:
        return json.load(f)


def write_json(name, value, indent=None):
    """Writes .marshal/NAME; returns its path. indent=None: compact."""
    os.makedirs(MARSHAL, exist_ok=True)
    path = os.path.join(MARSHAL, name)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        if indent is None:
            json.dump(value, f, sort_keys=True, separators=(",", ":"))
        else:
            json.dump(value, f, sort_keys=True, indent=indent)
        f.write("\n")
    os.replace(path + ".tmp", path)
    return path
