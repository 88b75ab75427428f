"""What a ranges update may change without `--force`: the checks of `chime-egress ranges update`.

The ranges file decides which connections the proxy decrypts and to which servers it sends the
AppKeys, and the PAC file and firewall rules are generated from it. A source listing 0.0.0.0/0 as
CHIME_MEETINGS would make the proxy decrypt every connection and send the AppKeys everywhere,
and the PAC file send everything through the proxy. Such a file is not one AWS publishes: the
update looks for what no AWS file contains, and for changes too large to take unseen, and says
what it found. Pure: the command prints the concerns and refuses unless `--force`.
"""

from __future__ import annotations

from .ranges import Prefix, RangesSnapshot

MIN_PREFIX_LENGTH = {4: 8, 6: 24}
"""The widest prefix accepted, per IP version. AWS's whole file, every service, has nothing wider
than /11 (IPv4) and /32 (IPv6) (syncToken 1787411825); CHIME_MEETINGS is a /18 and a /40."""
SMALL_CHANGE = 4
"""Prefixes that may come or go at once in any file; beyond it, at most half the count."""


def prefix_key(prefix: Prefix) -> tuple[str, str, str]:
    """What makes two snapshots' entries the same entry."""
    return (str(prefix.network), prefix.service, prefix.region)


def prefix_concerns(prefixes: tuple[Prefix, ...]) -> list[str]:
    """Prefixes no AWS file lists: too wide, or not public unicast addresses."""
    concerns = []
    for prefix in prefixes:
        network = prefix.network
        widest = MIN_PREFIX_LENGTH[network.version]
        if network.prefixlen < widest:
            concerns.append(
                f"{network} ({prefix.service}, {prefix.region}) is wider than /{widest}, "
                f"wider than anything AWS publishes for any service"
            )
        elif not (
            network.network_address.is_global
            and network.broadcast_address.is_global
            and not network.is_multicast
        ):
            concerns.append(
                f"{network} ({prefix.service}, {prefix.region}) is not public unicast address "
                "space (private, loopback, link-local, multicast or reserved); AWS lists none"
            )
    return concerns


def update_concerns(current: RangesSnapshot | None, new: RangesSnapshot) -> list[str]:
    """Why `new` should not replace `current` unseen; empty when nothing stands out."""
    concerns = prefix_concerns(new.prefixes)
    if current is None:
        return concerns
    old_count, new_count = len(current.prefixes), len(new.prefixes)
    if abs(new_count - old_count) > max(SMALL_CHANGE, old_count // 2):
        concerns.append(
            f"the number of prefixes goes from {old_count} to {new_count}: more than half, "
            f"and more than {SMALL_CHANGE}"
        )
    old_pairs = {(p.service, p.region) for p in current.prefixes}
    new_pairs = {(p.service, p.region) for p in new.prefixes}
    if old_pairs != new_pairs:
        added = ", ".join(f"{s} {r}" for s, r in sorted(new_pairs - old_pairs)) or "none"
        removed = ", ".join(f"{s} {r}" for s, r in sorted(old_pairs - new_pairs)) or "none"
        concerns.append(
            f"the services and regions change (new: {added}; gone: {removed}); "
            "check AWS's announcement"
        )
    same_prefixes = {prefix_key(p) for p in current.prefixes} == {
        prefix_key(p) for p in new.prefixes
    }
    new_token, old_token = new.sync_token_number, current.sync_token_number
    if new_token < old_token:
        # AWS's change notifications can arrive out of order; an older file is stale.
        concerns.append(
            f"syncToken {new.sync_token} ({new.create_date}) is older than the current "
            f"snapshot's {current.sync_token} ({current.create_date})"
        )
    elif new_token == old_token and not same_prefixes:
        concerns.append(
            f"syncToken {new.sync_token} is the current snapshot's, but the prefixes differ: "
            "AWS gives every change a new syncToken"
        )
    return concerns
