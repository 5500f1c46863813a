"""TF Serving's gRPC API for the served model, beside the REST API of pipeline/serve.py.

`python -m pipeline serve` starts it on 127.0.0.1:8500 (TF Serving's gRPC port;
`--grpc-port N`, config serving.grpc_port; 0 turns it off) over the same
ModelRepository as REST: the same loaded versions, the same hot reload. The
services and messages are those of the `tensorflow-serving-api` package, so a
client calls it exactly as it would call `tensorflow_model_server`:

    channel = grpc.insecure_channel("127.0.0.1:8500")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "sentiment-polarity"          # model_spec.version: optional
    request.inputs["text"].CopyFrom(tf.make_tensor_proto(["a gorgeous, witty film"]))
    request.output_filter.append("probability")             # optional: default all outputs
    response = stub.Predict(request, timeout=10)
    tf.make_ndarray(response.outputs["probability"])        # float32 [batch]

Served:
  PredictionService.Predict           signature `serving_default` (or no name): input `text`, a 1-D
                                      DT_STRING tensor of UTF-8 texts; outputs probability (float32
                                      [batch]), label (int64 [batch]), attention and trajectory
                                      (float32 [batch, time], 0 past each text's length: the padded
                                      tensors, as TF Serving returns them) and length (int64
                                      [batch]), and rating (float32 [batch], the star rating 1-10) from
                                      a model trained with model.rating_head; `output_filter`
                                      returns only the outputs named.
                                      The answer's model_spec names the version that served.
  PredictionService.GetModelMetadata  metadata_field "signature_def": a SignatureDefMap holding the
                                      signatures this server serves (serving_default), as stored in
                                      the version's saved_model.pb.
  ModelService.GetModelStatus         the versions' states, as REST's status (AVAILABLE, or END
                                      with the load error); model_spec.version selects one.
  Classify, Regress, MultiInference and HandleReloadConfigRequest answer UNIMPLEMENTED.

Versions: model_spec.version picks a loaded version (default: the highest).
model_spec.version_label is not supported (this server has no labels, as TF
Serving without a label config): INVALID_ARGUMENT.

Status codes (never INTERNAL or UNKNOWN for a client's mistake):
  NOT_FOUND         an unknown model name, a version that is not loaded;
  INVALID_ARGUMENT  an empty model name, a version_label, a signature other than serving_default,
                    inputs other than exactly `text`, a `text` that is not DT_STRING, not 1-D,
                    empty, with a shape that disagrees with its values, more than
                    serving.max_instances texts, or a text that is not valid UTF-8; an
                    output_filter naming an unknown or repeated output; GetModelMetadata without
                    metadata_field or with a field other than signature_def;
  UNAVAILABLE       no version loaded yet;
  RESOURCE_EXHAUSTED a request over serving.max_body_bytes (gRPC's own message limit);
  INTERNAL          only for a failure of the server or the model itself (logged with the traceback).

All model calls go through `infer()`: with a `predictor` (pipeline/batching.py's
interface, `predictor.predict(version, texts, outputs) -> (version, arrays)`, errors
carrying a gRPC status name in `.code`), the one REST uses, so that gRPC and REST
requests share its batches; without one, a direct call of the serving signature.
"""

from __future__ import annotations

import logging
import threading
from concurrent import futures
from pathlib import Path
from typing import Any, Sequence

import grpc

from pipeline import predict

log = logging.getLogger("sentiment.serve.grpc")

TEXT_INPUT = "text"
SIGNATURE_DEF_FIELD = "signature_def"
DEFAULT_PORT = 8500


