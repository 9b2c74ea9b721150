"""Build the Marketplace extension: dependencies for every agent platform, the task folder, its own
SBOM and provenance, then the .vsix with the pinned tfx-cli; prints its size against the budget.

    $ python packaging/build.py              # dist/<publisher>.<id>-<version>.vsix, development build
    $ SLSA_SIGNER=https://VAULT.vault.azure.net/keys/KEY python packaging/build.py --release
    $ python packaging/build.py --stage      # build/extension only; attest it, then:
    $ python packaging/build.py --pack --release
    $ python packaging/build.py --lock       # refresh packaging/runtime.lock after changing a pin

Wheels come from PyPI at build time only, each checked against the hashes in runtime.lock; the agent
never installs anything. Pure-Python packages are unpacked into one payload, compiled ones into one
per platform (payload.py), and `lib/index.json` maps each `platform-machine-cpXY` to its folders.
No bytecode is shipped: the first run writes it. A development build's provenance is unsigned and
marked as such; a release is signed with the Key Vault key $SLSA_SIGNER names (here, or, inside a
pipeline, by SlsaProvenance@1 between --stage and --pack, through its service connection).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from payload import write_payload
from spdx import Package, write_sbom

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build"
STAGE = BUILD / "extension"
TASK_FOLDER = "SlsaProvenanceV1"
LOCK = ROOT / "packaging" / "runtime.lock"
TARGETS = json.loads((ROOT / "packaging" / "targets.json").read_text())
# Azure DevOps Server's and the Marketplace's default package limit (docs/package.md, "Package size").
BUDGET = 26_214_400
CONTRIBUTORS = 8
_WHEEL = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)-.*\.whl$")


def runtime_requirements(platform: str) -> list[str]:
    """requirements.lock's runtime pins a platform of targets.json takes as wheels built for it, or, for
    the platform "any", those every platform takes as pure Python (targets.json's "pure")."""
    lines = (ROOT / "requirements.lock").read_text().splitlines()
    runtime = lines[: next(i for i, line in enumerate(lines) if line.startswith("# build and development"))]
    pins = {_canonical(line.split("==")[0]): line for line in runtime if line and not line.startswith("#")}
    pure = {_canonical(name) for name in TARGETS["pure"]}
    return sorted(line for name, line in pins.items() if (name in pure) == (platform == ANY[0]))


def target_requirements(platform: str, folder: Path) -> Path:
    """A hashed requirements file for one platform, from the pins and hashes of runtime.lock."""
    locked = dict(
        re.findall(r"^(\S+==\S+) \\\n((?:    --hash=sha256:[0-9a-f]{64}(?: \\\n)?)+)", LOCK.read_text(), re.M)
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{platform}.txt"
    path.write_text("".join(f"{pin} \\\n{locked[pin].rstrip()}\n" for pin in runtime_requirements(platform)))
    return path


def targets() -> list[tuple[str, list[str], str]]:
    return [
        (name, tags, python) for name, tags in TARGETS["platforms"].items() for python in TARGETS["pythons"]
    ]


# The pure-Python wheels of targets.json's "pure" packages, for every platform.
ANY = ("any", ["any"], TARGETS["pythons"][0])


def download(tags: list[str], python: str, folder: Path, requirements: Path, hashed: bool) -> list[Path]:
    shutil.rmtree(folder, ignore_errors=True)  # a wheel left by an earlier build must not ship
    folder.mkdir(parents=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--disable-pip-version-check",
        "--no-deps",
        "--only-binary=:all:",
        "--implementation",
        "cp",
        "--python-version",
        python,
        "-d",
        str(folder),
        "-r",
        str(requirements),
    ]
    command += [arg for tag in tags for arg in ("--platform", tag)]
    if hashed:
        command.append("--require-hashes")
    subprocess.run(command, check=True)
    return sorted(folder.glob("*.whl"))


def lock() -> None:
    """Write every target's wheel hashes into runtime.lock."""
    BUILD.mkdir(exist_ok=True)
    hashes: dict[str, set[str]] = {}
    for name, tags, python in [*targets(), ANY]:
        print(f"resolving {name} cp{python}", file=sys.stderr)
        plain = BUILD / f"runtime-{name}.txt"
        plain.write_text("\n".join(runtime_requirements(name)) + "\n")
        for wheel in download(tags, python, BUILD / "lock" / f"{name}-{python}", plain, hashed=False):
            pin = next(
                r
                for r in runtime_requirements(name)
                if _canonical(r.split("==")[0]) == _canonical(wheel.name.split("-")[0])
            )
            hashes.setdefault(pin, set()).add(hashlib.sha256(wheel.read_bytes()).hexdigest())
    body = "".join(
        f"{pin} \\\n" + " \\\n".join(f"    --hash=sha256:{h}" for h in sorted(found)) + "\n"
        for pin, found in sorted(hashes.items())
    )
    LOCK.write_text(
        "# Generated by `python packaging/build.py --lock`: what the extension ships, hash-locked.\n" + body
    )


def _compiled(member: str) -> bool:
    return member.endswith((".so", ".pyd")) or ".so." in member


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def stage_dependencies(task: Path) -> list[Package]:
    """Unpack every target's wheels into build/payload/common (pure Python, shared) and
    build/payload/<platform>/<wheel> (compiled), then pack each into one payload in the task's lib/."""
    staged = BUILD / "payload"
    shutil.rmtree(staged, ignore_errors=True)
    index: dict[str, list[str]] = {}
    packages: dict[str, Package] = {}
    optional = {_canonical(name) for name in TARGETS["optional_extensions"]}
    taken: set[str] = set()
    for name, tags, python in [*targets(), ANY]:
        requirements = target_requirements(name, BUILD / "requirements")
        wheels = download(tags, python, BUILD / "wheels" / f"{name}-{python}", requirements, hashed=True)
        folders = []
        for wheel in wheels:
            match = _WHEEL.match(wheel.name)
            assert match, wheel.name
            package = _canonical(match["name"])
            if package in optional:  # the Python files of its first wheel, once, without the extension
                if package not in taken:
                    taken.add(package)
                    with zipfile.ZipFile(wheel) as archive:
                        python_files = [n for n in archive.namelist() if not _compiled(n)]
                        archive.extractall(staged / "common", python_files)
                    packages[wheel.name] = Package(package, match["version"], _sha256(wheel))
                continue
            pure = wheel.name.endswith("-none-any.whl")
            destination = staged / "common" if pure else staged / name / wheel.name.removesuffix(".whl")
            if not pure:
                folders.append(destination.name)
            if wheel.name in packages and (pure or destination.is_dir()):  # each wheel is unpacked once
                continue
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(destination)
            packages[wheel.name] = Package(_canonical(match["name"]), match["version"], _sha256(wheel))
        if name != ANY[0]:
            index[f"{name}-cp{python.replace('.', '')}"] = sorted(folders)
    shutil.copytree(
        ROOT / "src" / "slsa_provenance",
        staged / "common" / "slsa_provenance",
        ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.c"),
    )
    compile_lanes(staged / "common" / "slsa_provenance" / "provenance")
    lib = task / "lib"
    lib.mkdir()
    for payload in ["common", *TARGETS["platforms"]]:
        write_payload(staged / payload, lib, payload)
    (lib / "index.json").write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")
    return sorted(packages.values(), key=lambda p: (p.name.lower(), p.sha256))


def compile_lanes(package: Path) -> None:
    """The AVX-512 hashing module for Linux x86-64, built here against the stable ABI and saved
    under each shipped version's own file name, so no other platform tries to load it (they and
    CPUs without AVX-512 use hashlib)."""
    if sysconfig.get_platform() != "linux-x86_64":
        print(
            "warning: not building on Linux x86-64, so the package hashes with hashlib only", file=sys.stderr
        )
        return
    built = BUILD / "native" / "_sha256x16.abi3.so"
    built.parent.mkdir(parents=True, exist_ok=True)
    compiler = (sysconfig.get_config_var("CC") or "cc").split()
    include = sysconfig.get_paths()["include"]
    source = ROOT / "src" / "slsa_provenance" / "provenance" / "_sha256x16.c"
    subprocess.run(
        [*compiler, "-O3", "-fPIC", "-shared", f"-I{include}", str(source), "-o", str(built)], check=True
    )
    for python in TARGETS["pythons"]:
        version = python.replace(".", "")
        shutil.copy(built, package / f"_sha256x16.cpython-{version}-x86_64-linux-gnu.so")


def local_build_variables() -> dict[str, str]:
    """Inside a pipeline the agent's variables describe the build; outside, git does, unconfirmed."""
    if os.environ.get("TF_BUILD", "").lower() == "true":
        return dict(os.environ)

    def git(*args: str) -> str:
        run = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return run.stdout.strip()

    commit = git("rev-parse", "HEAD") or "0" * 40
    return {
        **os.environ,
        "SYSTEM_COLLECTIONURI": "https://localhost/",
        "SYSTEM_TEAMPROJECT": "local",
        "BUILD_BUILDID": "0",
        "SYSTEM_DEFINITIONID": "0",
        "BUILD_DEFINITIONNAME": "make vsix",
        "BUILD_REPOSITORY_URI": git("remote", "get-url", "origin") or ROOT.as_uri(),
        "BUILD_REPOSITORY_NAME": ROOT.name,
        "BUILD_SOURCEBRANCH": "refs/heads/" + (git("rev-parse", "--abbrev-ref", "HEAD") or "main"),
        "BUILD_SOURCEVERSION": commit,
        "SYSTEM_JOBID": "local",
        "SYSTEM_JOBDISPLAYNAME": "make vsix",
        "SYSTEM_JOBATTEMPT": "1",
    }


KEY_VAULT_SIGNER = re.compile(
    r"^(azurekms://|https://[^/]+\.(vault\.azure\.net|managedhsm\.azure\.net)/keys/)"
)
DEVELOPMENT_BUILDER = "https://localhost/slsa-provenance/development-build"


def release_signer(release: bool) -> str:
    """$SLSA_SIGNER for a release (a Key Vault key, required); "" for a development build."""
    signer = os.environ.get("SLSA_SIGNER", "").strip()
    if release and not KEY_VAULT_SIGNER.match(signer):
        got = f"SLSA_SIGNER is {signer!r}" if signer else "SLSA_SIGNER is not set"
        print(
            f"error: a release build signs its provenance with a Key Vault key, but {got}; "
            "set SLSA_SIGNER=https://VAULT.vault.azure.net/keys/KEY (or azurekms://VAULT/KEY) "
            "or build without RELEASE=1 for an unsigned development build",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return signer


def attest(task: Path, signer: str) -> None:
    """The package's SBOM and its provenance: signed by signer, or, without one, unsigned and marked
    as a development build (never signed by a key made for the occasion: that would look like a
    signature while proving nothing)."""
    marking = [] if signer else ["--builder-id", DEVELOPMENT_BUILDER]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "slsa_provenance",
            "generate",
            "--drop",
            str(task),
            "--signer",
            signer or "none",
            "--pipeline-file",
            "Makefile",
            "--no-server-confirmation",
            *marking,
        ],
        env=local_build_variables(),
        check=True,
        stderr=None if signer else subprocess.DEVNULL,  # the unsigned warning, said once below instead
    )
    if not signer:
        print("development build: provenance unsigned, builder " + DEVELOPMENT_BUILDER, file=sys.stderr)


def stage() -> Path:
    """Assemble the task folder (the payloads and the SBOM of what they hold) under build/extension."""
    shutil.rmtree(STAGE, ignore_errors=True)
    task = assemble(STAGE)
    write_sbom(task, f"{TASK_FOLDER} dependencies", stage_dependencies(task))
    return task


def assemble(stage: Path) -> Path:
    """The manifests, the task's entry and the icons in `stage` (everything tfx checks, no payload);
    returns the task folder."""
    task = stage / TASK_FOLDER
    task.mkdir(parents=True)
    shutil.copy(ROOT / "task.json", task / "task.json")
    for name in ("index.js", "launch.py"):
        shutil.copy(ROOT / "task" / name, task / name)
    shutil.copy(ROOT / "icons" / "task-icon.png", task / "icon.png")  # the name the agent's UI looks for
    (stage / "icons").mkdir()
    shutil.copy(ROOT / "icons" / "extension-icon.png", stage / "icons")
    for name in ("vss-extension.json", "overview.md"):
        shutil.copy(ROOT / name, stage / name)
    stage_tab(stage / "tab")
    return task


def stage_tab(folder: Path) -> None:
    """The Provenance tab (src/tab/): its page and stylesheet, and one script bundled and minified by
    the pinned esbuild (the SDK and the Build REST client included, nothing fetched at run time)."""
    folder.mkdir()
    for name in ("tab.html", "tab.css"):
        shutil.copy(ROOT / "src" / "tab" / name, folder / name)
    subprocess.run(
        [
            str(ROOT / "node_modules" / ".bin" / "esbuild"),
            str(ROOT / "src" / "tab" / "main.js"),
            "--bundle",
            "--minify",
            "--format=iife",
            "--target=chrome100,firefox100,safari15",
            "--log-level=warning",
            f"--outfile={folder / 'tab.js'}",
        ],
        check=True,
    )


def staged_provenance(release: bool) -> None:
    """Refuse to pack a staged folder without provenance, or, for a release, with unsigned provenance."""
    path = STAGE / TASK_FOLDER / "_manifest" / "slsa_1.0" / "provenance.intoto.jsonl"
    problem = "" if path.is_file() else f"{path} does not exist"
    if not problem and release and not json.loads(path.read_text())["signatures"]:
        problem = f"{path} is unsigned"
    if problem:
        print(
            f"error: {problem}; run `build.py --stage`, then SlsaProvenance@1 (or `slsa-provenance "
            "generate`) with a Key Vault key on the staged folder, then `build.py --pack`",
            file=sys.stderr,
        )
        raise SystemExit(2)


def pack(stage: Path = STAGE, dist: Path = ROOT / "dist") -> Path:
    """The staged folder as dist/<publisher>.<id>-<version>.vsix, with the pinned tfx-cli. tfx's output
    is shown; a warning (tfx 0.23 only warns about a wrong task.json, and still packs) fails the build."""
    dist.mkdir(exist_ok=True)
    manifest = json.loads((stage / "vss-extension.json").read_text())
    vsix = dist / f"{manifest['publisher']}.{manifest['id']}-{manifest['version']}.vsix"
    vsix.unlink(missing_ok=True)
    tfx = subprocess.run(
        [
            str(ROOT / "node_modules" / ".bin" / "tfx"),
            "extension",
            "create",
            "--root",
            str(stage),
            "--manifest-globs",
            "vss-extension.json",
            "--output-path",
            str(vsix),
            "--no-prompt",
            "--no-color",
        ],
        check=False,
        stdout=subprocess.PIPE,
        text=True,
    )
    print(tfx.stdout, end="", file=sys.stderr)
    warnings = [
        line.removeprefix("warning:").strip()
        for line in tfx.stdout.splitlines()
        if line.startswith("warning:")
    ]
    if tfx.returncode or warnings:
        vsix.unlink(missing_ok=True)
        raise SystemExit(
            f"error: tfx extension create {'warned' if warnings else f'exited with {tfx.returncode}'}, "
            "so no .vsix is kept"
            + (f": {' '.join(w for w in warnings if w)}" if warnings else "")
            + "; fix what it names in task.json or vss-extension.json"
        )
    return vsix


def size_report(vsix: Path) -> list[str]:
    """The package's size against the budget, and the entries that weigh most, largest first."""
    with zipfile.ZipFile(vsix) as archive:
        entries = sorted(archive.infolist(), key=lambda e: (-e.compress_size, e.filename))
    size = vsix.stat().st_size
    lines = [f"{vsix.name}: {size:,} bytes ({size / 2**20:.2f} MiB) of the {BUDGET:,}-byte budget"]
    lines += [f"  {e.compress_size:>12,}  {e.filename}" for e in entries[:CONTRIBUTORS]]
    rest = sum(e.compress_size for e in entries[CONTRIBUTORS:])
    lines.append(f"  {rest:>12,}  the other {max(len(entries) - CONTRIBUTORS, 0)} entries")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lock", action="store_true", help="refresh packaging/runtime.lock")
    parser.add_argument("--release", action="store_true", help="sign with $SLSA_SIGNER (a Key Vault key)")
    parser.add_argument("--stage", action="store_true", help="only assemble the task folder and its SBOM")
    parser.add_argument("--pack", action="store_true", help="only pack the staged folder, once attested")
    args = parser.parse_args()
    if args.lock:
        lock()
        return
    if args.stage:
        print(stage())
        return
    if args.pack:
        staged_provenance(args.release)
    else:
        signer = release_signer(args.release)
        attest(stage(), signer)
    vsix = pack()
    print("\n".join(size_report(vsix)), file=sys.stderr)
    if vsix.stat().st_size > BUDGET:
        raise SystemExit(
            f"error: {vsix.name} is {vsix.stat().st_size:,} bytes, over the {BUDGET:,}-byte budget "
            "(Azure DevOps Server and the Marketplace refuse it); shrink what the list above shows"
        )
    print(vsix)


if __name__ == "__main__":
    main()
