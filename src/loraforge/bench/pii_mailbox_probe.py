"""People's addresses that ``role_mailbox`` calls an organisation's: every ASCII given name and surname of Faker's
locales (``wordlists.personal_names``) as ``<name>.<another>@`` and ``<another>.<name>@``, none of them a role
mailbox by RULES.md. A probe on data of no PII set, for the role words' and office nouns' rules (rules 60-62).

    python -m loraforge.bench.pii_mailbox_probe [--src DIR]

``--src`` scores another checkout's ``role_mailbox`` on the same addresses (``git worktree add /tmp/r61 1b3ba21``,
then ``--src /tmp/r61/src``): the addresses always come from this checkout's name lists.
"""

from __future__ import annotations

import argparse
import importlib
import random
import sys


def personal_addresses(seed: int = 0) -> list[str]:
    """Two addresses per name, the other part a random name: a person's ``first.last@`` shape."""
    from loraforge.pii.wordlists import personal_names

    names = sorted(n for n in personal_names() if n.isascii() and n.isalpha())
    rng = random.Random(seed)
    return [f"{first}.{rng.choice(names)}@mail.example" for first in names] + \
        [f"{rng.choice(names)}.{last}@mail.example" for last in names]


def called_organisations(addresses: list[str]) -> list[str]:
    """The addresses ``role_mailbox`` calls an organisation's, less those whose whole local part is a role word."""
    from loraforge.pii.never_personal import ROLE_MAILBOXES, role_mailbox

    return [a for a in addresses if role_mailbox(a) and a.split("@")[0] not in ROLE_MAILBOXES]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", default=None, help="another checkout's src folder whose role_mailbox to score")
    args = parser.parse_args(argv)
    addresses = personal_addresses()
    if args.src:  # the same addresses, the other checkout's rules
        for name in [m for m in sys.modules if m == "loraforge" or m.startswith("loraforge.")]:
            del sys.modules[name]  # the package too: its __path__ would find this checkout's modules again
        sys.path.insert(0, args.src)
        importlib.invalidate_caches()
    found = called_organisations(addresses)
    print(f"{len(found)} of {len(addresses)} people's addresses called an organisation's")
    for address in found:
        print(" ", address)


if __name__ == "__main__":
    main()
