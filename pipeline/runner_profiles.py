"""Beam runner profiles: which `beam_pipeline_args` the Beam-heavy components get.

The component graph never changes; a profile only picks where and how the
Beam work of ExampleGen, StatisticsGen, Transform and Evaluator runs:

| profile | runner | runs here? |
|---|---|---|
| `direct-in-memory` | DirectRunner, one in-process worker (the default) | yes |
| `direct-multi-processing` | DirectRunner, one worker process per core | yes |
| `dataflow` | Google Cloud Dataflow (needs `project`, `region`, `temp_location`) | no |
| `flink` | a Flink cluster through its Beam job server (`job_endpoint`) | no |
| `spark` | a Spark cluster through its Beam job server (`job_endpoint`) | no |

Every profile passes `--setup_file` (this project's setup.py) so remote
workers install this package and import `models.*` / `components.*` by the
same names; on the DirectRunner it also stops TFX from building a throwaway
sdist of the project before each Beam component.

Flink and Spark use Beam's PortableRunner against a job server that is
already running (`job_endpoint=host:port`): the `FlinkRunner`/`SparkRunner`
shortcuts download a job-server jar at start, which fails offline.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Mapping

from pipeline import configs

DEFAULT_SETUP_FILE = configs.PROJECT_ROOT / "setup.py"


@dataclasses.dataclass(frozen=True)
class Profile:
    name: str
    description: str
    # Options the profile cannot do without (an error names them when missing).
    required: tuple[str, ...] = ()
    # Options it accepts beyond `setup_file` and `extra_args`, with defaults.
    optional: Mapping[str, str | None] = dataclasses.field(default_factory=dict)
    runs_locally: bool = False


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("direct-in-memory", "DirectRunner, one in-process worker", runs_locally=True),
        Profile(
            "direct-multi-processing",
            "DirectRunner, one worker process per core",
            optional={"workers": None},  # None: os.cpu_count()
            runs_locally=True,
        ),
        Profile(
            "dataflow",
            "Google Cloud Dataflow",
            required=("project", "region", "temp_location"),
            optional={"staging_location": None, "machine_type": None, "max_num_workers": None,
                      "service_account_email": None, "sdk_container_image": None},
        ),
        Profile(
            "flink",
            "Flink through a running Beam job server (PortableRunner)",
            required=("job_endpoint",),
            optional={"environment_type": "DOCKER", "environment_config": None, "parallelism": None},
        ),
        Profile(
            "spark",
            "Spark through a running Beam job server (PortableRunner)",
            required=("job_endpoint",),
            optional={"environment_type": "DOCKER", "environment_config": None},
        ),
    )
}

# Follows bench/beam_runners.py: re-measure before changing it.
DEFAULT_PROFILE = "direct-in-memory"


class ProfileError(ValueError):
    pass


def beam_pipeline_args(
    profile: str = DEFAULT_PROFILE,
    options: Mapping[str, str] | None = None,
    setup_file: str | os.PathLike | None = None,
    extra_args: tuple[str, ...] | list[str] = (),
) -> tuple[str, ...]:
    """The Beam arguments for `profile`.

    `options` are the profile's settings (`project`, `region`, `job_endpoint`,
    `workers`, ...; names with `-` or `_` both work). `setup_file` defaults to
    this checkout's setup.py; pass the path inside a container image when the
    args are compiled for one. `extra_args` are appended as they are.
    """
    if profile not in PROFILES:
        raise ProfileError(f"unknown Beam profile {profile!r}; choose one of: {', '.join(PROFILES)}")
    spec = PROFILES[profile]
    opts = {key.replace("-", "_"): str(value) for key, value in (options or {}).items() if value is not None}
    known = set(spec.required) | set(spec.optional)
    unknown = sorted(set(opts) - known)
    if unknown:
        accepted = ", ".join(sorted(known)) or "none"
        raise ProfileError(f"profile {profile!r} does not take option(s) {', '.join(unknown)}; it takes: {accepted}")
    missing = [key for key in spec.required if not opts.get(key)]
    if missing:
        raise ProfileError(
            f"profile {profile!r} needs {', '.join(missing)} "
            f"(e.g. --beam-option {missing[0]}=...)"
        )
    for key, default in spec.optional.items():
        if key not in opts and default is not None:
            opts[key] = default
    setup = f"--setup_file={Path(setup_file) if setup_file else DEFAULT_SETUP_FILE}"

    if profile == "direct-in-memory":
        # Exactly configs.DEFAULT_BEAM_ARGS when the setup file is the default one.
        args = ["--direct_running_mode=in_memory", "--direct_num_workers=1", setup]
    elif profile == "direct-multi-processing":
        workers = int(opts.get("workers") or os.cpu_count() or 1)
        if workers < 1:
            raise ProfileError(f"workers must be >= 1, got {workers}")
        args = ["--direct_running_mode=multi_processing", f"--direct_num_workers={workers}", setup]
    elif profile == "dataflow":
        args = [
            "--runner=DataflowRunner",
            f"--project={opts['project']}",
            f"--region={opts['region']}",
            f"--temp_location={opts['temp_location']}",
        ]
        args += [f"--{key}={opts[key]}" for key in spec.optional if key in opts]
        args.append(setup)
    else:  # flink, spark: a job server that is already up
        args = ["--runner=PortableRunner", f"--job_endpoint={opts['job_endpoint']}"]
        args += [f"--{key}={opts[key]}" for key in spec.optional if key in opts]
        args.append(setup)
    return tuple(args) + tuple(extra_args)


def parse_options(pairs: list[str] | None) -> dict[str, str]:
    """`["project=p", "region=r"]` -> `{"project": "p", "region": "r"}`."""
    options = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ProfileError(f"--beam-option expects KEY=VALUE, got {pair!r}")
        options[key.strip().replace("-", "_")] = value.strip()
    return options
