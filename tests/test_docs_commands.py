"""Every command the README, RESULTS.md and docs/ show still parses: its script exists, its flags
are the script's flags, its `--config` file and preset load and take its `--config.*` overrides,
and its `--methods` are known presets. The runs themselves are hours long; what goes stale
silently is the command line, which this checks in a few seconds per script."""
import glob
import json
import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md", "RESULTS.md"] + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
_COMMAND = re.compile(r"(?:taskset -c [\d,]+ )?(?:python3?|bash) ((?:experiments|benchmarks|examples)/[\w./-]+)([^\n`|;&#]*)")


def _code(text: str):
    """The code of a markdown text: fenced blocks line by line (continuations joined), inline code
    spans with their line breaks as spaces."""
    for block in re.findall(r"```[^\n]*\n(.*?)```", text, re.S):
        yield from block.replace("\\\n", " ").splitlines()
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    for span in re.findall(r"`([^`]+)`", prose):
        yield " ".join(span.split())


def _commands() -> dict:
    """{script: [(doc, argv)]} of the commands in the docs' code; a bare mention (no arguments) or
    a command with a placeholder (<...>, ..., $VAR) is left out."""
    out = {}
    for doc in DOCS:
        for line in _code(open(os.path.join(ROOT, doc), encoding="utf-8").read()):
            for m in _COMMAND.finditer(line):
                script, rest = m.group(1), m.group(2)
                if re.search(r"<\w|\.\.\.|\$\{?\w", rest):
                    continue
                try:
                    argv = shlex.split(rest)
                except ValueError:
                    continue
                if argv or script.endswith(".sh"):
                    out.setdefault(script, []).append((doc, argv))
    return out


COMMANDS = _commands()

# One process per absl script: load its flags once, then parse every documented argv with them
# (config files load and apply their overrides at parse time).
_ABSL_CHECK = r"""
import importlib.util, json, os, sys
sys.path.insert(0, ".")
from absl import flags
script, cases = sys.argv[1], json.loads(sys.argv[2])
spec = importlib.util.spec_from_file_location("doc_script", script)
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
from configs import methods as methods_lib
bad = []
for doc, argv in cases:
    # a child per command: absl keeps state from one parse to the next (config overrides)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        msg = ""
        try:
            sys.argv = [script] + argv          # config flags read their overrides from sys.argv
            flags.FLAGS(sys.argv)
            if "methods" in flags.FLAGS and flags.FLAGS["methods"].present:
                methods_lib.resolve(flags.FLAGS.methods)
        except BaseException as e:
            msg = f"{doc}: {script} {' '.join(argv)}\n    {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        os.write(w, msg.encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        msg = f.read()
    os.waitpid(pid, 0)
    if msg:
        bad.append(msg)
print(json.dumps(bad))
"""


def _is_absl(script: str) -> bool:
    return "from absl import" in open(os.path.join(ROOT, script), encoding="utf-8").read()


def test_the_docs_show_commands_of_every_kind():
    assert len(sum(COMMANDS.values(), [])) >= 40
    assert {"experiments/train.py", "experiments/compare.py", "experiments/evaluate.py"} <= set(COMMANDS)


@pytest.mark.parametrize("script", sorted(COMMANDS))
def test_documented_commands_parse(script):
    path = os.path.join(ROOT, script)
    assert os.path.exists(path), f"{COMMANDS[script][0][0]} runs {script}, which does not exist"
    cases = COMMANDS[script]
    if script.endswith(".sh"):
        run = subprocess.run(["bash", "-n", path], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        return
    if _is_absl(script):
        run = subprocess.run([sys.executable, "-c", _ABSL_CHECK, script, json.dumps(cases)], capture_output=True,
                             text=True, cwd=ROOT, timeout=600)
        assert run.returncode == 0, run.stderr[-3000:]
        bad = json.loads(run.stdout.strip().splitlines()[-1])
        assert not bad, "documented commands that no longer parse:\n" + "\n".join(bad)
        return
    # argparse scripts: every documented option is one the script's --help lists
    run = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    known = set(re.findall(r"(--[\w-]+)", run.stdout))
    for doc, argv in cases:
        used = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
        assert used <= known, f"{doc}: {script} {' '.join(argv)} uses {sorted(used - known)}; --help lists {sorted(known)}"
