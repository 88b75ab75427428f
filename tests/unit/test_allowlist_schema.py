"""The allowlist's JSON Schema (for editors) and the validator (the proxy's) give the same verdict.

The schema sees a document the way the validator does: every scalar as the text written (the
validator keeps `0123` as "0123"), null as null. On the shipped examples both must say valid; on
generated files, valid and invalid, both must agree, except where the validator refuses a file
for one of the rules a schema cannot express, which the schema's description lists.
"""

from __future__ import annotations

import copy
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chime_egress.errors import ConfigError, Problem
from chime_egress.policy.allowlist import parse_allowlist

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = resources.files("chime_egress.policy").joinpath("allowlist.schema.json")
SCHEMA: dict[str, Any] = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
CHECKER = jsonschema.Draft202012Validator(SCHEMA)

# The rules a schema cannot express: how the validator words a refusal by each, and the words
# of the schema's description that tell an editor's user about it.
INEXPRESSIBLE = {
    "app keys listed once": (r"is already listed on line \d+", "each app_key is listed once"),
    "header line size": (r"header line would be [\d,]+ bytes", "within 8,192 bytes"),
    "network apps": (r"mode enforce needs apps", "needs top-level apps"),
    "network names unique": (r"is already used on line \d+", "network names are unique"),
    "client ranges": (
        r"lies inside|wholly covered|is already covered by|covers |IPv4-mapped IPv6 range",
        "a client range must not lie inside",
    ),
    "CIDR values": (r"is not a CIDR", "no host bits set"),
    "duplicate keys": (r"duplicate key", "duplicate keys are refused"),
    "group source": (r"no identity source tells groups", "groups need a group source"),
    "identities order": (r"so this never applies to it", "could never apply"),
    "identity seconds": (r"must be a number of seconds from", "stay within range when written"),
}


def text_view(text: str) -> Any:
    """The document as the validator reads it: scalars as written, null as None."""

    def convert(node: yaml.Node) -> Any:
        if isinstance(node, yaml.MappingNode):
            return {convert(key): convert(value) for key, value in node.value}
        if isinstance(node, yaml.SequenceNode):
            return [convert(item) for item in node.value]
        return None if node.tag == "tag:yaml.org,2002:null" else str(node.value)

    root = yaml.compose(text, Loader=yaml.SafeLoader)
    return None if root is None else convert(root)


def validator_problems(text: str) -> list[Problem]:
    try:
        parse_allowlist(text, Path("/etc/chime/allowlist.yaml"))
    except ConfigError as error:
        return list(error.problems)
    return []


def schema_errors(text: str) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}" for e in CHECKER.iter_errors(text_view(text))]


def assert_same_verdict(text: str) -> None:
    problems = validator_problems(text)
    errors = schema_errors(text)
    if not problems:
        assert errors == [], f"the schema refuses a valid file:\n{text}\n{errors}"
    elif not errors:
        rules = [rx for rx, _ in INEXPRESSIBLE.values()]
        unexplained = [p for p in problems if not any(re.search(rx, p.message) for rx in rules)]
        assert unexplained == [], f"the schema accepts an invalid file:\n{text}\n{unexplained}"


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_the_description_lists_every_rule_the_schema_cannot_express() -> None:
    for rule, (_, words) in INEXPRESSIBLE.items():
        assert words in SCHEMA["description"], rule


def _yaml_blocks(page: str) -> list[str]:
    text = (ROOT / page).read_text(encoding="utf-8")
    return re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)


# The example files the docs run their samples on; mistakes.yaml is invalid on purpose.
EXAMPLES = ROOT / "docs" / "examples"
MISTAKES = EXAMPLES / "mistakes.yaml"


def _configmap_allowlist() -> str:
    manifest = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "configmap.yaml").read_text())
    return str(manifest["data"]["allowlist.yaml"])


