"""Build the server image from inference_service/Dockerfile, unchanged, for one stack's models (`make image`).

``python -m fleet.build_image [--stack prod] [--tag REF] [--no-cache]``. The model files are the stack's
(`Pulumi.<stack>.yaml`, read by the same code as `fleet plan`), passed as the MODEL_FILES build argument the
Pulumi program passes (components/image.py).

Docker (buildx) when a Docker engine answers. Otherwise podman/buildah, with a store, runtime config and cache
of their own under /var/tmp/yolo-fleet-image (YOLO_FLEET_IMAGE_STATE), so nothing global changes: machines
without a Docker daemon (CI here) build and run the same image. The Dockerfile's bases are pulled first; only
when no registry answers are stand-ins made with mmdebstrap (Debian 12 with Debian's CPython 3.11, tagged
with the bases' names and labelled), cached per day, and every build on one says so. Here, not in the Makefile:
the test suite and the benchmark build with the same code.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import resource
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from components.errors import FleetError
from components.image import MODEL_FILES_ARG, RUNTIME_ARG, image_path, model_files_arg
from components.model_files import check_model_files
from components.stack_config import stack_config_from_values
from fleet.program import PROJECT_DIR, stack_config
from inference_service.settings import env_name

DOCKERFILE = Path("inference_service") / "Dockerfile"
IMAGE = "localhost/yolo-fleet/inference-server"
STATE = Path(os.environ.get("YOLO_FLEET_IMAGE_STATE", "/var/tmp/yolo-fleet-image"))
# On a stand-in base (inherited by images built on it): the day it was made.
STAND_IN_LABEL = "org.yolo-fleet.stand-in-base"
STAND_IN_NOTE = ("stand-in base (mmdebstrap: Debian 12 with Debian's CPython 3.11, larger than the real "
                 "python:3.11-slim-bookworm's ~125 MB; sizes and times that include the base are not like for like)")
PODMAN_TOOLS = ("podman", "buildah", "runc")
INSTALL_HINT = ("apt-get install -y podman buildah mmdebstrap skopeo runc (Debian/Ubuntu), or run a Docker "
                "engine with buildx")
DEBIAN_SOURCES = ("deb http://deb.debian.org/debian bookworm main",
                  "deb http://deb.debian.org/debian bookworm-updates main",
                  "deb http://deb.debian.org/debian-security bookworm-security main")
STAND_IN_PACKAGES = ("python3", "python3-venv", "ca-certificates", "netbase", "tzdata")
RUN_NAME = "yolo-fleet-server"  # the container the printed run command starts
SERVE_KEYS_DIR = ".serve/8080"  # where `make serve` on its default port keeps its key digests file (Makefile)
BUILD_STAGE_PACKAGES = ("gcc", "libc6-dev", "libjpeg62-turbo-dev")  # the full python image has these
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
PIP_CA_BUNDLE = "/usr/local/lib/python3.11/site-packages/pip/_vendor/certifi/cacert.pem"
PULL_TIMEOUT_S = 600


class ImageBuildError(FleetError):
    """The image could not be built: a missing tool, a failed step (its output's tail in the message)."""


@dataclass(frozen=True)
class Engine:
    """A container CLI: `docker`, or podman on the private store. run/exec/inspect/stop/rm read alike on both."""

    name: str
    cli: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)

    def __call__(self, *args: str, check: bool = True, timeout: float | None = 300) -> subprocess.CompletedProcess[str]:
        """Run `<cli> args`, output captured; ImageBuildError with its output when `check` and it fails."""
        result = subprocess.run([*self.cli, *args], capture_output=True, text=True, timeout=timeout,
                                env={**os.environ, **self.env})
        if check and result.returncode != 0:
            raise ImageBuildError(f"{' '.join([self.name, *args][:4])} ... failed ({result.returncode}):\n"
                                  f"{_tail(result.stdout + result.stderr)}")
        return result


@dataclass(frozen=True)
class BuildResult:
    engine: Engine
    tag: str
    model_files: list[str]
    stand_in_bases: list[str]  # the Dockerfile's bases that were mmdebstrap stand-ins ([] when pulled)
    seconds: float  # the build itself, bases ready


