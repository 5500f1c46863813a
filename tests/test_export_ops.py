"""Stock TF Serving can load the export: every op of the exported graphs is a core TensorFlow op."""

import pytest
import tensorflow as tf

from pipeline import export_ops
from tests import serving_models


def _non_core_report(result) -> str:
    return (f"ops that stock tensorflow_model_server lacks: {result['non_core']} "
            f"(all ops: {sorted(result['ops'])})")


def test_the_pipeline_export_uses_only_core_tensorflow_ops(tiny_transform, tmp_path):
    _, tft_output = tiny_transform
    export_dir = serving_models.export_tiny_model(tft_output, str(tmp_path / "export"))
    result = export_ops.list_ops(tmp_path / "export")
    print(f"{len(result['ops'])} ops in {export_dir} ({result['functions']} functions): {sorted(result['ops'])}")
    assert not result["non_core"], _non_core_report(result)
    # The listing reaches into the function library: the Transform graph (tokenizing,
    # vocabulary lookup) and the Keras model are functions there, not main-graph nodes.
    assert {"StringSplitV2", "StaticRegexReplace", "LookupTableFindV2", "MatMul", "Sigmoid"} <= set(result["ops"])
    assert result["functions"] > 10
    assert not set(result["ops"]) & export_ops.PYTHON_OPS


class _WithPyFunc(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve(self, text):
        lengths = tf.py_function(lambda t: tf.strings.length(t), [text], tf.int32)
        return {"length": lengths}


def test_a_py_function_in_the_export_is_reported(tmp_path):
    serving_models.export_module(_WithPyFunc(), str(tmp_path / "pyfunc"))
    result = export_ops.list_ops(tmp_path / "pyfunc")
    assert "EagerPyFunc" in result["non_core"]


def test_an_op_from_an_extra_op_library_is_reported(tmp_path):
    from tensorflow.core.protobuf import saved_model_pb2

    serving_models.export_out_of_range(str(tmp_path / "custom"))
    path = tmp_path / "custom" / "saved_model.pb"
    saved_model = saved_model_pb2.SavedModel.FromString(path.read_bytes())
    # As a tf.text tokenizer would appear: a node of an op no core library registers.
    function = saved_model.meta_graphs[0].graph_def.library.function[0]
    function.node_def.add(name="tokenize", op="WhitespaceTokenizeWithOffsetsV2")
    path.write_bytes(saved_model.SerializeToString())
    result = export_ops.list_ops(tmp_path / "custom")
    assert result["non_core"] == ["WhitespaceTokenizeWithOffsetsV2"]
    assert export_ops.main([str(tmp_path / "custom")]) == 1


def test_the_command_line_exits_0_for_core_ops_and_2_without_a_saved_model(tmp_path, capsys):
    serving_models.export_out_of_range(str(tmp_path / "ok"))
    assert export_ops.main([str(tmp_path / "ok")]) == 0
    assert "all core TensorFlow ops" in capsys.readouterr().out
    assert export_ops.main([str(tmp_path / "missing")]) == 2


@pytest.mark.parametrize("op", sorted(export_ops.PYTHON_OPS))
def test_python_ops_are_never_core_even_though_registered(op):
    from tensorflow.python.framework import op_def_registry

    assert op_def_registry.get(op) is not None  # registered in TensorFlow, yet TF Serving cannot run them