SHIPPED = {
    "config/allowlist.yaml": (ROOT / "config" / "allowlist.yaml").read_text(encoding="utf-8"),
    "deploy/kubernetes/configmap.yaml": _configmap_allowlist(),
    **{f"README.md example {n}": text for n, text in enumerate(_yaml_blocks("README.md"), 1)},
    # The allowlist's reference page: whole files, with nothing only an admin's machine has.
    **{
        f"docs/allowlist.md example {n}": text
        for n, text in enumerate(_yaml_blocks("docs/allowlist.md"), 1)
    },
    **{
        f"docs/examples/{path.name}": path.read_text(encoding="utf-8")
        for path in sorted(EXAMPLES.glob("*.yaml"))
        if path != MISTAKES
    },
}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_shipped_example_is_valid_for_both(name: str) -> None:
    text = SHIPPED[name]
    assert validator_problems(text) == []
    assert schema_errors(text) == []


def test_the_examples_cover_the_readme_and_the_reference_page() -> None:
    names = " ".join(SHIPPED)
    for expected in ("README.md example", "docs/allowlist.md example", "docs/examples/pilot"):
        assert expected in names, sorted(SHIPPED)


def test_the_example_of_mistakes_is_refused_by_both() -> None:
    text = MISTAKES.read_text(encoding="utf-8")
    fields = [problem.field for problem in validator_problems(text)]
    assert fields == ["apps[0].tenants[1]", "apps[1].tenant"]
    errors = schema_errors(text)
    assert any("tenant" in error for error in errors) and len(errors) == 2, errors


def test_the_shipped_allowlist_names_the_schema_for_editors() -> None:
    first = SHIPPED["config/allowlist.yaml"].splitlines()[0]
    match = re.fullmatch(r"# yaml-language-server: \$schema=(\S+)", first)
    assert match is not None, first
    # yaml-language-server resolves the path against the YAML file's folder.
    named = (ROOT / "config" / match.group(1)).resolve()
    assert named.read_bytes() == SCHEMA_FILE.read_bytes()


