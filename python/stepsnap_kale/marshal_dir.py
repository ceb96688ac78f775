"""Kale's marshal folder: one file per variable, in a format a person can open.

    NAME.npy      a numpy array (numpy.save, no pickle inside)
    NAME.pdpkl    a pandas DataFrame or Series (DataFrame.to_pickle)
    NAME.module   a module: its import name, imported again on load
    NAME.dillpkl  anything else, with dill (python3-dill) when it is installed
    NAME.pkl      anything else, with the standard pickle when dill is not

To pick up where a step started, in a notebook or a python3 session:

    from stepsnap_kale.marshal_dir import restore
    restore("/workspace/.house.ipynb.kale.marshal.dir")   # into globals()

or list a folder: python3 -m stepsnap_kale.marshal_dir DIR
"""

import importlib
import inspect
import os
import pickle
import sys
import types

try:  # dill serializes what pickle cannot (lambdas, closures, __main__ classes)
    import dill
except ImportError:  # pragma: no cover - depends on the node
    dill = None

EXTENSIONS = (".npy", ".pdpkl", ".module", ".dillpkl", ".pkl")


class MarshalError(Exception):
    """One line for the user: what, which variable, which type."""


def type_name(value):
    t = type(value)
    return t.__name__ if t.__module__ == "builtins" else "%s.%s" % (t.__module__, t.__qualname__)


def _is_numpy_array(value):
    np = sys.modules.get("numpy")
    return np is not None and type(value) is np.ndarray and not value.dtype.hasobject


def _is_pandas(value):
    pd = sys.modules.get("pandas")
    return pd is not None and isinstance(value, (pd.DataFrame, pd.Series))


def _write(path, write):
    """Writes through a temporary file and a rename, so a step killed half
    way never leaves a truncated variable for the next step to load."""
    tmp = path + ".tmp"
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _dump_with(module, value, path):
    with open(path, "wb") as f:
        module.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)


def save(folder, name, value):
    """Saves value as folder/NAME.EXT; returns the file's name."""
    if _is_numpy_array(value):
        import numpy as np

        ext, write = ".npy", lambda p: _save_npy(np, p, value)
    elif _is_pandas(value):
        ext, write = ".pdpkl", lambda p: value.to_pickle(p, compression=None)
    elif isinstance(value, types.ModuleType):
        ext, write = ".module", lambda p: _write_text(p, value.__name__ + "\n")
    elif dill is not None:
        ext, write = ".dillpkl", lambda p: _dump_with(dill, value, p)
    else:
        ext, write = ".pkl", lambda p: _dump_with(pickle, value, p)
    path = os.path.join(folder, name + ext)
    try:
        _write(path, write)
    except Exception as e:
        raise MarshalError(
            "cannot save variable %r (type %s) to the marshal folder: %s: %s"
            % (name, type_name(value), type(e).__name__, str(e).split("\n")[0])
        ) from None
    # A variable saved earlier in another format must not shadow this one.
    for other in EXTENSIONS:
        if other != ext and os.path.exists(os.path.join(folder, name + other)):
            os.unlink(os.path.join(folder, name + other))
    return name + ext


def _save_npy(np, path, value):
    with open(path, "wb") as f:
        np.save(f, value, allow_pickle=False)


def _write_text(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def find(folder, name):
    """The file that holds variable name, or None."""
    for ext in EXTENSIONS:
        path = os.path.join(folder, name + ext)
        if os.path.exists(path):
            return path
    return None


def load_file(path):
    ext = os.path.splitext(path)[1]
    if ext == ".npy":
        import numpy as np

        return np.load(path, allow_pickle=False)
    if ext == ".pdpkl":
        import pandas as pd

        return pd.read_pickle(path, compression=None)
    if ext == ".module":
        with open(path, encoding="utf-8") as f:
            return importlib.import_module(f.read().strip())
    if ext == ".dillpkl":
        if dill is None:
            raise MarshalError("%s needs dill: install python3-dill" % path)
        with open(path, "rb") as f:
            return dill.load(f)
    with open(path, "rb") as f:
        return pickle.load(f)


def load(folder, name):
    path = find(folder, name)
    if path is None:
        raise MarshalError(
            "variable %r is not in the marshal folder %s (no %s.npy, .pdpkl, .module, .dillpkl "
            "or .pkl); did the step that defines it run?" % (name, folder, name)
        )
    try:
        return load_file(path)
    except MarshalError:
        raise
    except Exception as e:
        raise MarshalError(
            "cannot load variable %r from %s: %s: %s"
            % (name, path, type(e).__name__, str(e).split("\n")[0])
        ) from None


def variables(folder):
    """name -> file, for every variable file in folder."""
    out = {}
    for entry in sorted(os.listdir(folder)):
        stem, ext = os.path.splitext(entry)
        if ext in EXTENSIONS and stem.isidentifier() and stem not in out:
            out[stem] = os.path.join(folder, entry)
    return out


def load_all(folder):
    """Every variable of a marshal folder: {name: value}."""
    return {name: load(folder, name) for name in variables(folder)}


def restore(folder, namespace=None):
    """Loads every variable of folder into namespace (default: the caller's
    globals, e.g. a notebook's session); returns the names loaded."""
    if namespace is None:
        namespace = inspect.stack()[1].frame.f_globals
    values = load_all(folder)
    namespace.update(values)
    return sorted(values)


def main(argv):
    if len(argv) != 2:
        print("usage: python3 -m stepsnap_kale.marshal_dir MARSHAL_DIR", file=sys.stderr)
        return 2
    for name, path in variables(argv[1]).items():
        print("%s\t%s" % (name, os.path.basename(path)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