class RequestError(Exception):
    """A request the server answers with a gRPC status other than OK."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


def _short(value: Any, limit: int = 40) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    value = str(value)
    return repr(value if len(value) <= limit else value[:limit] + "...")


# --- the model call: the one place -----------------------------------------------------------------


def infer(repository, version: int | None, texts: list[str], outputs: Sequence[str] = (),
          predictor=None) -> tuple[int, dict[str, Any]]:
    """(served version, {output: numpy array}) for `texts` on `version` (None: the highest),
    only the `outputs` named (all for none).

    With a `predictor` (see the module docstring), its answer; its refusals become
    their gRPC status. Without, what REST's do_predict did (repository.get, then the
    serving signature on the batch), without cutting the outputs to per-text lists:
    gRPC answers the padded tensors, as TF Serving does.
    """
    if predictor is not None:
        try:
            return predictor.predict(version, texts, list(outputs) or None)
        except Exception as error:
            code = getattr(error, "code", None)
            if isinstance(code, str) and code not in ("INTERNAL", "UNKNOWN") and hasattr(grpc.StatusCode, code):
                raise RequestError(getattr(grpc.StatusCode, code), str(error)) from None
            raise
    served_version, signature = repository.get(version)
    if signature is None:
        if served_version is None:
            raise RequestError(grpc.StatusCode.UNAVAILABLE, "no version of the model is loaded yet")
        raise RequestError(grpc.StatusCode.NOT_FOUND,
                           f"version {version} of the model is not loaded; versions: {repository.versions()}")
    arrays = predict.run_signature(signature, texts, per_token=not outputs or predict.needs_per_token(outputs))
    return served_version, {name: arrays[name] for name in check_output_filter(outputs, list(arrays))}


# --- request parsing --------------------------------------------------------------------------------


def check_model_spec(spec, model_name: str) -> int | None:
    """The version a ModelSpec asks for (None: the highest); RequestError if it names another model."""
    if not spec.name:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"model_spec.name is empty; this server serves "
                           f"{model_name!r}")
    if spec.name != model_name:
        raise RequestError(grpc.StatusCode.NOT_FOUND, f"unknown model {_short(spec.name)}; this server serves "
                           f"{model_name!r}")
    choice = spec.WhichOneof("version_choice")
    if choice == "version_label":
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"unrecognized version label {_short(spec.version_label)}: this server defines no "
                           "labels; use model_spec.version, or neither for the highest version")
    if choice == "version":
        return int(spec.version.value)
    return None


def check_signature_name(name: str) -> None:
    from pipeline import serve

    if name and name not in serve.SERVABLE_SIGNATURES:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"unknown signature_name {_short(name)}; this server serves only 'serving_default' "
                           "(the only signature that takes raw text)")


def parse_texts(inputs, max_instances: int) -> list[str]:
    """The texts of a PredictRequest's inputs: exactly one 1-D DT_STRING tensor `text` of UTF-8."""
    from tensorflow.core.framework import types_pb2

    names = sorted(inputs)
    if TEXT_INPUT not in inputs:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"the request has no input 'text' (inputs: {names}); send inputs['text'] = "
                           "tf.make_tensor_proto([texts], dtype=tf.string)")
    if len(names) != 1:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"unexpected inputs {[n for n in names if n != TEXT_INPUT]}; serving_default takes "
                           "exactly one input, 'text'")
    tensor = inputs[TEXT_INPUT]
    if tensor.dtype != types_pb2.DT_STRING:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"input 'text' must be DT_STRING, got {types_pb2.DataType.Name(tensor.dtype)}")
    shape = tensor.tensor_shape
    if shape.unknown_rank or len(shape.dim) != 1:
        dims = "unknown rank" if shape.unknown_rank else [d.size for d in shape.dim]
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"input 'text' must be 1-D (a batch of texts), got shape {dims}")
    count = shape.dim[0].size
    if count != len(tensor.string_val) or tensor.tensor_content:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"input 'text' has shape [{count}] but {len(tensor.string_val)} string values")
    if count == 0:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "input 'text' is empty: send at least one text")
    if count > max_instances:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"too many instances: {count} > {max_instances} per request")
    texts = []
    for i, text in enumerate(tensor.string_val):
        try:
            texts.append(text.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"instance {i}: the text is not valid UTF-8 ({exc.reason} at byte {exc.start})"
                               ) from None
    return texts


def check_output_filter(output_filter: Sequence[str], available: Sequence[str] | None = None) -> list[str]:
    """The outputs to answer: all (in the signature's order) without a filter, else those named,
    each once and (when `available` is given) each an output of the signature."""
    if not output_filter:
        return list(available or ())
    seen: set[str] = set()
    for name in output_filter:
        if available is not None and name not in available:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"output_filter names {_short(name)}, not an output of serving_default; "
                               f"outputs: {sorted(available)}")
        if name in seen:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"output_filter names {name!r} twice")
        seen.add(name)
    return list(output_filter)


