"""The images docker-compose.yml names, built here: a Debian base image with Python made by
debootstrap from the Debian mirror apt is configured with (no container registry is needed), then
Redis and kubectl images on it (deploy/compose/*.Containerfile) and surgescale's own image from
the repository's Dockerfile. pip inside the builds trusts the CA bundle pip trusts on this machine.

The debootstrap root filesystem is kept as a tarball in the cache directory, and podman keeps the
images and their layers, so a second run rebuilds only what changed."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tools.compose_check.engine import Engine, apt_install
from tools.compose_check.steps import CheckError, run, say

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "compose"
"""The Containerfiles of the Redis and kubectl images."""
RELEASE = "bookworm"
BASE_IMAGE = f"localhost/surgescale-debian-python:{RELEASE}"
REDIS_IMAGE = f"localhost/surgescale-redis:{RELEASE}"
KUBECTL_IMAGE = "localhost/surgescale-kubectl:dev"
SURGESCALE_IMAGE = "localhost/surgescale:dev"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")


@dataclass(frozen=True, kw_only=True)
class Built:
    """What this run did for each image: "built" (a build ran, layers may come from the cache),
    "imported" (the base from a root filesystem), or "present" (already there, left alone)."""

    images: dict[str, str]
    seconds: dict[str, float]

    @property
    def count(self) -> int:
        return sum(1 for how in self.images.values() if how != "present")


def debian_mirror(texts: Iterable[tuple[str, str]], release: str = RELEASE) -> str:
    """The first mirror apt is configured with for `release` main, from (file name, text) pairs
    of sources.list files (one-line format) and .sources files (deb822)."""
    for name, text in texts:
        if name.endswith(".sources"):
            for stanza in re.split(r"\n\s*\n", text):
                fields: dict[str, str] = {}
                for line in stanza.splitlines():
                    if line.startswith("#") or ":" not in line:
                        continue
                    key, value = line.split(":", 1)
                    fields[key.strip().lower()] = value.strip()
                if fields.get("enabled", "yes").lower() == "no":
                    continue
                if (
                    "deb" in fields.get("types", "").split()
                    and release in fields.get("suites", "").split()
                    and "main" in fields.get("components", "").split()
                ):
                    return fields.get("uris", "").split()[0]
        else:
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
                if (
                    len(words) >= 4
                    and words[0] == "deb"
                    and words[2] == release
                    and "main" in words[3:]
                ):
                    return words[1]
    raise CheckError("base image", f"apt has no Debian mirror configured for {release} main")


def apt_sources(root: Path = Path("/etc/apt")) -> list[tuple[str, str]]:
    files = [root / "sources.list"]
    parts = root / "sources.list.d"
    if parts.is_dir():
        files += sorted(p for p in parts.iterdir() if p.suffix in {".list", ".sources"})
    return [(p.name, p.read_text()) for p in files if p.is_file()]


def ca_bundle() -> Path:
    """The CA bundle pip uses on this machine (`pip config list`, then PIP_CERT), else Debian's."""
    out = subprocess.run(
        ["python3", "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
    ).stdout
    found = re.findall(r"^[\w:.-]*\.?cert='([^']+)'", out, flags=re.M)
    for candidate in [*found, "/etc/ssl/certs/ca-certificates.crt"]:
        if Path(candidate).is_file():
            return Path(candidate)
    raise CheckError("images", "no CA bundle found for pip inside the builds")


def _exists(engine: Engine, image: str) -> bool:
    return (
        run(
            [engine.podman, "image", "exists", image], step="images", timeout=60, check=False
        ).returncode
        == 0
    )


def base_image(engine: Engine, *, cache: Path) -> str:
    """Import the Debian + Python base from a cached root filesystem, made with debootstrap."""
    step = "base image"
    if _exists(engine, BASE_IMAGE):
        return "present"
    tarball = cache / f"debian-python-{RELEASE}.tar"
    if not tarball.is_file():
        if shutil.which("debootstrap") is None:
            apt_install("debootstrap", step=step)
        mirror = debian_mirror(apt_sources())
        with tempfile.TemporaryDirectory(prefix="rootfs-", dir=cache) as tmp:
            rootfs = Path(tmp) / "rootfs"
            say(f"debootstrap {RELEASE} ({', '.join(BASE_PACKAGES)}) from apt's mirror")
            run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(BASE_PACKAGES)}",
                    RELEASE,
                    str(rootfs),
                    mirror,
                ],
                step=step,
                timeout=900,
            )
            (rootfs / "usr/bin/python").symlink_to("python3")
            for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for path in (rootfs / junk).glob("*"):
                    if path.is_file():
                        path.unlink()
            partial = tarball.with_suffix(".partial")
            run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], step=step, timeout=300)
            partial.rename(tarball)
    run(
        [engine.podman, "import", "--change", 'CMD ["/bin/bash"]', str(tarball), BASE_IMAGE],
        step=step,
        timeout=300,
    )
    return "imported"


