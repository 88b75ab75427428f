"""`identity` and `identities`: parsing, validation (file, line, field), the choice by identity."""

from __future__ import annotations

import base64
import hashlib
import os
import textwrap
from pathlib import Path

import bcrypt
import pytest

from chime_egress.errors import ConfigError
from chime_egress.policy.allowlist import Allowlist, parse_allowlist
from chime_egress.policy.client_policy import compile_client_policies
from chime_egress.policy.compiled import load_policy
from chime_egress.policy.identity import Identity, fold
from chime_egress.policy.identity_files import MAX_IDENTITY_FILE_BYTES
from chime_egress.proxy.identity import parse_basic

HEADER = """\
identity:
  trusted_header:
    parents: [10.0.0.5/32]
    user: X-Authenticated-User
    groups: X-Authenticated-Groups
"""

ROLLOUT = """\
apps:
  - app_key: CorpKey
identity:
  trusted_header:
    parents: [10.0.0.5/32, "2001:db8::5/128"]
    groups: X-Authenticated-Groups
identities:
  - name: contractors
    groups: [Contractors]
    mode: enforce
    apps: [{app_key: CorpKey, tenants: [corpOrg]}]
  - name: sales
    users: [Alice]
    groups: [sales]
    mode: enforce
    apps: [{app_key: CorpKey}, {app_key: CrmKey}]
networks:
  - name: pilot
    clients: [10.20.0.0/16]
    mode: observe
destinations: {cidrs: [99.77.128.0/18]}
"""


def write(folder: Path, text: str, name: str = "allowlist.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def parse(folder: Path, text: str) -> Allowlist:
    path = write(folder, text)
    return parse_allowlist(path.read_text(), path)


def problems(folder: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        parse(folder, text)
    return [str(problem) for problem in raised.value.problems]


def who(user: str | None, *groups: str) -> Identity:
    return Identity(user, frozenset(fold(g) for g in groups), "test")


def test_identities_come_before_networks_first_match_in_file_order(tmp_path: Path) -> None:
    allowlist = parse(tmp_path, ROLLOUT)
    clients = compile_client_policies(allowlist)
    assert [p.name for p in clients.identities] == ["contractors", "sales"]
    assert [p.name for p in clients.all] == ["default", "contractors", "sales", "pilot"]
    # Names are compared without letter case, as directories compare them.
    assert clients.select(who("ALICE"), "10.20.1.1").name == "sales"
    assert clients.select(who("bob", "SALES"), "10.9.9.9").name == "sales"
    # In both groups: the first entry in file order.
    assert clients.select(who("carol", "sales", "contractors"), "10.9.9.9").name == "contractors"
    assert clients.select(who("alice", "contractors"), "10.9.9.9").name == "contractors"
    # Nobody known, or matched by no entry: the address decides, as before.
    assert clients.select(None, "10.20.1.1").name == "pilot"
    assert clients.select(who("erin", "finance"), "10.20.1.1").name == "pilot"
    assert clients.select(who(None, "finance"), "192.0.2.1").name == "default"
    sales = clients.identities[1]
    assert sales.http1_headers == (("X-Amzn-Chime-App-Keys", "CorpKey,CrmKey"),)
    assert sales.describe() == "identity sales (users alice; groups sales), mode enforce"
    assert sales.label() == "identity sales, mode enforce"  # the log's: nobody named
    assert clients.networks[0].label() == clients.networks[0].describe()
    assert sales.kind == "identity" and clients.networks[0].kind == "network"


def test_identity_settings_are_read(tmp_path: Path) -> None:
    settings = parse(tmp_path, ROLLOUT).identity
    assert settings is not None
    header = settings.trusted_header
    assert header is not None
    assert header.user == "X-Authenticated-User"  # the default name
    assert header.is_parent("10.0.0.5") and header.is_parent("2001:db8::5")
    assert not header.is_parent("10.0.0.6") and not header.is_parent("not-an-address")
    assert settings.cache_seconds == 300 and settings.log_users is False


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        (
            "  - {name: a, groups: [sales], mode: enforce}\n"
            "  - {name: b, groups: [Sales, other], mode: enforce}\n",
            "allowlist.yaml:10: identities[1].groups[0]: 'Sales' is already matched by "
            "identities[0].groups[0] (line 9), which comes first, so this never applies to it; "
            "move this entry above, or remove it",
        ),
        (
            "  - {name: a, users: [bob, Bob], mode: enforce}\n",
            "allowlist.yaml:9: identities[0].users[1]: 'Bob' is listed twice in this entry "
            "(line 9)",
        ),
        (
            "  - {name: pilot, groups: [x], mode: enforce}\n",
            "allowlist.yaml:9: identities[0].name: 'pilot' is already used on line 11",
        ),
        (
            "  - {name: default, groups: [x], mode: enforce}\n",
            "allowlist.yaml:9: identities[0].name: 'default' is reserved for the top-level "
            "settings; choose another name",
        ),
        (
            "  - {name: a, mode: enforce}\n",
            "allowlist.yaml:9: identities[0]: matches nobody: list users, groups or both",
        ),
        (
            "  - {name: a, groups: [], mode: enforce}\n",
            "allowlist.yaml:9: identities[0].groups: is empty; list groups or remove the key",
        ),
        (
            "  - {name: a, grups: [x], mode: enforce}\n",
            "allowlist.yaml:9: identities[0].grups: unknown key 'grups'; did you mean 'groups'?",
        ),
        (
            "  - {name: a, groups: [x]}\n",
            "allowlist.yaml:9: identities[0].mode: missing: say 'enforce' or 'observe' for them",
        ),
    ],
)
def test_entries_are_validated_like_networks(tmp_path: Path, entries: str, expected: str) -> None:
    text = (
        "apps: [{app_key: CorpKey}]\n"
        f"{HEADER}"
        "destinations: {cidrs: [99.77.128.0/18]}\n"
        "identities:\n"
        f"{entries}"
        "networks:\n"
        "  - {name: pilot, clients: [10.0.0.0/8], mode: observe}\n"
    )
    found = problems(tmp_path, text)
    assert any(expected in p for p in found), found


