"""Installs the pipeline, its components and model code as one package set.

Installed (not read from a path) so that Beam workers, Kubeflow images and
Airflow workers import the same `models.*` module names the pipeline refers to.
"""

from setuptools import find_packages, setup

setup(
    name="sentiment-rnn-pipeline",
    version="0.1.0",
    description="TFX pipeline for many-to-one RNN sentiment classification",
    python_requires=">=3.10,<3.11",
    packages=find_packages(include=["pipeline", "pipeline.*", "components", "components.*", "models", "models.*"]),
    package_data={"": ["*.pbtxt"], "pipeline": ["templates/*.html"]},
    install_requires=["tfx==1.16.0", "apache-beam[gcp]==2.59.0", "matplotlib>=3.8,<4",
                      # The Naive Bayes weights' logistic regression (models/naive_bayes.py).
                      "scikit-learn>=1.3,<2"],
    # The HTTP server is optional so that Airflow 2 workers (Flask 2) can install the package.
    extras_require={"serve": ["Flask>=3.1,<4", "waitress>=3,<4"], "test": ["pytest", "ruff"]},
    entry_points={"console_scripts": ["sentiment-pipeline=pipeline.__main__:main"]},
)