def build(
    engine: Engine,
    *,
    step: str,
    tag: str,
    containerfile: Path,
    context: Path,
    build_args: dict[str, str],
    build_contexts: dict[str, Path] | None = None,
    no_cache: bool = False,
) -> str:
    """`podman build` on the host network, with this machine's CA bundle mounted read-only and
    handed to pip as PIP_CERT."""
    bundle = ca_bundle()
    argv = [
        engine.podman,
        "build",
        "--network",
        "host",
        "--volume",
        f"{bundle.parent}:{bundle.parent}:ro",
        "--build-arg",
        f"PIP_CERT={bundle}",
        "-f",
        str(containerfile),
        "-t",
        tag,
        *(["--no-cache"] if no_cache else []),
    ]
    for key, value in build_args.items():
        argv += ["--build-arg", f"{key}={value}"]
    for name, path in (build_contexts or {}).items():
        if not path.is_dir():
            raise CheckError(step, f"build context {name}: {path} does not exist")
        argv += ["--build-context", f"{name}={path}"]
    run([*argv, str(context)], step=step, timeout=900)
    return "built"


def _timed(job: Callable[[], str]) -> tuple[str, float]:
    start = time.monotonic()
    return job(), round(time.monotonic() - start, 1)


def build_all(
    engine: Engine, *, repo: Path, cache: Path, data: Path, no_cache: bool = False
) -> Built:
    """The base image, then the three images on it, built side by side (mostly downloads and
    unpacking); a failing build raises its CheckError once all have ended."""
    how, took = _timed(lambda: base_image(engine, cache=cache))
    images, seconds = {BASE_IMAGE: how}, {BASE_IMAGE: took}
    base = {"BASE_IMAGE": BASE_IMAGE}
    jobs = {
        REDIS_IMAGE: functools.partial(
            build,
            engine,
            step="build redis image",
            tag=REDIS_IMAGE,
            containerfile=DEPLOY / "redis.Containerfile",
            context=DEPLOY,
            build_args=base,
            no_cache=no_cache,
        ),
        KUBECTL_IMAGE: functools.partial(
            build,
            engine,
            step="build kubectl image",
            tag=KUBECTL_IMAGE,
            containerfile=DEPLOY / "kubectl.Containerfile",
            context=DEPLOY,
            build_args=base,
            no_cache=no_cache,
        ),
        SURGESCALE_IMAGE: functools.partial(
            build,
            engine,
            step="build surgescale image",
            tag=SURGESCALE_IMAGE,
            containerfile=repo / "Dockerfile",
            context=repo,
            # as docker-compose.yml builds it: with the simulated cluster's libraries
            build_args={"PYTHON_IMAGE": BASE_IMAGE, "EXTRAS": "sim"},
            build_contexts={
                "calibration": data / "calibration",
                "karpenter-crds": data / "karpenter-crds",
            },
            no_cache=no_cache,
        ),
    }
    say(f"building {', '.join(jobs)} side by side")
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = {tag: pool.submit(_timed, job) for tag, job in jobs.items()}
    for tag, future in futures.items():
        images[tag], seconds[tag] = future.result()
        say(f"{tag}: {seconds[tag]} s")
    return Built(images=images, seconds=seconds)


def image_size(engine: Engine, image: str) -> int:
    out = run(
        [engine.podman, "image", "inspect", "--format", "{{.Size}}", image],
        step="images",
        timeout=60,
    ).stdout
    return int(out.strip() or 0)
