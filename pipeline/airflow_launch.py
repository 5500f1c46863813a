"""How each Airflow task launches its TFX component (pipeline/airflow_dag.py).

TFX 1.16's AirflowDagRunner builds one PythonOperator per component, calling
`tfx.orchestration.airflow.airflow_component._airflow_component_launcher`.
`launch_component` does what that function does, with two changes that a
deployment needs (both seen on PostgreSQL with bench/airflow_deployment.py):

1. The run id TFX records is the DAG run's id qualified by the DAG id
   (`tfx_run_id`). TFX names every output artifact `KEY:RUN_ID`, and ML
   Metadata wants (type, name) unique in a store: two DAGs sharing one store
   collided on their first common artifact type (both ImportSchemaGen's
   `schema`) whenever their run ids were equal (triggered with one id, or
   scheduled for the same logical date, `scheduled__2024-01-02T00:00:00+00:00`),
   and the second DAG's task then failed on every try with "duplicate key
   value violates unique constraint uniqueartifacttypename".
2. A retried task can register its execution again (`RetryableMetadata`). A
   try that died after registering (SIGKILL, a lost worker) leaves its
   component-run context, execution, input events and pending outputs in the
   store; TFX reuses that execution on the next try but puts the same input
   events again ("Given event already exists"), then registers outputs with
   the same names again ("duplicate key ... (type_id, name)"), both refused by
   ML Metadata: every Airflow retry of such a task failed. Here the retry
   reuses the execution, its events and its outputs (same URIs: they are named
   after the execution id).

Nothing here imports Airflow: the main venv tests it too.
"""

from __future__ import annotations

import functools
from typing import Any

from ml_metadata import errors as mlmd_errors
from ml_metadata.proto import metadata_store_pb2
from tfx.orchestration import metadata as tfx_metadata
from tfx.utils import telemetry_utils


def tfx_run_id(dag_id: str, airflow_run_id: str) -> str:
    """The run id TFX records for an Airflow DAG run: `DAG_ID:RUN_ID`."""
    return f"{dag_id}:{airflow_run_id}"


class RetryableMetadata(tfx_metadata.Metadata):
    """TFX's ML Metadata handle, where a retried component run registers again.

    On a retry the component run's context already exists: the execution of the
    try that died is reused, as TFX does, with input events only for inputs that
    try did not record (none, when the upstream outputs are the same), and the
    outputs it registered are taken over.
    """

    def register_execution(self, pipeline_info, component_info, contexts, exec_properties=None,
                           input_artifacts=None) -> metadata_store_pb2.Execution:
        given = list(contexts)
        try:
            return super().register_execution(pipeline_info, component_info, contexts, exec_properties,
                                               input_artifacts)
        except mlmd_errors.AlreadyExistsError:
            context = self.get_component_run_context(component_info)
            previous = self.store.get_executions_by_context(context_id=context.id) if context else []
            if len(previous) != 1:
                raise
            recorded = {event.artifact_id for event in self.store.get_events_by_execution_ids([previous[0].id])
                        if event.type == metadata_store_pb2.Event.INPUT}
            execution = self._prepare_execution(tfx_metadata.EXECUTION_STATE_NEW, exec_properties or {},
                                                pipeline_info, component_info)
            execution.id = previous[0].id
            pairs = self._artifact_and_event_pairs(artifact_dict=input_artifacts or {},
                                                   event_type=metadata_store_pb2.Event.INPUT,
                                                   registered_artifacts_ids=recorded)
            self.store.put_execution(execution=execution, artifact_and_events=pairs, contexts=given + [context])
            contexts[:] = given + [context]
            return execution

    def update_execution(self, execution, component_info, input_artifacts=None, output_artifacts=None,
                         exec_properties=None, execution_state=None, artifact_state=None, contexts=None) -> None:
        if output_artifacts and execution.id:
            self._adopt_registered_outputs(execution.id, output_artifacts)
        super().update_execution(execution, component_info, input_artifacts, output_artifacts, exec_properties,
                                 execution_state, artifact_state, contexts)

    def _adopt_registered_outputs(self, execution_id: int, output_artifacts: dict) -> None:
        """The dead try of a reused execution already registered its (pending) outputs: same execution,
        so same URI and name (`KEY:RUN_ID`, unique per type). This try's outputs are those artifacts;
        registering them anew would fail on the name."""
        ids = [event.artifact_id for event in self.store.get_events_by_execution_ids([execution_id])
               if event.type == metadata_store_pb2.Event.OUTPUT]
        if not ids:
            return
        registered = {(a.uri, a.name): a.id for a in self.store.get_artifacts_by_id(ids)}
        for artifacts in output_artifacts.values():
            for artifact in artifacts:
                if not artifact.id and (artifact.uri, artifact.name) in registered:
                    artifact.id = registered[(artifact.uri, artifact.name)]


def launch_component(tfx_launch: functools.partial, **context: Any) -> None:
    """Runs the component of one Airflow task: TFX's `_airflow_component_launcher(**context)`, with the
    qualified run id and RetryableMetadata. `tfx_launch` is the callable AirflowDagRunner gave the task
    (TFX's launcher and its arguments); `context` is Airflow's (`ti`, and `exec_properties` from op_kwargs)."""
    args = tfx_launch.keywords
    component = args["component"]
    component.exec_properties.update(context["exec_properties"])
    pipeline_info = args["pipeline_info"]
    ti = context["ti"]
    pipeline_info.run_id = tfx_run_id(ti.dag_id, ti.get_dagrun().run_id)
    launcher = args["component_launcher_class"].create(
        component=component,
        pipeline_info=pipeline_info,
        driver_args=args["driver_args"],
        metadata_connection=RetryableMetadata(args["metadata_connection_config"]),
        beam_pipeline_args=args["beam_pipeline_args"],
        additional_pipeline_args=args["additional_pipeline_args"],
        component_config=args["component_config"],
    )
    with telemetry_utils.scoped_labels({telemetry_utils.LABEL_TFX_RUNNER: "airflow"}):
        launcher.launch()
