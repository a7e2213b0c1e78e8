"""`mount.eotdlfs`: the helper mount(8) runs for an /etc/fstab line of type `eotdlfs`.

    eotdl  /mnt/eotdl  eotdlfs  api_url=http://host:8000/,cache_dir=/var/cache/eotdlfs,allow_other,_netdev,nofail  0 0

mount(8) calls `mount.eotdlfs SPEC DIR [-sfnv] [-o OPTIONS]` (SPEC, the first fstab field, is
only a label). The options become `eotdlfs mount DIR` flags, and that command returns once the
kernel shows the mount, which is what mount(8) waits for.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

VALUE_OPTIONS = {"api_url": "--api-url", "cache_dir": "--cache-dir", "cache_size": "--cache-size",
                 "ttl": "--ttl", "autoflush": "--autoflush"}
FLAG_OPTIONS = {"allow_other": "--allow-other"}
# What fstab lines and mount(8) add that an eotdlfs mount has nothing to do with: the boot
# ordering and user-mount options are read by mount(8) and systemd themselves, and a FUSE
# mount is already nosuid,nodev.
IGNORED = {"rw", "defaults", "auto", "noauto", "user", "nouser", "users", "owner", "group", "_netdev",
           "nofail", "exec", "noexec", "suid", "nosuid", "dev", "nodev", "async", "sync", "atime",
           "noatime", "relatime", "norelatime", "strictatime", "lazytime", "diratime", "nodiratime"}
IGNORED_PREFIXES = ("x-", "comment=", "user=")
USAGE = "usage: mount.eotdlfs SPEC DIR [-sfnv] [-o OPTIONS]"
EXIT_USAGE, EXIT_MOUNT_FAILED = 1, 32  # mount(8)'s exit codes


@dataclass(frozen=True)
class HelperCall:
    mountpoint: str
    flags: list[str]
    fake: bool = False  # -f: say what would run, mount nothing
    verbose: bool = False


def mount_flags(options: str, sloppy: bool = False) -> list[str]:
    """fstab options ('api_url=URL,allow_other,_netdev') -> `eotdlfs mount` flags.
    An unknown option is an error (a typo must not mount with defaults), unless SLOPPY (-s)."""
    flags: list[str] = []
    for option in filter(None, options.split(",")):
        key, has_value, value = option.partition("=")
        if option in IGNORED or option.startswith(IGNORED_PREFIXES):
            continue
        if key in VALUE_OPTIONS and has_value and value:
            flags += [VALUE_OPTIONS[key], value]
        elif key in FLAG_OPTIONS and not has_value:
            flags.append(FLAG_OPTIONS[key])
        elif key in VALUE_OPTIONS or key in FLAG_OPTIONS:
            raise ValueError(f"{key} {'needs a value' if key in VALUE_OPTIONS else 'takes no value'}")
        elif option == "ro":
            raise ValueError("ro is not supported: versions are always read-only, and staging is writable")
        elif not sloppy:
            raise ValueError(f"unknown option {option!r} (known: {', '.join([*VALUE_OPTIONS, *FLAG_OPTIONS])})")
    return flags


def parse_helper_args(argv: list[str]) -> HelperCall:
    """The arguments mount(8) passes (without the program name) -> what to run."""
    positional, options, switches = [], [], set()
    args = iter(argv)
    for arg in args:
        if arg == "-o":
            options.append(next(args, ""))
        elif arg.startswith("-o"):
            options.append(arg[2:])
        elif arg == "-t":
            next(args, None)  # the type: ours
        elif arg.startswith("-") and len(arg) > 1 and set(arg[1:]) <= set("sfnv"):
            switches |= set(arg[1:])
        elif arg.startswith("-"):
            raise ValueError(f"unknown argument {arg!r}")
        else:
            positional.append(arg)
    if len(positional) != 2:
        raise ValueError("expected SPEC and DIR")
    return HelperCall(positional[1], mount_flags(",".join(options), sloppy="s" in switches),
                      fake="f" in switches, verbose="v" in switches)


def main(argv: list[str] | None = None) -> int:
    """The `mount.eotdlfs` console script."""
    try:
        call = parse_helper_args(sys.argv[1:] if argv is None else argv)
    except ValueError as exc:
        print(f"mount.eotdlfs: {exc}\n{USAGE}", file=sys.stderr)
        return EXIT_USAGE
    command = [sys.executable, "-m", "eotdlfs", "mount", call.mountpoint, *call.flags]
    if call.fake or call.verbose:
        print(" ".join(command), file=sys.stderr)
    if call.fake:
        return 0
    return 0 if subprocess.run(command, stdin=subprocess.DEVNULL).returncode == 0 else EXIT_MOUNT_FAILED


if __name__ == "__main__":
    sys.exit(main())
