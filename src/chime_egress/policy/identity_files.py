"""The files an allowlist's `identity:` section names: htpasswd, group file, bind password.

Read with the allowlist (and reloaded with it), so a mistake in any of them names that file's own
line, and the proxy never runs with half of them.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import yaml

from ..errors import ConfigError, Problem
from .allowlist import _check_nesting, _line, _Reader
from .files import read_text_file
from .identity import BCRYPT_PREFIXES, SHA_PREFIX, GroupFile, Htpasswd, fold
from .source_text import yaml_problems

# An htpasswd or group file of 100,000 people is a few MiB; a password, a line. Anything far
# larger (a device, a runaway export) must not fill memory on every reload.
MAX_IDENTITY_FILE_BYTES = 64 * 1024 * 1024
MAX_SECRET_FILE_BYTES = 64 * 1024


def _read(
    reader: _Reader, node: yaml.Node, field: str, file: Path, what: str, max_bytes: int
) -> str | None:
    """The file's text, read as the allowlist is (regular files only, bounded, UTF-8 checked by
    line and column); None, with the problems recorded, when it cannot be used."""
    try:
        return read_text_file(file, what, max_bytes)
    except ConfigError as error:
        for problem in error.problems:
            if problem.line is None:  # the file as a whole: say which allowlist field named it
                reader.problem(node, field, f"{file}: {problem.message}")
            else:  # a spot inside the file: its own line and column
                reader.problems.append(problem)
        return None


def read_secret(reader: _Reader, node: yaml.Node, file: Path) -> str:
    field = "identity.ldap.bind_password_file"
    text = _read(reader, node, field, file, "bind password", MAX_SECRET_FILE_BYTES)
    if text is None:
        return ""
    secret = text.rstrip("\r\n")
    if not secret:
        # An empty password is an anonymous bind in LDAP: it would "succeed" as nobody.
        reader.problem(node, field, f"{file} is empty; it must hold the bind password")
    return secret


def read_htpasswd(reader: _Reader, node: yaml.Node, file: Path) -> Htpasswd | None:
    """An htpasswd file: `user:hash` lines, bcrypt or {SHA}; problems name its own lines."""
    field = "identity.htpasswd"
    text = _read(reader, node, field, file, "htpasswd", MAX_IDENTITY_FILE_BYTES)
    if text is None:
        return None
    hashes: dict[str, str] = {}
    lines: dict[str, int] = {}
    where = str(file)
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, separator, stored = line.partition(":")
        if not separator or not user:
            reader.problems.append(Problem(where, number, "", "not a 'user:hash' line"))
            continue
        if fold(user) in lines:
            reader.problems.append(
                Problem(where, number, user, f"listed again (first on line {lines[fold(user)]})")
            )
            continue
        if stored.startswith(BCRYPT_PREFIXES):
            pass
        elif stored.startswith(SHA_PREFIX):
            reader.warnings.append(
                Problem(
                    where,
                    number,
                    user,
                    "{SHA} is unsalted SHA-1, quick to crack from a copy of this file; "
                    "recreate it with htpasswd -B (bcrypt)",
                )
            )
        else:
            scheme = stored.split("$")[1] if stored.startswith("$") and "$" in stored[1:] else ""
            what = f"${scheme}$ hashes are" if scheme else "this hash format is"
            reader.problems.append(
                Problem(
                    where,
                    number,
                    user,
                    f"{what} not supported; set the password again with htpasswd -B (bcrypt)",
                )
            )
            continue
        lines[fold(user)] = number
        hashes[user] = stored
    if not hashes and not any(p.path == where for p in reader.problems):
        reader.problem(node, field, f"{file} lists no user")
    return Htpasswd(file, hashes)


def read_group_file(reader: _Reader, node: yaml.Node, file: Path) -> GroupFile | None:
    """Groups from YAML (`group: [user, ...]`) or CSV (columns `user` and `group`)."""
    text = _read(reader, node, "identity.group_file", file, "group", MAX_IDENTITY_FILE_BYTES)
    if text is None:
        return None
    if file.suffix.lower() == ".csv":
        pairs = _group_csv(reader, text, file)
    elif file.suffix.lower() in (".yaml", ".yml"):
        pairs = _group_yaml(text, file, reader)
    else:
        reader.problem(
            node,
            "identity.group_file",
            f"{file.name}: name the file .yaml, .yml or .csv so its format is known",
        )
        return None
    if pairs is None:
        return None
    memberships: dict[str, set[str]] = {}
    for user, group in pairs:
        memberships.setdefault(fold(user), set()).add(fold(group))
    return GroupFile(
        path=file,
        memberships={user: frozenset(groups) for user, groups in memberships.items()},
        groups=frozenset(fold(group) for _, group in pairs),
    )


def _group_yaml(text: str, file: Path, outer: _Reader) -> list[tuple[str, str]] | None:
    reader = _Reader(file)
    try:
        _check_nesting(text, file, "a group file needs 2 (each group a list of users)")
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        outer.problems.extend(yaml_problems(error, text, str(file)))
        return None
    except ConfigError as error:  # nested too deep for the composer
        outer.problems.extend(error.problems)
        return None
    if not isinstance(root, yaml.MappingNode):
        outer.problems.append(
            Problem(str(file), 1, "", "must map each group to its users, e.g. 'sales: [alice]'")
        )
        return None
    pairs: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for key_node, value_node in root.value:
        group = reader.text(key_node, "group")
        if group is None:
            continue
        if fold(group) in seen:
            reader.problem(key_node, group, f"listed again (first on line {seen[fold(group)]})")
            continue
        seen[fold(group)] = _line(key_node)
        for _, user in reader.text_list(value_node, group) or ():
            pairs.append((user, group))
    outer.problems.extend(reader.problems)
    return None if reader.problems else pairs


def _group_csv(reader: _Reader, text: str, file: Path) -> list[tuple[str, str]] | None:
    rows = csv.reader(io.StringIO(text))
    header = next(rows, None)
    columns = [column.strip().lower() for column in header or ()]
    if "user" not in columns or "group" not in columns:
        reader.problems.append(
            Problem(str(file), 1, "", "the first line must name the columns 'user' and 'group'")
        )
        return None
    user_at, group_at = columns.index("user"), columns.index("group")
    pairs: list[tuple[str, str]] = []
    for row in rows:
        number = rows.line_num
        if not any(cell.strip() for cell in row):
            continue
        cells = [row[at].strip() if at < len(row) else "" for at in (user_at, group_at)]
        if not all(cells):
            reader.problems.append(Problem(str(file), number, "", "needs a user and a group"))
            continue
        pairs.append((cells[0], cells[1]))
    return pairs