# Each fixed case: a file an admin might write, with the verdict both must give.
CASES = {
    "numbers-as-written": (
        "apps: [{app_key: 0123, tenants: [007, yes]}]\ndestinations: {cidrs: [192.0.2.0/24]}\n",
        True,
    ),
    "observe-without-apps": ("mode: observe\ndestinations: {ip_ranges: r.json}\n", True),
    "enforce-without-apps": ("mode: enforce\ndestinations: {ip_ranges: r.json}\n", False),
    "tenant-typo": ("apps: [{app_key: K, tenant: [ab]}]\ndestinations: {cidrs: []}\n", False),
    "tenant-newline": (
        'apps: [{app_key: K, tenants: ["ab\\n"]}]\ndestinations: {cidrs: []}\n',
        False,
    ),
    "tenant-repeats": (
        "apps: [{app_key: K, tenants: [aaaab]}]\ndestinations: {cidrs: []}\n",
        False,
    ),
    "tenants-twice": (
        "apps: [{app_key: K, tenants: [ab, ab]}]\ndestinations: {cidrs: []}\n",
        False,
    ),
    "no-destination": ("apps: [{app_key: K}]\ndestinations: {services: [X]}\n", False),
    "media-wildcard-domain": (
        "apps: [{app_key: K}]\ndestinations: {cidrs: [], media_hosts: [ice.chime.*]}\n",
        False,
    ),
    "tenant-too-long": (
        f"apps: [{{app_key: K, tenants: [{'ab' * 129}]}}]\ndestinations: {{cidrs: []}}\n",
        False,
    ),
    "tenant-longest": (
        f"apps: [{{app_key: K, tenants: [{'ab' * 128}]}}]\ndestinations: {{cidrs: []}}\n",
        True,
    ),
    "ip-ranges-empty": ("apps: [{app_key: K}]\ndestinations: {ip_ranges: ''}\n", False),
    "services-empty": ("apps: [{app_key: K}]\ndestinations: {cidrs: [], services: []}\n", False),
    "app-key-comma": ("apps: [{app_key: 'A,B'}]\ndestinations: {cidrs: []}\n", False),
    "network-name-longest": (
        f"apps: [{{app_key: K}}]\ndestinations: {{cidrs: []}}\n"
        f"networks: [{{name: {'n' * 64}, clients: [10.0.0.0/8], mode: enforce}}]\n",
        True,
    ),
    "network-name-too-long": (
        f"apps: [{{app_key: K}}]\ndestinations: {{cidrs: []}}\n"
        f"networks: [{{name: {'n' * 65}, clients: [10.0.0.0/8], mode: enforce}}]\n",
        False,
    ),
    # identities: the sections that need no file (a trusted header from a parent proxy)
    "identity-trusted-header": (
        "apps: [{app_key: K}]\ndestinations: {cidrs: []}\n"
        "identity: {trusted_header: {parents: [10.0.0.5/32], groups: X-Groups}}\n"
        "identities: [{name: sales, groups: [sales], mode: enforce}]\n",
        True,
    ),
    "identity-users-observe": (
        "apps: [{app_key: K}]\ndestinations: {cidrs: []}\n"
        "identity: {trusted_header: {parents: [10.0.0.5/32]}}\n"
        "identities: [{name: pilot, users: [carol], mode: observe}]\n",
        True,
    ),
    "identities-without-identity": (
        "apps: [{app_key: K}]\ndestinations: {cidrs: []}\n"
        "identities: [{name: pilot, users: [carol], mode: observe}]\n",
        False,
    ),
    "identity-entry-matching-nobody": (
        "apps: [{app_key: K}]\ndestinations: {cidrs: []}\n"
        "identity: {trusted_header: {parents: [10.0.0.5/32]}}\n"
        "identities: [{name: sales, mode: enforce}]\n",
        False,
    ),
    "identity-unknown-key": (
        "apps: [{app_key: K}]\ndestinations: {cidrs: []}\n"
        "identity: {trusted_header: {parents: [10.0.0.5/32]}, cache_secs: 5}\n",
        False,
    ),
    "identity-name-default": (
        "apps: [{app_key: K}]\ndestinations: {cidrs: []}\n"
        "identity: {trusted_header: {parents: [10.0.0.5/32]}}\n"
        "identities: [{name: default, users: [a], mode: enforce}]\n",
        False,
    ),
    "identity-cache-seconds-exponent": (
        "apps: [{app_key: K}]\ndestinations: {cidrs: []}\n"
        "identity: {trusted_header: {parents: [10.0.0.5/32]}, cache_seconds: 1e3}\n",
        False,
    ),
    "identity-cache-seconds-longest": (
        "apps: [{app_key: K}]\ndestinations: {cidrs: []}\n"
        "identity: {trusted_header: {parents: [10.0.0.5/32]}, cache_seconds: 86400}\n",
        True,
    ),
    "network-default-name": (
        "apps: [{app_key: K}]\ndestinations: {cidrs: []}\n"
        "networks: [{name: default, clients: [10.0.0.0/8], mode: enforce}]\n",
        False,
    ),
}


# Files both must refuse, the validator also for a rule the schema cannot express.
REFUSED_BY_BOTH_OR_EXPLAINED = {
    "identity-groups-without-a-source": (
        "apps: [{app_key: K}]\ndestinations: {cidrs: []}\n"
        "identity: {trusted_header: {parents: [10.0.0.5/32]}}\n"
        "identities: [{name: sales, groups: [sales], mode: enforce}]\n"
    ),
    "identity-cache-seconds-too-long": (
        "apps: [{app_key: K}]\ndestinations: {cidrs: []}\n"
        "identity: {trusted_header: {parents: [10.0.0.5/32]}, cache_seconds: 86401}\n"
    ),
    "identity-user-already-matched": (
        "apps: [{app_key: K}]\ndestinations: {cidrs: []}\n"
        "identity: {trusted_header: {parents: [10.0.0.5/32]}}\n"
        "identities: [{name: a, users: [carol], mode: observe},"
        " {name: b, users: [carol], mode: observe}]\n"
    ),
}


@pytest.mark.parametrize("name", sorted(REFUSED_BY_BOTH_OR_EXPLAINED))
def test_identity_rules_the_schema_cannot_express_are_listed(name: str) -> None:
    text = REFUSED_BY_BOTH_OR_EXPLAINED[name]
    assert validator_problems(text) != []
    assert_same_verdict(text)