def stack_model_files(stack: str, project_dir: Path = PROJECT_DIR) -> list[str]:
    """The model files `Pulumi.<stack>.yaml` names, validated as `fleet plan` validates them (in the
    repository, ONNX, a task the server serves): a bad one stops `make image` with the plan's message."""
    config = stack_config_from_values(stack_config(stack, project_dir), stack)
    files = [m.file for m in check_model_files(config.models, project_dir, f"Pulumi.{stack}.yaml")]
    return list(dict.fromkeys(files))  # two models may share a file: the image holds it once


def dockerfile_bases(dockerfile: Path) -> list[str]:
    """The images the Dockerfile's FROM lines pull (not its own stages), fully qualified."""
    stages: set[str] = set()
    bases = []
    for line in dockerfile.read_text().splitlines():
        words = line.split()
        if len(words) >= 2 and words[0].upper() == "FROM":
            if words[1] not in stages:
                bases.append(qualified(words[1]))
            if len(words) >= 4 and words[2].upper() == "AS":
                stages.add(words[3])
    return bases


def qualified(image: str) -> str:
    """python:3.11-slim-bookworm -> docker.io/library/python:3.11-slim-bookworm (what podman stores)."""
    first = image.split("/", 1)[0]
    if "/" in image and ("." in first or ":" in first or first == "localhost"):
        return image
    return f"docker.io/{image}" if "/" in image else f"docker.io/library/{image}"


def docker_engine() -> Engine | None:
    """Docker, when an engine answers (`docker info`) and buildx is there."""
    if shutil.which("docker") is None:
        return None
    docker = Engine("docker", ("docker",))
    try:
        if docker("info", check=False, timeout=20).returncode != 0:
            return None
    except subprocess.TimeoutExpired:
        return None
    return docker if docker("buildx", "version", check=False).returncode == 0 else None


def podman_engine(state: Path = STATE) -> Engine:
    """podman on a store of its own, with a containers.conf for machines where root lacks CAP_SYS_RESOURCE
    (podman's default ulimits fail) and no systemd runs (cgroupfs, file events); runc, as crun 1.8 refuses
    hybrid cgroups."""
    missing = [tool for tool in PODMAN_TOOLS if shutil.which(tool) is None]
    if missing:
        raise ImageBuildError(f"no Docker engine answers and these are not installed: {', '.join(missing)}; "
                              f"{INSTALL_HINT}")
    state.mkdir(parents=True, exist_ok=True)
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    conf = state / "containers.conf"
    conf.write_text(f'[containers]\ndefault_ulimits = ["nofile={nofile}:{nofile}", "nproc=32768:32768"]\n'
                    '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\nruntime = "runc"\n')
    return Engine("podman", ("podman", *store_flags(state)), {"CONTAINERS_CONF": str(conf)})


def store_flags(state: Path) -> tuple[str, ...]:
    return ("--root", str(state / "storage"), "--runroot", str(state / "run"), "--storage-driver", "overlay")


def find_engine(state: Path = STATE) -> Engine:
    return docker_engine() or podman_engine(state)


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _label(engine: Engine, image: str) -> str | None:
    """The stand-in label of a stored image ('' when it has none), None when the image is not stored."""
    result = engine("image", "inspect", "--format", f'{{{{index .Labels "{STAND_IN_LABEL}"}}}}', image, check=False)
    if result.returncode != 0:
        return None
    return result.stdout.strip().replace("<no value>", "")


