"""The entries of host/link/text-order.ld: scripts/text-order.sh writes
them and scripts/loadbench.sh checks them against a build, so both read
and write them here, in one format."""

import re
import subprocess

# An entry: `.text.NAME`, or `.text.unlikely.NAME` for a function marked cold.
ENTRY = re.compile(r"^\s*\*\(\.text\*\.(\S+)\)$", re.M)


def section_name(symbol):
    """The name an entry gives `symbol`: symbols promoted across codegen
    units carry a per-build number, matched as `*`."""
    return re.sub(r"\.llvm\.\d+$", ".llvm.*", symbol)


def entry(name):
    """The line that places the function `name`."""
    return f"    *(.text*.{name})\n"


def serving_found(order, binary):
    """The percentage of the serving functions listed in `order` that
    `binary` defines."""
    serving = open(order).read().split(".text.sluice_startup")[0]
    listed = ENTRY.findall(serving)
    defined = subprocess.run(
        ["nm", "--defined-only", binary], capture_output=True, text=True
    ).stdout
    names = {section_name(line.split()[-1]) for line in defined.splitlines() if line.strip()}
    return 100 * sum(name in names for name in listed) // max(len(listed), 1)