def test_identities_need_a_source_that_tells_who_is_asking(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        apps: [{app_key: CorpKey}]
        identities:
          - {name: a, users: [bob], mode: enforce}
        destinations: {cidrs: [99.77.128.0/18]}
        """,
    )
    assert found == [
        f"{tmp_path}/allowlist.yaml:3: identities: needs an 'identity:' section saying how the "
        "proxy learns who is asking (proxy_auth, trusted_header)"
    ]


def test_groups_need_a_group_source(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        apps: [{app_key: CorpKey}]
        identity:
          trusted_header: {parents: [10.0.0.5/32]}
        identities:
          - {name: a, groups: [sales], mode: enforce}
        destinations: {cidrs: [99.77.128.0/18]}
        """,
    )
    assert len(found) == 1 and "identities[0].groups: no identity source tells groups" in found[0]


def test_group_file_names_the_known_groups(tmp_path: Path) -> None:
    (tmp_path / "groups.yaml").write_text("sales: [alice, Bob]\ncontractors: [carol]\n")
    naming = """\
        apps: [{{app_key: CorpKey}}]
        identity:
          trusted_header: {{parents: [10.0.0.5/32]}}
          group_file: groups.yaml
        identities:
          - {{name: a, groups: [{group}], mode: enforce}}
        destinations: {{cidrs: [99.77.128.0/18]}}
        """
    found = problems(tmp_path, naming.format(group="contractor"))
    assert found == [
        f"{tmp_path}/allowlist.yaml:6: identities[0].groups[0]: 'contractor' is not in "
        f"{tmp_path}/groups.yaml; did you mean 'contractors'?"
    ]
    allowlist = parse(tmp_path, naming.format(group="contractors"))
    assert allowlist.identity is not None and allowlist.identity.group_file is not None
    assert allowlist.identity.group_file.groups_of("BOB") == frozenset({"sales"})
    assert allowlist.identity.group_file.groups_of("nobody") == frozenset()


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("groups.yaml", "sales: [alice]\nsales: [bob]\n", "groups.yaml:2: sales: listed again"),
        ("groups.yaml", "- alice\n", "groups.yaml:1: must map each group to its users"),
        ("groups.yaml", "sales: alice\n", "groups.yaml:1: sales: must be a list"),
        ("groups.csv", "name,team\nalice,sales\n", "groups.csv:1: the first line must name"),
        ("groups.csv", "user,group\nalice,\n", "groups.csv:2: needs a user and a group"),
        ("groups.txt", "alice sales\n", "identity.group_file: groups.txt: name the file .yaml"),
        # YAML mistakes are told as the allowlist's are: line, column, and what to do.
        ("groups.yaml", "sales:\n\t- alice\n", "groups.yaml:2:1: a tab"),
        ("groups.yaml", "sales: [alice\n", "groups.yaml:2:"),
        # Nesting PyYAML's recursive composer cannot take: a clean problem, not RecursionError.
        ("groups.yaml", "sales: " + "[" * 50_000 + "\n", "groups.yaml:1: nested more than 16"),
    ],
)
def test_group_file_mistakes_name_its_own_lines(
    tmp_path: Path, name: str, content: str, expected: str
) -> None:
    (tmp_path / name).write_text(content)
    found = problems(
        tmp_path,
        f"""\
        apps: [{{app_key: CorpKey}}]
        identity:
          trusted_header: {{parents: [10.0.0.5/32]}}
          group_file: {name}
        destinations: {{cidrs: [99.77.128.0/18]}}
        """,
    )
    assert any(expected in p for p in found), found


