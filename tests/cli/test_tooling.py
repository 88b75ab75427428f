"""`chime-egress schema` and `chime-egress completion`, run as installed; the completion scripts
are loaded into real bash and zsh, which are asked to complete partial command lines."""

from __future__ import annotations

import json
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import pytest

from .support import run

SCHEMA_FILE = resources.files("chime_egress.policy").joinpath("allowlist.schema.json")


def test_schema_prints_the_shipped_schema() -> None:
    result = run("schema")
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout == SCHEMA_FILE.read_text(encoding="utf-8")
    assert json.loads(result.stdout)["title"] == "chime-egress allowlist"


def _shell(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"the completion tests need {name}: apt-get install {name} (.ci/run does)")
    return path


def _script(tmp_path: Path, shell: str) -> Path:
    result = run("completion", shell)
    assert result.returncode == 0, result.stderr
    path = tmp_path / ("_chime-egress" if shell == "zsh" else "chime-egress.bash")
    path.write_text(result.stdout, encoding="utf-8")
    return path


BASH_COMPLETE = """
source "$1"; shift
COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 ))
COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
_shtab_chime_egress
printf '%s\\n' "${COMPREPLY[@]}"
"""


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["va"], ["validate"]),
        (["d"], ["diff"]),
        (["ranges", "lo"], ["lookup"]),
        (["validate", "--fo"], ["--format"]),
        (["validate", "--format", ""], ["text", "json"]),
        (["csp", "check", "--js"], ["--json"]),
        (["completion", ""], ["bash", "zsh"]),
    ],
)
def test_bash_completes_commands_options_and_choices(tmp_path: Path, words, expected) -> None:
    script = _script(tmp_path, "bash")
    result = subprocess.run(
        [_shell("bash"), "-c", BASH_COMPLETE, "complete", script, "chime-egress", *words],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == expected


def test_bash_completes_the_allowlist_argument_with_file_names(tmp_path: Path) -> None:
    script = _script(tmp_path, "bash")
    (tmp_path / "allowlist-prod.yaml").write_text("")
    result = subprocess.run(
        [
            _shell("bash"),
            "-c",
            BASH_COMPLETE,
            "complete",
            script,
            "chime-egress",
            "validate",
            str(tmp_path / "allowlist-p"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.stdout.split() == [str(tmp_path / "allowlist-prod.yaml")]


# zsh completes only inside its line editor: drive an interactive zsh through a pseudo-terminal
# (zsh's own zpty module), type a partial line and a TAB, and read what the line became.
ZSH_COMPLETE = r"""
zmodload zsh/zpty
zpty z 'zsh -f -i'
zpty -w z "PS1='%% '; fpath=($1 \$fpath); autoload -U compinit; compinit -u -D; echo READY"
zpty -r z line '*READY*'
zpty -w -n z "$2"$'\t'
local all=""
for i in {1..50}; do
  if zpty -r -t z chunk; then all+=$chunk; fi
  [[ $all == *"$3"* ]] && break
  sleep 0.1
done
zpty -d z
print -r -- "$all"
"""


@pytest.mark.parametrize(
    ("typed", "completed"),
    [
        ("chime-egress va", "chime-egress validate"),
        ("chime-egress ranges lo", "chime-egress ranges lookup"),
        # One match with a description: zsh lists it under the line.
        ("chime-egress diff --for", "--format  -- stdout format"),
        ("chime-egress completion z", "chime-egress completion zsh"),
    ],
)
def test_zsh_completes_commands_and_options(tmp_path: Path, typed: str, completed: str) -> None:
    script = _script(tmp_path, "zsh")
    result = subprocess.run(
        [_shell("zsh"), "-f", "-c", ZSH_COMPLETE, "zsh", str(script.parent), typed, completed],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed in result.stdout, result.stdout[-500:]