# --- the services -----------------------------------------------------------------------------------


class _Handler:
    """Runs a method body; RequestError becomes its status, anything else INTERNAL (logged)."""

    def _answer(self, context, method: str, body):
        try:
            return body()
        except RequestError as error:
            code, message = error.code, str(error)
        except Exception as error:  # unforeseen: the server's fault, not the client's
            log.exception("internal error in %s", method)
            code, message = grpc.StatusCode.INTERNAL, (f"internal error ({type(error).__name__}); the server log "
                                                       "has the details")
        context.abort(code, message)  # raises


def _prediction_servicer_base():
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    return prediction_service_pb2_grpc.PredictionServiceServicer


def _model_servicer_base():
    from tensorflow_serving.apis import model_service_pb2_grpc

    return model_service_pb2_grpc.ModelServiceServicer


class PredictionService(_Handler, _prediction_servicer_base()):
    def __init__(self, repository, model_name: str, max_instances: int = 256, request_logger=None, predictor=None):
        self.repository = repository
        self.model_name = model_name
        self.max_instances = max_instances
        self.request_logger = request_logger
        self.predictor = predictor
        self._metadata_lock = threading.Lock()
        self._metadata_cache: dict[int, tuple[Any, Any]] = {}  # version -> (signature object, SignatureDefMap)

    def Predict(self, request, context):  # noqa: N802 (the proto's method name)
        return self._answer(context, "Predict", lambda: self._predict(request))

    def GetModelMetadata(self, request, context):  # noqa: N802
        return self._answer(context, "GetModelMetadata", lambda: self._metadata(request))

    def _predict(self, request):
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        version = check_model_spec(request.model_spec, self.model_name)
        check_signature_name(request.model_spec.signature_name)
        texts = parse_texts(request.inputs, self.max_instances)
        asked = check_output_filter(request.output_filter)
        logged = ("probability", "label") if self.request_logger is not None else ()
        wanted = asked + [name for name in logged if asked and name not in asked]
        served_version, outputs = infer(self.repository, version, texts, wanted, self.predictor)
        missing = [name for name in asked if name not in outputs]
        if missing:  # a known output this version lacks (rating, from a model without the rating head)
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"output_filter names {_short(missing[0])}, not an output of serving_default; "
                               f"outputs: {sorted(outputs)}")
        response = predict_pb2.PredictResponse()
        response.model_spec.name = self.model_name
        response.model_spec.version.value = served_version
        response.model_spec.signature_name = "serving_default"
        for name in asked or outputs:
            response.outputs[name].CopyFrom(tf.make_tensor_proto(outputs[name]))
        if logged and "probability" in outputs and "label" in outputs:  # never raises, never waits for the disk
            self.request_logger.log(served_version, texts, [
                {"probability": float(p), "label": int(label)}
                for p, label in zip(outputs["probability"], outputs["label"])])
        return response

    def _metadata(self, request):
        from tensorflow_serving.apis import get_model_metadata_pb2

        version = check_model_spec(request.model_spec, self.model_name)
        fields = list(request.metadata_field)
        if not fields:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               "GetModelMetadataRequest must name at least one metadata_field: 'signature_def'")
        for field in fields:
            if field != SIGNATURE_DEF_FIELD:
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"metadata field {_short(field)} is not supported; only 'signature_def'")
        served_version, signature = self.repository.get(version)
        if signature is None:
            if served_version is None:
                raise RequestError(grpc.StatusCode.UNAVAILABLE, "no version of the model is loaded yet")
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"version {version} of the model is not loaded; "
                               f"versions: {self.repository.versions()}")
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = self.model_name
        response.model_spec.version.value = served_version
        response.metadata[SIGNATURE_DEF_FIELD].Pack(self._signature_defs(served_version, signature))
        return response

    def _signature_defs(self, version: int, signature):
        with self._metadata_lock:
            cached = self._metadata_cache.get(version)
            if cached is not None and cached[0] is signature:
                return cached[1]
        defs = signature_def_map(Path(self.repository.base_dir) / str(version), signature)
        with self._metadata_lock:
            self._metadata_cache = {v: c for v, c in self._metadata_cache.items()
                                    if v in set(self.repository.versions())}
            self._metadata_cache[version] = (signature, defs)
        return defs


