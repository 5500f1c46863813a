# The image every Kubeflow / Vertex AI task of this pipeline runs in (and the
# SDK harness image for Dataflow or portable Beam runners, if wanted).
#
#   docker build -t REGISTRY/sentiment-pipeline:TAG .
#   docker push REGISTRY/sentiment-pipeline:TAG
#   .venv-kfp/bin/python -m pipeline compile --target kubeflow --image REGISTRY/sentiment-pipeline:TAG ...
#
# The TFX 1.16 image already holds TFX, Beam and TensorFlow; this adds the
# project (editable, so pipeline/, components/, models/ import by name and the
# curated schemas and setup.py sit at /pipeline, where the compiled spec
# expects them: see IMAGE_PROJECT_ROOT in pipeline/kubeflow_v2_runner.py).
# Missing dependencies are installed at the versions of requirements.lock.
FROM tensorflow/tfx:1.16.0

WORKDIR /pipeline
ENV TF_USE_LEGACY_KERAS=1 \
    PYTHONDONTWRITEBYTECODE=1

COPY requirements.lock setup.py ./
COPY pipeline/ pipeline/
COPY components/ components/
COPY models/ models/
COPY schema/ schema/

RUN python -m pip install --no-cache-dir -c requirements.lock -e . tf_keras \
    && python -c "import models.trainer, models.preprocessing, components.review_example_gen, pipeline.pipeline"