def ensure_bases(engine: Engine, bases: Sequence[str], state: Path, log: Callable[[str], None]) -> list[str]:
    """Make each base resolvable locally: pulled when a registry answers, else one pulled before, else a stand-in
    (today's, made once a day). Returns the bases that are stand-ins."""
    today = dt.datetime.now(dt.UTC).date().isoformat()
    stand_ins = []
    for base in bases:
        try:
            pulled = engine("pull", "--quiet", base, check=False, timeout=PULL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pulled = None
        if pulled is not None and pulled.returncode == 0:
            continue
        reason = _tail(pulled.stderr, 1) if pulled is not None else f"no answer in {PULL_TIMEOUT_S} s"
        label = _label(engine, base)
        if label == "":
            log(f"{base}: cannot pull ({reason}); using the one pulled before")
            continue
        stand_ins.append(base)
        if label == today:
            continue
        log(f"{base}: cannot pull ({reason}); making a stand-in")
        import_stand_in(engine, base, stand_in_tarball(base, state, today, log), today)
    return stand_ins


def stand_in_tarball(base: str, state: Path, day: str, log: Callable[[str], None]) -> Path:
    """A Debian 12 root filesystem shaped like `base` (python and pip on PATH from a venv at /usr/local, pip
    installing system-wide), made with mmdebstrap once per day; other days' tarballs are removed."""
    name = re.sub(r"[^\w.-]", "_", base.rsplit("/", 1)[-1])
    tarball = state / "bases" / day / f"{name}.tar"
    if tarball.is_file():
        return tarball
    if shutil.which("mmdebstrap") is None:
        raise ImageBuildError(f"{base} cannot be pulled and mmdebstrap, which makes a stand-in, is not installed: "
                              f"{INSTALL_HINT}")
    for old in (state / "bases").glob("*"):
        if old.name != day:
            shutil.rmtree(old)
    tarball.parent.mkdir(parents=True, exist_ok=True)
    packages = STAND_IN_PACKAGES + (() if "slim" in base else BUILD_STAGE_PACKAGES)
    partial = tarball.with_suffix(".partial.tar")
    log(f"mmdebstrap: {name} from Debian 12 ({', '.join(packages)}), about a minute")
    started = time.monotonic()
    result = subprocess.run(["mmdebstrap", "--variant=minbase", f"--include={','.join(packages)}",
                             '--customize-hook=chroot "$1" python3 -m venv /usr/local', "bookworm", str(partial),
                             *DEBIAN_SOURCES], capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise ImageBuildError(f"mmdebstrap for {base} failed:\n{_tail(result.stdout + result.stderr)}")
    partial.rename(tarball)
    log(f"mmdebstrap: {name} in {time.monotonic() - started:.0f} s")
    return tarball


def import_stand_in(engine: Engine, base: str, tarball: Path, day: str) -> None:
    engine("import", "--change", "ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
           "--change", "ENV LANG=C.UTF-8", "--change", f"LABEL {STAND_IN_LABEL}={day}", str(tarball), base,
           timeout=900)


def buildah_command(state: Path, dockerfile: Path, context: Path, build_args: dict[str, str], tag: str,
                    no_cache: bool) -> list[str]:
    """`buildah bud` as container-build.md checked it: docker format (keeps HEALTHCHECK), bases from the store
    only, runc, host network, no working container left by a failed step. Build machines may re-sign TLS with
    a CA only the host bundle holds: pip in the RUN steps gets that bundle by read-only mounts, never a layer."""
    cmd = ["buildah", *store_flags(state), "bud", "--format", "docker", "--layers", "--force-rm", "--pull=never",
           "--isolation", "oci", "--runtime", "runc", "--network", "host", "-f", str(dockerfile), "-t", tag]
    if no_cache:
        cmd.append("--no-cache")
    if HOST_CA_BUNDLE.is_file():
        cmd += ["-v", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro", "-v", f"{HOST_CA_BUNDLE}:{PIP_CA_BUNDLE}:ro"]
    for key, value in build_args.items():
        cmd += ["--build-arg", f"{key}={value}"]
    return [*cmd, str(context)]


def build(stack: str = "prod", tag: str | None = None, *, no_cache: bool = False, engine: Engine | None = None,
          state: Path = STATE, project_dir: Path = PROJECT_DIR, quiet: bool = False, runtime: str = "cpu",
          log: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> BuildResult:
    """Build the image with the stack's model files; with `quiet` the builder's output is kept for errors only.
    `runtime` gpu: the GPU variant GPU services run (onnxruntime-gpu, CUDA 12; tagged `<stack>-gpu`)."""
    files = stack_model_files(stack, project_dir)
    build_args = {MODEL_FILES_ARG: model_files_arg(project_dir, files), RUNTIME_ARG: runtime}
    tag = tag or f"{IMAGE}:{re.sub(r'[^A-Za-z0-9_.-]', '-', stack)}{'-gpu' if runtime == 'gpu' else ''}"
    engine = engine or find_engine(state)
    dockerfile = project_dir / DOCKERFILE
    stand_ins: list[str] = []
    if engine.name == "docker":
        cmd = ["docker", "buildx", "build", "--load", "-f", str(dockerfile), "-t", tag,
               *(["--no-cache"] if no_cache else []),
               *(arg for k, v in build_args.items() for arg in ("--build-arg", f"{k}={v}")), str(project_dir)]
    else:
        stand_ins = ensure_bases(engine, dockerfile_bases(dockerfile), state, log)
        cmd = buildah_command(state, dockerfile, project_dir, build_args, tag, no_cache)
    log(f"building {tag} with {engine.name} for stack {stack}: {', '.join(files) or 'no model files'}")
    started = time.monotonic()
    result = subprocess.run(cmd, env={**os.environ, **engine.env}, text=True,
                            capture_output=quiet, timeout=3600)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise ImageBuildError(f"the image build failed ({result.returncode})"
                              + (f":\n{_tail(result.stdout + result.stderr)}" if quiet else ""))
    if stand_ins:
        log(f"NOTE: built on a {STAND_IN_NOTE}: {', '.join(stand_ins)} could not be pulled")
    return BuildResult(engine, tag, files, stand_ins, seconds)


def serve_args(tag: str, port: int, secrets_dir: Path, model_path: str | None = None) -> list[str]:
    """`run` arguments that start the image as Cloud Run does, and stricter: detached, on the host's `port`,
    read-only root with a tmpfs /tmp, the key digests file (`sha256.txt`, readable by uid 10001) mounted."""
    model = ["-e", f"{env_name('model_path')}={model_path}"] if model_path else []
    return ["run", "-d", "--network", "host", "--read-only", "--tmpfs", "/tmp", "-e", f"{env_name('port')}={port}",
            *model, "-e", f"{env_name('api_key_file')}=/secrets/sha256.txt", "-v", f"{secrets_dir}:/secrets:ro", tag]


def run_command(result: BuildResult) -> str:
    """How to start the image just built on the stack's first model (the Dockerfile's default is the demo's, which
    another stack's image may not hold), with the key digests file `make serve` writes for its default port, as
    a container named RUN_NAME. podman's HEALTHCHECK timers need systemd, which a build machine may not run: each
    start and removal would print errors for nothing, so podman runs it without."""
    model = str(image_path(result.model_files[0])) if result.model_files else None
    run, *rest = serve_args(result.tag, 8080, Path.cwd() / SERVE_KEYS_DIR, model)
    quiet = ["--no-healthcheck"] if result.engine.name == "podman" else []
    return f"{engine_prefix(result.engine)} {shlex.join([run, '--name', RUN_NAME, *quiet, *rest])}"


def engine_prefix(engine: Engine) -> str:
    """The engine's command line as a shell runs it: podman with this tool's own store and config (each value
    quoted on its own: a quoted `NAME=value` word is a command, not an assignment)."""
    return " ".join([*(f"{k}={shlex.quote(v)}" for k, v in engine.env.items()), shlex.join(engine.cli)])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fleet.build_image", description=__doc__.splitlines()[0])
    p.add_argument("--stack", default="prod", help="whose model files go into the image (default prod)")
    p.add_argument("--tag", help=f"image reference (default {IMAGE}:<stack>)")
    p.add_argument("--no-cache", action="store_true", help="rebuild every layer")
    p.add_argument("--runtime", choices=("cpu", "gpu"), default="cpu",
                   help="cpu (default), or gpu: the variant GPU services run (onnxruntime-gpu, CUDA 12; ~2 GB more)")
    args = p.parse_args(argv)
    try:
        result = build(args.stack, args.tag, no_cache=args.no_cache, runtime=args.runtime)
    except ImageBuildError as error:
        print(f"make image: {error}", file=sys.stderr)
        return 1
    except FleetError as error:  # the stack's config or a model file: the user's input
        print(f"make image: {error}", file=sys.stderr)
        return 2
    others = result.model_files[1:]
    held = f" (it holds {', '.join(others)} too: MODEL_PATH=/app/<file> serves another)" if others else ""
    print(f"built {result.tag} in {result.seconds:.0f} s ({result.engine.name}); run it on "
          f"{result.model_files[0] if result.model_files else 'its default model'}{held}, with the key digests in "
          f"{SERVE_KEYS_DIR}/sha256.txt (`make serve` writes one), on port 8080 with:\n  {run_command(result)}\n"
          f"and stop it with:\n  {engine_prefix(result.engine)} rm -f {RUN_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
