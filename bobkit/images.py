"""The pinned images, one per task family: what each is built from, how it is locked, how it is built.

Facts live in files next to the Dockerfile, so a reader can follow every value:
  docker/requirements/<family>.in   the family's own pins (torch, torchvision, ...)
  docker/locks/<family>.txt         every package `==` with its sha256, written by `bobkit images lock`
  docker/locks/base-images.json     each base image by tag and, once resolved, by digest

A build passes the lock's hash, bobkit's version and the base reference as labels, so an image (and
every run's provenance) says exactly what it holds. The docker SDK is imported inside functions only.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from bobkit.errors import BadInput, BobkitError, EnvironmentMissing

IMAGE_REPO = "bobkit"  # image name = bobkit/<family>, as RunSpec.image says
LABEL = "io.bobkit"
BASE_LOCK = "base-images.json"
CA_DIR = "docker/ca"  # PEM files here (or --ca-bundle) are trusted by pip during a build only
UNRESOLVED = "unresolved"
WHEELHOUSE_PORT = 47810


@dataclass(frozen=True)
class Family:
    """One image: its Dockerfile target, lock files, and the CUDA/torch build it carries."""

    name: str
    tasks: tuple[str, ...]
    locks: tuple[str, ...]  # lock files under docker/locks/, installed in this order
    torch: str
    cuda: str  # CUDA runtime of the torch wheels (the image needs no CUDA toolkit of its own)
    min_driver: str  # oldest NVIDIA driver that runs this CUDA major version
    archs: tuple[str, ...]  # GPU architectures the torch build has kernels for
    base_args: tuple[str, ...] = ("BASE_IMAGE",)  # build args pinned by base-images.json

    @property
    def target(self) -> str:
        return self.name

    @property
    def repository(self) -> str:
        return f"{IMAGE_REPO}/{self.name}"


# CUDA and arch lists of the torch wheels, as reported by torch.version.cuda and
# torch._C._cuda_getArchFlags() of the locked builds; driver minima are NVIDIA's per CUDA major.
FAMILIES: dict[str, Family] = {
    "classification": Family(
        name="classification", tasks=("classification", "ood_classification", "retrieval"),
        locks=("classification.txt",), torch="2.14.1", cuda="13.0", min_driver="580.65.06",
        archs=("sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"),
    ),
    "detection": Family(
        name="detection", tasks=("detection", "ood_detection"),
        locks=("detection.txt", "detection-build.txt", "mmcv.txt"), torch="2.1.2", cuda="12.1",
        min_driver="525.60.13", archs=("sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"),
        base_args=("BASE_IMAGE", "CUDA_DEVEL_IMAGE"),
    ),
}


def family(name: str) -> Family:
    if name not in FAMILIES:
        raise BadInput(f"unknown image family '{name}'; known: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def family_of_task(task: str) -> Family:
    for fam in FAMILIES.values():
        if task in fam.tasks:
            return fam
    raise BadInput(f"no image family runs task '{task}'")


# ---------------------------------------------------------------- where the sources are

def source_root() -> Path:
    """The checkout holding the Dockerfile (images are built from a source tree, not from a wheel)."""
    env = os.environ.get("BOBKIT_SOURCE")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[1])
    for c in candidates:
        if (c / "Dockerfile").is_file() and (c / "docker" / "locks").is_dir():
            return c
    raise EnvironmentMissing("no bobkit source tree with a Dockerfile found; run from a git checkout "
                             "of bobkit or set BOBKIT_SOURCE to one")


def locks_dir(root: Path | None = None) -> Path:
    return (root or source_root()) / "docker" / "locks"


def lock_sha256(fam: Family, root: Path | None = None) -> str:
    """One hash over the family's lock files: the image label and the cache key of a build."""
    h = hashlib.sha256()
    for name in fam.locks:
        path = locks_dir(root) / name
        if not path.is_file():
            raise BadInput(f"{path}: lock file missing; run `bobkit images lock --packages {fam.name}`")
        h.update(name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def bobkit_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bobkit")
    except PackageNotFoundError:
        return "0+unknown"


# ---------------------------------------------------------------- base images: tag + digest

def read_base_lock(root: Path | None = None) -> dict[str, Any]:
    path = locks_dir(root) / BASE_LOCK
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BadInput(f"{path}: missing; it lists each base image by tag and digest") from None
    except json.JSONDecodeError as exc:
        raise BadInput(f"{path}: not valid JSON (line {exc.lineno}): {exc.msg}") from None
    return data


def pinned_reference(entry: dict[str, Any]) -> str:
    """tag@digest when the digest is known; the bare tag (and the build says so) otherwise."""
    digest = entry.get("digest")
    if digest and digest != UNRESOLVED:
        return f"{entry['tag']}@{digest}"
    return entry["tag"]


def base_build_args(fam: Family, root: Path | None = None) -> dict[str, str]:
    lock = read_base_lock(root)["images"]
    out = {}
    for arg in fam.base_args:
        if arg not in lock:
            raise BadInput(f"{locks_dir(root) / BASE_LOCK}: no entry for build arg {arg}")
        out[arg] = pinned_reference(lock[arg])
    return out


def resolve_base_digests(root: Path | None = None, client=None) -> dict[str, str]:
    """Ask the registry for each base tag's manifest-list digest and record it (needs a registry)."""
    import docker

    client = client or docker_client()
    root = root or source_root()
    path = locks_dir(root) / BASE_LOCK
    data = read_base_lock(root)
    resolved = {}
    for arg, entry in data["images"].items():
        try:
            digest = client.images.get_registry_data(entry["tag"]).id
        except docker.errors.APIError as exc:
            raise EnvironmentMissing(f"cannot resolve {entry['tag']} ({arg}) at its registry: "
                                     f"{exc.explanation or exc}; run this on a machine that reaches it") from None
        entry["digest"] = digest
        entry["resolved"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        entry.pop("note", None)
        resolved[arg] = digest
    from bobkit.results import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    return resolved


# ---------------------------------------------------------------- package locks (pip's own resolver)

def requirements_for(fam_name: str, root: Path | None = None) -> list[str]:
    """What a lock resolves: bobkit's dependencies, the family's extra, and docker/requirements/<lock>.in."""
    import tomllib

    root = root or source_root()
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"]) + list(project["optional-dependencies"].get(fam_name, []))
    return reqs + read_in_file(root / "docker" / "requirements" / f"{fam_name}.in")


def read_in_file(path: Path) -> list[str]:
    if not path.is_file():
        raise BadInput(f"{path}: missing")
    out = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(line)
    return out


def _report_to_lock(report: dict[str, Any], header: str, only: set[str] | None = None) -> str:
    """`name==version --hash=sha256:...` lines from `pip install --dry-run --report`, sorted by name."""
    lines = []
    for item in report["install"]:
        meta = item["metadata"]
        name = meta["name"]
        if only is not None and _norm(name) not in only:
            continue
        info = item["download_info"]
        digest = (info.get("archive_info") or {}).get("hashes", {}).get("sha256")
        if not digest and info["url"].startswith("file://"):
            from bobkit.weights import sha256_file

            digest = sha256_file(Path(info["url"][len("file://"):]), use_cache=False)
        if not digest:
            raise EnvironmentMissing(f"the index gave no sha256 for {name} {meta['version']} ({info['url']}); "
                                     "use an index that publishes hashes (PyPI does)")
        lines.append((_norm(name), f"{_norm(name)}=={meta['version']} \\\n    --hash=sha256:{digest}"))
    body = "\n".join(line for _, line in sorted(lines))
    return f"{header}\n{body}\n"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pip_report(python: str, requirements: list[str], extra: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        req = Path(tmp) / "requirements.txt"
        req.write_text("\n".join(requirements) + "\n")
        cmd = [python, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--disable-pip-version-check", "--report", str(report), "-r", str(req), *extra]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.startswith("ERROR")][-3:]
            raise BadInput(f"pip could not resolve the lock ({python}): {' / '.join(tail) or proc.returncode}")
        return json.loads(report.read_text())


LOCK_HEADER = ("# Generated by `bobkit images lock --packages {family}` ({python}, {platform}).\n"
               "# Every package is pinned with its sha256; install with pip --require-hashes.\n"
               "# Platform: linux x86_64, CPython {pyver}. Do not edit by hand.")


def lock_packages(fam_name: str, python: str | None = None, root: Path | None = None) -> list[Path]:
    """Resolve the family's requirements with pip (the target's Python) and write its lock file(s).

    python must be CPython 3.11 on linux x86_64, like the images; the detection family needs a Python
    that has torch 2.1.2 installed, because mmcv's sdist imports torch to report its metadata.
    """
    fam = family(fam_name)
    root = root or source_root()
    python = python or sys.executable
    info = subprocess.run([python, "-c", "import platform,sys;print(platform.machine(), "
                           "'%d.%d' % sys.version_info[:2])"], capture_output=True, text=True)
    if info.returncode != 0:
        raise BadInput(f"--python {python}: cannot run it")
    machine, pyver = info.stdout.split()
    if (machine, pyver) != ("x86_64", "3.11"):
        raise BadInput(f"--python {python} is CPython {pyver} on {machine}; the images need 3.11 on x86_64")
    header = LOCK_HEADER.format(family=fam_name, python=f"CPython {pyver}", platform=machine, pyver=pyver)
    written = []
    main = _pip_report(python, requirements_for(fam_name, root), ["--only-binary=:all:"])
    out = locks_dir(root) / fam.locks[0]
    _write(out, _report_to_lock(main, header))
    written.append(out)
    if fam_name == "detection":
        pinned = [f"{i['metadata']['name']}=={i['metadata']['version']}" for i in main["install"]]
        build_in = read_in_file(root / "docker" / "requirements" / "detection-build.in")
        tools = [r for r in build_in if not r.startswith("mmcv")]
        report = _pip_report(python, pinned + tools, ["--only-binary=:all:"])
        _write(locks_dir(root) / "detection-build.txt",
               _report_to_lock(report, header, only={_norm(re.split(r"[<>=!~ ]", t)[0]) for t in tools}))
        mmcv = [r for r in build_in if r.startswith("mmcv")]
        report = _pip_report(python, mmcv, ["--no-deps", "--no-binary=mmcv", "--no-build-isolation"])
        _write(locks_dir(root) / "mmcv.txt", _report_to_lock(report, header))
        written += [locks_dir(root) / "detection-build.txt", locks_dir(root) / "mmcv.txt"]
    return written


def _write(path: Path, text: str) -> None:
    from bobkit.results import atomic_write_text

    atomic_write_text(path, text)


# ---------------------------------------------------------------- the engine

def docker_client(timeout: int = 600):
    """A docker SDK client, or EnvironmentMissing with the fix when no daemon answers."""
    try:
        import docker
    except ImportError:
        raise EnvironmentMissing("the docker SDK is not installed: pip install 'bobkit[docker]'") from None
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure here means the same thing to the user
        host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise EnvironmentMissing(f"no Docker daemon answers at {host} ({type(exc).__name__}); start it "
                                 "(`systemctl start docker`, or .ci/setup-docker.sh) or use --executor local") from None
    return client


def daemon_answers() -> bool:
    try:
        docker_client(timeout=5)
        return True
    except EnvironmentMissing:
        return False


@dataclass
class ImageInfo:
    reference: str
    id: str
    family: str
    version: str
    lock_sha256: str
    base: str
    created: str
    size_mb: float
    tags: list[str] = field(default_factory=list)
    current: bool = False  # built from the lock files in this checkout

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def image_info(image, root: Path | None = None) -> ImageInfo:
    labels = image.labels or {}
    fam = labels.get(f"{LABEL}.family", "?")
    current = False
    if fam in FAMILIES:
        with contextlib.suppress(BobkitError):
            current = labels.get(f"{LABEL}.lock-sha256") == lock_sha256(FAMILIES[fam], root)
    tags = list(image.tags)
    return ImageInfo(
        reference=tags[0] if tags else image.id, id=image.id, family=fam,
        version=labels.get(f"{LABEL}.version", "?"), lock_sha256=labels.get(f"{LABEL}.lock-sha256", "?"),
        base=labels.get(f"{LABEL}.base-image", "?"), created=image.attrs.get("Created", "")[:19],
        size_mb=round(image.attrs.get("Size", 0) / 2**20, 1), tags=tags, current=current,
    )


def list_images(client=None, root: Path | None = None) -> list[ImageInfo]:
    client = client or docker_client()
    images = client.images.list(filters={"label": f"{LABEL}.family"})
    return sorted((image_info(i, root) for i in images), key=lambda i: (i.family, i.created))


def resolve_image(reference: str, client=None):
    """The local image for a reference (never pulled: images are built here or loaded)."""
    import docker

    client = client or docker_client()
    try:
        return client.images.get(reference)
    except docker.errors.ImageNotFound:
        fam = reference.split("/")[-1].split(":")[0]
        hint = f"`bobkit images build {fam}`" if fam in FAMILIES else "build or load it"
        raise EnvironmentMissing(f"image {reference} not found on this Docker host; {hint}") from None


def image_digest(image) -> str:
    """The registry digest when the image was pushed or pulled, else its content-addressed id."""
    digests = image.attrs.get("RepoDigests") or []
    return digests[0].split("@", 1)[1] if digests else image.id


# ---------------------------------------------------------------- building

def dockerignore_patterns(root: Path) -> list[str]:
    path = root / ".dockerignore"
    if not path.is_file():
        return []
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


def build_context(root: Path, ca_bundle: Path | None = None) -> io.BufferedRandom:
    """The build context as a tar (honouring .dockerignore), with --ca-bundle added under docker/ca/."""
    from docker.utils.build import exclude_paths

    files = sorted(exclude_paths(str(root), dockerignore_patterns(root), dockerfile="Dockerfile"))
    buf = tempfile.TemporaryFile()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for rel in files:
            tar.add(root / rel, arcname=rel, recursive=False)
        if ca_bundle is not None:
            data = Path(ca_bundle).read_bytes()
            if b"BEGIN CERTIFICATE" not in data:
                raise BadInput(f"--ca-bundle {ca_bundle}: not a PEM certificate bundle")
            info = tarfile.TarInfo(f"{CA_DIR}/extra-ca-bundle.pem")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:  # noqa: D401 - keep the build output clean
        pass


@contextlib.contextmanager
def serve_wheelhouse(directory: Path) -> Iterator[str]:
    """Serve a wheelhouse on 127.0.0.1 for the build (host network): no GBs copied into the context."""
    directory = Path(directory)
    if not directory.is_dir():
        raise BadInput(f"--wheelhouse {directory}: not a directory")
    handler = functools.partial(_QuietHandler, directory=str(directory))
    try:  # the URL is a build arg, so a fixed port keeps the dependency layers cached between builds
        server = http.server.ThreadingHTTPServer(("127.0.0.1", WHEELHOUSE_PORT), handler)
    except OSError:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class BuildResult:
    image: Any
    reference: str
    tags: list[str]
    log_path: Path
    unpinned: list[str]  # base build args that had no digest yet


def build(fam_name: str, *, base: str | None = None, wheelhouse: Path | None = None,
          ca_bundle: Path | None = None, tag: str | None = None, client=None,
          on_line: Callable[[str], None] | None = None, log_dir: Path | None = None) -> BuildResult:
    """Build one family's image from this checkout's Dockerfile with the legacy builder (docker SDK)."""
    fam = family(fam_name)
    root = source_root()
    client = client or docker_client(timeout=3600)
    lock_hash = lock_sha256(fam, root)
    args = base_build_args(fam, root)
    unpinned = [k for k, v in args.items() if "@sha256:" not in v]
    if base:
        args["BASE_IMAGE"] = base
        unpinned = [k for k in unpinned if k != "BASE_IMAGE"]
    version = bobkit_version()
    args.update({"BOBKIT_VERSION": version, "LOCK_SHA256": lock_hash})
    reference = tag or f"{fam.repository}:latest"
    log_dir = Path(log_dir or Path.home() / ".cache" / "bobkit" / "logs")
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"build-{fam_name}.log"
    from filelock import FileLock

    with contextlib.ExitStack() as stack:
        # one build of a family at a time on this host: a second one then reuses every cached layer
        stack.enter_context(FileLock(str(log_dir / f"build-{fam_name}.lock")))
        if wheelhouse is not None:
            args["WHEELHOUSE_URL"] = stack.enter_context(serve_wheelhouse(Path(wheelhouse)))
        context = stack.enter_context(build_context(root, ca_bundle))
        log = stack.enter_context(open(log_path, "w", encoding="utf-8"))
        image_id = None
        stream = client.api.build(fileobj=context, custom_context=True, target=fam.target, tag=reference,
                                  buildargs=args, network_mode="host", rm=True, forcerm=True, decode=True)
        for chunk in stream:
            if "error" in chunk:
                log.write(chunk["error"] + "\n")
                raise EnvironmentMissing(f"building {reference} failed: {chunk['error'].strip().splitlines()[-1]} "
                                         f"(full log: {log_path})")
            text = chunk.get("stream", "")
            if text:
                log.write(text)
                if on_line:
                    for line in text.splitlines():
                        if line.strip():
                            on_line(line.rstrip())
            aux = chunk.get("aux") or {}
            image_id = aux.get("ID", image_id)
    image = client.images.get(image_id or reference)
    tags = [reference]
    versioned = f"{fam.repository}:{version}-{lock_hash[:12]}"
    if tag is None and image.tag(fam.repository, f"{version}-{lock_hash[:12]}"):
        tags.append(versioned)
    return BuildResult(image=client.images.get(image.id), reference=reference, tags=tags, log_path=log_path,
                       unpinned=unpinned)