@pytest.mark.parametrize("name", sorted(CASES))
def test_fixed_cases(name: str) -> None:
    text, valid = CASES[name]
    assert (validator_problems(text) == []) is valid
    assert (schema_errors(text) == []) is valid


# Generated files: a valid file, then a few edits that may break it, each drawn from the values,
# right and wrong, an admin could write in that place. Near the boundary between valid and
# invalid is where a schema and a validator drift apart.


def _atoms(*values: Any) -> st.SearchStrategy[Any]:
    # Copies: an edit to a drawn list or mapping must not change the pool for later examples.
    return st.sampled_from(values).map(copy.deepcopy)


NOISE = _atoms(None, 5, 1.5, True, "", ["x"], {"k": "v"})
VALID_APP_KEYS = ("AppKey1", "AppKey2", "K", "0123", "Zm9v+/==", "!#$%&'()*+-./<=>?@[]^_`{|}~")
VALID_TENANTS = ("orgId", "salesId", "ab", "aaab", "b" * 256, "t-1_x!@#$", "12")
DISJOINT_CIDRS = ("192.0.2.0/24", "2001:db8::/32", "10.0.0.0/8", "198.51.100.0/24", "fd00::/8")
# What else may stand in each place, by the key (or, for list items, the list's key).
WRONG = {
    "app_key": _atoms("", "A B", "A,B", "A:B", "A;B", "Clé", "A\x07", "A\n", "x" * 300, 7),
    "name": _atoms("a\x1b[31m", "é", "tab\there", "line\n", "x\x7f"),
    "tenants": _atoms([], "x", "aaaa", "org.id", "ab" * 129, "ab\n", "ÄB", "orgId", 12, 7),
    "mode": _atoms("enforced", "Enforce", "observe", "enforce"),
    "cidrs": _atoms([], "10.1.2.3/8", "300.1.1.1/8", "nope", "10.0.0.0/255.0.0.0", "10.0.0.1"),
    "clients": _atoms([], "10.1.2.3/8", "::ffff:10.0.0.0/104", "10.1.0.0/16", "nope"),
    "media_hosts": _atoms(
        [],
        "*",
        "ice.chime.*",
        "ICE.chime.aws",
        "ice.chime.aws\n",
        "a.b",
        "a..b",
        "x" * 254 + ".aws",
        "ice.*.chime.aws",
    ),
    "services": _atoms([], "AMAZON", "x"),
    "ip_ranges": _atoms("other.json", "a b.json", ""),
    "regions": _atoms("GLOBAL", "x"),
    "networks": _atoms({"name": "n", "clients": ["10.0.0.0/8"], "mode": "enforce"}),
    "apps": _atoms([], {"app_key": "AppKey1"}, {"name": "x"}, {"app_key": "N", "tenants": []}),
    "": _atoms("pilot", "sales", "default", "a b", "x" * 64, "x" * 65),  # network names
}


@st.composite
def _valid_documents(draw: st.DrawFn) -> dict[str, Any]:
    def apps() -> list[dict[str, Any]]:
        keys = draw(st.lists(st.sampled_from(VALID_APP_KEYS), min_size=1, max_size=3, unique=True))
        result = []
        for key in keys:
            app: dict[str, Any] = {"app_key": key}
            if draw(st.booleans()):
                app["name"] = draw(_atoms("Engineering chat", "", "CRM"))
            if draw(st.booleans()):
                app["tenants"] = draw(
                    st.lists(st.sampled_from(VALID_TENANTS), min_size=1, max_size=3, unique=True)
                )
            result.append(app)
        return result

    document: dict[str, Any] = {}
    mode = draw(_atoms(None, "enforce", "observe"))
    if mode is not None:
        document["mode"] = mode
    if mode != "observe" or draw(st.booleans()):
        document["apps"] = apps()
    cidrs = list(DISJOINT_CIDRS)
    destinations: dict[str, Any] = {"cidrs": [cidrs.pop()]}
    if draw(st.booleans()):
        destinations["services"] = draw(st.lists(_atoms("CHIME_MEETINGS", "AMAZON"), min_size=1))
    if draw(st.booleans()):
        destinations["regions"] = draw(st.lists(_atoms("GLOBAL", "eu-west-1")))
    if draw(st.booleans()):
        destinations["ip_ranges"] = "chime-ip-ranges.json"
    if draw(st.booleans()):
        destinations["media_hosts"] = draw(
            st.lists(_atoms("ice.*.chime.aws", "turn.x.example"), min_size=1)
        )
    document["destinations"] = destinations
    networks = []
    for name in draw(st.lists(_atoms("pilot", "sales", "labs"), max_size=2, unique=True)):
        network: dict[str, Any] = {
            "name": name,
            "clients": [cidrs.pop()],
            "mode": draw(_atoms("enforce", "observe")),
        }
        if draw(st.booleans()) or (network["mode"] == "enforce" and "apps" not in document):
            network["apps"] = apps()
        networks.append(network)
    if networks:
        document["networks"] = networks
    return document


