"""Can stock TF Serving load this export? Every op of a SavedModel against TensorFlow's core ops.

`tensorflow_model_server` links TensorFlow's own kernels and nothing else: a
SavedModel that needs a `PyFunc`/`EagerPyFunc` (Python code inside the graph)
or an op from an extra op library (tf.text, tf.io, a custom .so) fails to load
there. This lists every op of the export's graphs, the main graph and every
function of its function library (where tf.function bodies and the Transform
graph live), and looks each up in TensorFlow's op registry in a fresh process
that imports only `tensorflow`, so that op libraries imported by this process
(tensorflow_transform, tensorflow_text, ...) cannot register theirs.

    .venv/bin/python -m pipeline.export_ops outputs/serving/sentiment-polarity/<version> [--json]

exits 0 when every op is core, 1 otherwise (listing the others), 2 on a bad path.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

# In the core registry, but they run Python: TF Serving has no interpreter to run them.
PYTHON_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})

# Run by a fresh interpreter: only TensorFlow's own ops are registered there.
_CHILD = r"""
import json, os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.framework import op_def_registry

path = sys.argv[1]
saved_model = saved_model_pb2.SavedModel.FromString(open(os.path.join(path, "saved_model.pb"), "rb").read())
ops = {}
functions = set()
for graph in saved_model.meta_graphs:
    for node in graph.graph_def.node:
        ops.setdefault(node.op, set()).add("<main graph>")
    for function in graph.graph_def.library.function:
        functions.add(function.signature.name)
        for node in function.node_def:
            ops.setdefault(node.op, set()).add(function.signature.name)
extra = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow_text", "tensorflow_transform",
                                                               "tensorflow_io", "tensorflow_addons"))
print(json.dumps({
    "ops": {op: {"in_registry": op_def_registry.get(op) is not None, "functions": len(where)}
            for op, where in sorted(ops.items())},
    "function_calls": sorted(op for op in ops if op in functions),
    "functions": len(functions),
    "tensorflow": tf.__version__,
    "extra_modules_imported": extra,
}))
"""


def list_ops(saved_model_dir: Path) -> dict:
    """Every op of the SavedModel and whether TensorFlow's core registry has it.

    Returns {"ops": {op: {"core": bool, "functions": n}}, "non_core": [...],
    "functions": n, "tensorflow": version}. A node whose op is the name of a
    function of the library (a direct function call) is not an op and is left out.
    """
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    child = subprocess.run([sys.executable, "-c", _CHILD, str(saved_model_dir)], capture_output=True, text=True,
                           env=env, timeout=600)
    if child.returncode != 0:
        raise RuntimeError(f"listing the ops of {saved_model_dir} failed:\n{child.stderr[-3000:]}")
    found = json.loads(child.stdout.strip().splitlines()[-1])
    if found["extra_modules_imported"]:
        raise RuntimeError(f"the op listing imported op libraries: {found['extra_modules_imported']}")
    calls = set(found["function_calls"])
    ops = {op: {"core": info["in_registry"] and op not in PYTHON_OPS, "functions": info["functions"]}
           for op, info in found["ops"].items() if op not in calls}
    return {"ops": ops, "non_core": sorted(op for op, info in ops.items() if not info["core"]),
            "functions": found["functions"], "tensorflow": found["tensorflow"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.export_ops", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("saved_model_dir", help="a SavedModel directory (a pushed version)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    path = Path(args.saved_model_dir)
    if not (path / "saved_model.pb").is_file():
        print(f"error: no saved_model.pb in {path}", file=sys.stderr)
        return 2
    result = list_ops(path)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{len(result['ops'])} distinct ops in the main graph and its {result['functions']} functions "
              f"(TensorFlow {result['tensorflow']}):")
        print("  " + ", ".join(result["ops"]))
        if result["non_core"]:
            print(f"NOT in TensorFlow's core ops (stock TF Serving cannot load this): {', '.join(result['non_core'])}")
        else:
            print("all core TensorFlow ops: stock TF Serving can load this export")
    return 1 if result["non_core"] else 0


if __name__ == "__main__":
    sys.exit(main())