GROUP_FILE_ALLOWLIST = """\
    apps: [{app_key: CorpKey}]
    identity:
      trusted_header: {parents: [10.0.0.5/32]}
      group_file: groups.csv
    destinations: {cidrs: [99.77.128.0/18]}
    """


def test_a_parent_written_as_an_ipv4_mapped_range_is_refused(tmp_path: Path) -> None:
    # Addresses are matched in their IPv4 form: such a parent would silently match nobody.
    found = problems(
        tmp_path,
        """\
        apps: [{app_key: CorpKey}]
        identity:
          trusted_header: {parents: ["::ffff:10.0.0.5/128"]}
        destinations: {cidrs: [99.77.128.0/18]}
        """,
    )
    assert any(
        "identity.trusted_header.parents[0]: '::ffff:10.0.0.5/128' is an IPv4-mapped" in p
        for p in found
    ), found


def test_a_group_file_that_is_not_utf8_is_told_by_line_and_column(tmp_path: Path) -> None:
    (tmp_path / "groups.csv").write_bytes("user,group\nj\xf6rg,sales\n".encode("latin-1"))
    found = problems(tmp_path, GROUP_FILE_ALLOWLIST)
    assert any(p.startswith(f"{tmp_path / 'groups.csv'}:2:2:") for p in found), found
    assert not any("codec can't decode" in p for p in found), found


def test_a_group_file_that_is_a_fifo_or_a_device_is_refused_unread(tmp_path: Path) -> None:
    # A FIFO would block the reload until a writer came; /dev/zero would be read without end.
    os.mkfifo(tmp_path / "groups.csv")
    found = problems(tmp_path, GROUP_FILE_ALLOWLIST)
    assert any("identity.group_file: " in p and "not a regular file" in p for p in found), found
    (tmp_path / "groups.csv").unlink()
    (tmp_path / "groups.csv").symlink_to("/dev/zero")
    found = problems(tmp_path, GROUP_FILE_ALLOWLIST)
    assert any("not a regular file" in p for p in found), found


