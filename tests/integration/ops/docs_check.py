#!/usr/bin/env python3
"""docs_check.py - keep the operator documents in step with the binaries.

    docs_check.py HSBUSD HSBUSCTL SRCDIR [--write]

Generated parts (checked, or rewritten with --write):
  docs/hsbusd.conf.example        the whole file: `hsbusd --print-config`
  docs/hsbusd.conf.5              the KEYS part: every section and key, default, description
  docs/operations.md              the command list: `hsbusctl help --markdown`
  docs/hsbusctl.1                 the COMMANDS part: the same rows as roff
Each generated part sits between BEGIN/END marker comments, so the prose around it stays
hand-written. Exit 0 when everything is current, 1 (with a diff) when not.
"""
import difflib
import re
import subprocess
import sys


def run(*argv):
    return subprocess.run(argv, check=True, stdout=subprocess.PIPE, text=True).stdout


def roff_escape(s):
    s = s.replace("\\", "\\e")
    if s.startswith(".") or s.startswith("'"):
        s = "\\&" + s
    return s


def parse_config(text):
    """[(section, [(key, value, description)])] from --print-config output."""
    sections = []
    desc = []
    for line in text.splitlines():
        m = re.match(r"^\[(.+)\]$", line)
        if m:
            sections.append((m.group(1), []))
            desc = []
        elif line.startswith("#"):
            desc.append(line[1:].strip())
        elif "=" in line and sections:
            key, _, value = line.partition("=")
            sections[-1][1].append((key.strip(), value.strip(), " ".join(desc)))
            desc = []
        else:
            desc = []
    return sections


def conf_keys_roff(sections):
    out = []
    for name, keys in sections:
        shown = "agent.NAME" if name.startswith("agent.") else name
        out.append(".SS [%s]" % shown)
        if name.startswith("agent."):
            out.append("One section per agent (the embedded defaults define [agent.echo]). Any")
            out.append("per-agent key of [bus], from queue_max_msgs down, may be set here for")
            out.append("this agent alone; other unknown keys are the agent's own options.")
        for key, value, desc in keys:
            out.append(".TP")
            value = value.replace("\\", "\\e").replace('"', "\\(dq")
            out.append('.B "%s = %s"' % (key, value))
            out.append(roff_escape(desc if desc else "(undocumented)"))
    return "\n".join(out) + "\n"


def commands_roff(markdown):
    out = []
    for line in markdown.splitlines():
        m = re.match(r"^\| `hsbusctl (.+?)` \| (yes)? \| (.*) \|$", line)
        if not m:
            continue
        usage, live, text = m.group(1), m.group(2), m.group(3)
        out.append(".TP")
        out.append(".B %s" % roff_escape(usage))
        out.append(roff_escape(text + (" (live view: --watch)" if live else "")))
    return "\n".join(out) + "\n"


def splice(path, begin, end, body, write):
    """Check (or replace) the text between the begin and end marker lines of path."""
    with open(path) as f:
        text = f.read()
    b = text.find(begin)
    e = text.find(end)
    if b < 0 or e < 0 or e < b:
        print("%s: markers %r ... %r missing" % (path, begin, end))
        return False
    b += len(begin) + 1  # after the marker line's newline
    current = text[b:e]
    if current == body:
        return True
    if write:
        with open(path, "w") as f:
            f.write(text[:b] + body + text[e:])
        print("rewrote", path)
        return True
    print("%s is out of date (regenerate: docs_check.py ... --write):" % path)
    sys.stdout.writelines(difflib.unified_diff(current.splitlines(True), body.splitlines(True),
                                               "current", "generated"))
    return False


def main():
    if len(sys.argv) < 4:
        print(__doc__)
        return 2
    hsbusd, hsbusctl, src = sys.argv[1:4]
    write = "--write" in sys.argv[4:]
    ok = True

    config = run(hsbusd, "--print-config")
    example = src + "/docs/hsbusd.conf.example"
    try:
        with open(example) as f:
            current = f.read()
    except FileNotFoundError:
        current = ""
    if current != config:
        if write:
            with open(example, "w") as f:
                f.write(config)
            print("rewrote", example)
        else:
            print("%s differs from `hsbusd --print-config`:" % example)
            sys.stdout.writelines(difflib.unified_diff(current.splitlines(True),
                                                       config.splitlines(True), example,
                                                       "hsbusd --print-config"))
            ok = False

    sections = parse_config(config)
    ok &= splice(src + "/docs/hsbusd.conf.5", '.\\" BEGIN KEYS', '.\\" END KEYS',
                 conf_keys_roff(sections), write)

    markdown = run(hsbusctl, "help", "--markdown")
    ok &= splice(src + "/docs/operations.md", "<!-- BEGIN COMMANDS -->", "<!-- END COMMANDS -->",
                 markdown, write)
    ok &= splice(src + "/docs/hsbusctl.1", '.\\" BEGIN COMMANDS', '.\\" END COMMANDS',
                 commands_roff(markdown), write)

    # Every key is documented (a belt to the braces above: names a reviewer can grep).
    with open(src + "/docs/hsbusd.conf.5") as f:
        man = f.read()
    for name, keys in sections:
        for key, _, _ in keys:
            if ('.B "%s = ' % key) not in man:
                print("docs/hsbusd.conf.5 does not document %s.%s" % (name, key))
                ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