def _places(value: Any, key: str = "") -> list[tuple[Any, Any, str]]:
    """(container, index or key, the field's name) of every value in the document."""
    places: list[tuple[Any, Any, str]] = []
    if isinstance(value, dict):
        for name, item in value.items():
            places.append((value, name, name))
            places += _places(item, name)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            places.append((value, index, key))
            places += _places(item, key)
    return places


@st.composite
def _edited_documents(draw: st.DrawFn) -> dict[str, Any]:
    document = draw(_valid_documents())
    for _ in range(draw(st.integers(0, 2))):
        places = _places(document)
        # A field first, then one of its places: rare fields get edited as often as common ones.
        name = draw(st.sampled_from(sorted({name for _, _, name in places})))
        container, where, _ = draw(st.sampled_from([p for p in places if p[2] == name]))
        edit = draw(
            _atoms(*["replace"] * 4, "noise", "delete", "unknown key", "duplicate", "duplicate")
        )
        if edit == "delete":
            del container[where]
        elif edit == "unknown key" and isinstance(container, dict):
            container[draw(_atoms("tenant", "app", "extra", "cidr", "Mode"))] = "x"
        elif edit == "duplicate" and isinstance(container, list):
            container.append(container[where])
        elif edit == "noise":
            container[where] = draw(NOISE)
        else:
            network_name = name == "name" and isinstance(container, dict) and "clients" in container
            container[where] = draw(WRONG.get("" if network_name else name, NOISE))
    return document


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_edited_documents())
def test_generated_files_get_the_same_verdict(document: Any) -> None:
    text = yaml.safe_dump(document, allow_unicode=True, sort_keys=False)
    assert_same_verdict(text)


def test_the_generated_files_are_both_valid_and_invalid() -> None:
    """The property above means something only if it sees both verdicts, many times."""
    seen = {True: 0, False: 0}

    @settings(max_examples=300, deadline=None, database=None)
    @given(_edited_documents())
    def count(document: Any) -> None:
        text = yaml.safe_dump(document, allow_unicode=True, sort_keys=False)
        seen[validator_problems(text) == []] += 1

    count()
    assert seen[True] >= 50 and seen[False] >= 50, seen


def _docs_allowlist_examples() -> dict[str, str]:
    """Every YAML block of docs/*.md that is a whole allowlist (it has `destinations:`)."""
    found = {}
    for page in sorted((ROOT / "docs").glob("*.md")):
        blocks = re.findall(r"```yaml\n(.*?)```", page.read_text(encoding="utf-8"), re.DOTALL)
        for number, text in enumerate(blocks, start=1):
            if re.search(r"^destinations:", text, re.MULTILINE):
                found[f"docs/{page.name} example {number}"] = text
    return found


DOCS = _docs_allowlist_examples()


def test_the_docs_have_allowlist_examples() -> None:
    assert any("identity.md" in name for name in DOCS), sorted(DOCS)


@pytest.mark.parametrize("name", sorted(DOCS))
def test_every_allowlist_example_in_the_docs_fits_the_schema(name: str) -> None:
    # The schema only: these examples name files (htpasswd, bind passwords) that exist only on
    # an admin's machine, which the validator would rightly ask for.
    assert schema_errors(DOCS[name]) == []