HTPASSWD_ALLOWLIST = """\
    apps: [{app_key: CorpKey}]
    identity:
      proxy_auth: htpasswd
      htpasswd: users.htpasswd
    destinations: {cidrs: [99.77.128.0/18]}
    """


def test_an_htpasswd_file_past_the_size_limit_is_refused(tmp_path: Path) -> None:
    with (tmp_path / "users.htpasswd").open("wb") as big:
        big.truncate(MAX_IDENTITY_FILE_BYTES + 1)  # sparse: no disk used
    found = problems(tmp_path, HTPASSWD_ALLOWLIST)
    assert any("identity.htpasswd: " in p and "at most" in p for p in found), found


def sha(password: str) -> str:
    return "{SHA}" + base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()


def test_htpasswd_checks_bcrypt_and_sha_and_refuses_other_formats(tmp_path: Path) -> None:
    hashed = bcrypt.hashpw(b"s3cret:with colon", bcrypt.gensalt(rounds=4)).decode()
    (tmp_path / "users.htpasswd").write_text(
        f"# users\nalice:{hashed}\nbob:{sha('bobpw')}\n\ncarol:$apr1$salt$hash\nalice:x\n"
    )
    text = """\
        apps: [{app_key: CorpKey}]
        identity:
          proxy_auth: htpasswd
          htpasswd: users.htpasswd
        destinations: {cidrs: [99.77.128.0/18]}
        """
    found = problems(tmp_path, text)
    assert found == [
        f"{tmp_path}/users.htpasswd:5: carol: $apr1$ hashes are not supported; set the password "
        "again with htpasswd -B (bcrypt)",
        f"{tmp_path}/users.htpasswd:6: alice: listed again (first on line 2)",
    ]
    (tmp_path / "users.htpasswd").write_text(f"alice:{hashed}\nbob:{sha('bobpw')}\n")
    allowlist = parse(tmp_path, text)
    [warning] = allowlist.warnings
    assert "users.htpasswd:2: bob: {SHA} is unsalted SHA-1" in str(warning)
    assert allowlist.identity is not None and allowlist.identity.htpasswd is not None
    htpasswd = allowlist.identity.htpasswd
    assert htpasswd.check("alice", "s3cret:with colon")
    assert not htpasswd.check("alice", "s3cret")
    assert not htpasswd.check("alice", "")
    assert htpasswd.check("bob", "bobpw") and not htpasswd.check("bob", "bobpW")
    assert not htpasswd.check("nobody", "bobpw")


def test_users_of_an_htpasswd_file_are_the_known_users(tmp_path: Path) -> None:
    (tmp_path / "users.htpasswd").write_text(f"alice:{sha('x')}\n")
    found = problems(
        tmp_path,
        """\
        apps: [{app_key: CorpKey}]
        identity:
          proxy_auth: htpasswd
          htpasswd: users.htpasswd
        identities:
          - {name: a, users: [alicia], mode: enforce}
        destinations: {cidrs: [99.77.128.0/18]}
        """,
    )
    assert found == [
        f"{tmp_path}/allowlist.yaml:6: identities[0].users[0]: 'alicia' is not in "
        f"{tmp_path}/users.htpasswd; did you mean 'alice'?"
    ]


