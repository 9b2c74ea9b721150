"""Start the bundled slsa_provenance with the dependencies built for this interpreter and platform.

    $ python3 -I launch.py task
    $ python3 -I launch.py --target     # what index.js asks each candidate: "linux-x86_64-cp312 3.12.1"

Run isolated (-I) by index.js, so only the task's own folders are on sys.path: the `lib/bin/...`
folders that `lib/index.json` lists for this platform and version (compiled packages), then
`lib/common` (pure Python, shared by every platform).
"""

import json
import os
import platform
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
MACHINES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}


def target():
    machine = platform.machine().lower()
    machine = MACHINES.get(machine, machine)
    if sys.platform == "darwin" and machine == "aarch64":
        machine = "arm64"
    return f"{sys.platform}-{machine}-cp{sys.version_info[0]}{sys.version_info[1]}"


def main():
    if sys.argv[1:] == ["--target"]:
        print(target(), platform.python_version())
        return 0
    lib = os.path.join(HERE, "lib")
    with open(os.path.join(lib, "index.json"), encoding="utf-8") as stream:
        index = json.load(stream)
    folders = index.get(target())
    if folders is None:
        message = (
            f"SlsaProvenance@1 ships no dependencies for {target()}; supported: {', '.join(sorted(index))}"
        )
        print(f"##vso[task.logissue type=error]{message}")
        print(f"##vso[task.complete result=Failed]{message}")
        return 0
    sys.path[:0] = [os.path.join(lib, "bin", f) for f in folders] + [os.path.join(lib, "common")]
    from slsa_provenance.cli import main as cli

    return cli(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