def signature_def_map(version_dir: Path, signature=None):
    """The SignatureDefMap of the servable signatures: from the version's saved_model.pb,
    else (the directory gone or unreadable while the version stays loaded) built from the
    loaded signature's input and output specs."""
    from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
    from tensorflow_serving.apis import get_model_metadata_pb2

    from pipeline import serve

    result = get_model_metadata_pb2.SignatureDefMap()
    try:
        saved_model = saved_model_pb2.SavedModel.FromString((version_dir / "saved_model.pb").read_bytes())
        graphs = ([g for g in saved_model.meta_graphs if "serve" in g.meta_info_def.tags]
                  or list(saved_model.meta_graphs))
        for name in serve.SERVABLE_SIGNATURES:
            if name in graphs[0].signature_def:
                result.signature_def[name].CopyFrom(graphs[0].signature_def[name])
        if result.signature_def:
            return result
    except Exception as error:  # noqa: BLE001 - fall back to the loaded function
        log.warning("%s: signature_def from saved_model.pb unavailable (%s); built from the loaded signature",
                    version_dir, error)
    if signature is None:
        return result
    definition = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
    try:
        _, input_specs = signature.structured_input_signature
        for name, spec in input_specs.items():
            _tensor_info(definition.inputs[name], spec.dtype, spec.shape, f"serving_default_{name}:0")
        for name, tensor in signature.structured_outputs.items():
            _tensor_info(definition.outputs[name], tensor.dtype, tensor.shape, "")
    except AttributeError:  # not a ConcreteFunction (a test double): inputs only
        import tensorflow as tf

        _tensor_info(definition.inputs[TEXT_INPUT], tf.string, tf.TensorShape([None]), "")
    result.signature_def["serving_default"].CopyFrom(definition)
    return result


def _tensor_info(info, dtype, shape, name: str) -> None:
    info.name = name
    info.dtype = dtype.as_datatype_enum
    info.tensor_shape.CopyFrom(shape.as_proto())


class ModelService(_Handler, _model_servicer_base()):
    def __init__(self, repository, model_name: str):
        self.repository = repository
        self.model_name = model_name

    def GetModelStatus(self, request, context):  # noqa: N802
        return self._answer(context, "GetModelStatus", lambda: self._status(request))

    def _status(self, request):
        from tensorflow_serving.apis import get_model_status_pb2, status_pb2

        version = check_model_spec(request.model_spec, self.model_name)
        rows = self.repository.status()
        if version is not None:
            rows = [row for row in rows if row["version"] == str(version)]
            if not rows:
                raise RequestError(grpc.StatusCode.NOT_FOUND, f"version {version} of the model is not loaded; "
                                   f"versions: {self.repository.versions()}")
        codes = status_pb2.StatusProto.DESCRIPTOR.fields_by_name["error_code"].enum_type.values_by_name
        states = get_model_status_pb2.ModelVersionStatus.State
        response = get_model_status_pb2.GetModelStatusResponse()
        for row in rows:
            status = response.model_version_status.add()
            status.version = int(row["version"])
            status.state = states.Value(row["state"])
            code = codes.get(row["status"]["error_code"])
            status.status.error_code = code.number if code is not None else codes["UNKNOWN"].number
            status.status.error_message = row["status"]["error_message"]
        return response


# --- the server -------------------------------------------------------------------------------------


class BindError(OSError):
    """The gRPC port could not be bound."""


def create_server(repository, model_name: str, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                  threads: int = 4, max_instances: int = 256, max_body_bytes: int = 8 * 1024 * 1024,
                  request_logger=None, predictor=None) -> tuple[grpc.Server, int]:
    """A gRPC server with both services, bound (port 0: any free port) but not started; (server, port).

    `predictor`: what runs the model (see infer); None: the signature, called directly."""
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc"),
                         options=[("grpc.max_receive_message_length", max_body_bytes),
                                  ("grpc.so_reuseport", 0)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(repository, model_name, max_instances, request_logger, predictor), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(repository, model_name), server)
    address = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as error:  # grpcio raises when the address cannot be bound
        raise BindError(f"cannot bind gRPC to {address}: {error}") from None
    if not bound:  # older grpcio answers 0 instead
        raise BindError(f"cannot bind gRPC to {address}")
    return server, bound