@pytest.mark.parametrize(
    ("identity", "expected"),
    [
        ("  proxy_auth: ldap\n", "identity.ldap: missing: 'proxy_auth: ldap' needs the directory"),
        ("  proxy_auth: htpasswd\n", "identity.htpasswd: missing: 'proxy_auth: htpasswd' needs"),
        ("  proxy_auth: kerberos\n", "'kerberos' is not one of htpasswd, ldap"),
        ("  group_file: g.yaml\n", "identity: names no way to tell who is asking"),
        (
            "  trusted_header: {parents: [10.0.0.5/32], user: Proxy-Authorization}\n",
            "identity.trusted_header.user: Proxy-Authorization carries something else",
        ),
        (
            "  trusted_header: {parents: [10.0.0.5/32], user: X-A, groups: x-a}\n",
            "identity.trusted_header.groups: is the same as the user header",
        ),
        ("  trusted_header: {user: X-A}\n", "identity.trusted_header.parents: missing"),
        (
            "  trusted_header: {parents: [10.0.0.5/24]}\n",
            "'10.0.0.5/24' is not a CIDR: 10.0.0.5/24 has host bits set; did you mean 10.0.0.0/24?",
        ),
        (
            "  trusted_header: {parents: [10.0.0.5/32]}\n  cache_seconds: soon\n",
            "identity.cache_seconds: must be a number of seconds from 0 to 86400",
        ),
        (
            "  trusted_header: {parents: [10.0.0.5/32]}\n  log_users: maybe\n",
            "identity.log_users: 'maybe' must be true or false",
        ),
    ],
)
def test_identity_section_mistakes(tmp_path: Path, identity: str, expected: str) -> None:
    (tmp_path / "g.yaml").write_text("sales: [alice]\n")
    found = problems(
        tmp_path,
        "apps: [{app_key: CorpKey}]\n"
        f"identity:\n{identity}"
        "destinations: {cidrs: [99.77.128.0/18]}\n",
    )
    assert any(expected in p for p in found), found


LDAP = """\
apps: [{app_key: CorpKey}]
identity:
  proxy_auth: ldap
  ldap:
    url: ldaps://ldap.example.org
    bind_dn: cn=proxy,dc=example,dc=org
    bind_password_file: secret
    user_base: ou=people,dc=example,dc=org
    user_attribute: sAMAccountName
    groups: search
    group_base: ou=groups,dc=example,dc=org
destinations: {cidrs: [99.77.128.0/18]}
"""


def test_ldap_settings_and_the_bind_password_file(tmp_path: Path) -> None:
    found = problems(tmp_path, LDAP)
    assert any(
        "identity.ldap.bind_password_file: " in p and "secret: bind password file not found" in p
        for p in found
    ), found
    (tmp_path / "secret").write_text("\n")
    found = problems(tmp_path, LDAP)
    assert any("secret is empty; it must hold the bind password" in p for p in found), found
    (tmp_path / "secret").write_text("hunter2\n")
    settings = parse(tmp_path, LDAP).identity
    assert settings is not None and settings.ldap is not None
    assert settings.ldap.bind_password == "hunter2"
    assert "hunter2" not in repr(settings)  # never in a log line that prints the settings
    assert settings.ldap.user_attribute == "sAMAccountName"
    assert settings.files == (tmp_path / "secret",)


def test_an_edited_identity_file_reloads_the_policy(tmp_path: Path) -> None:
    (tmp_path / "groups.csv").write_text("user,group\nalice,sales\n")
    allowlist = write(
        tmp_path,
        """\
        apps: [{app_key: CorpKey}]
        identity:
          trusted_header: {parents: [10.0.0.5/32]}
          group_file: groups.csv
        destinations: {cidrs: [99.77.128.0/18]}
        """,
    )
    policy = load_policy(allowlist)
    assert policy.sources == (allowlist, tmp_path / "groups.csv")
    assert len(policy.loaded_signature) == len(policy.sources)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            "Basic " + base64.b64encode(b"alice:pw:with:colons").decode(),
            ("alice", "pw:with:colons"),
        ),
        ("basic " + base64.b64encode("zoë:pässword".encode()).decode(), ("zoë", "pässword")),
        ("Basic " + base64.b64encode(b"alice:").decode(), ("alice", "")),
        ("Basic " + base64.b64encode(b":pw").decode(), None),
        ("Basic " + base64.b64encode(b"no-colon").decode(), None),
        ("Basic !!!", None),
        ("Bearer abc", None),
        ("", None),
        (None, None),
    ],
)
def test_basic_credentials(value: str | None, expected: tuple[str, str] | None) -> None:
    assert parse_basic(value) == expected
