"""A targetcli stand-in for the targetcli backend's contract test (tests/lio/targetcli.rs).

targetcli joins its arguments into one command line and parses it with configshell-fb's
pyparsing grammar (ConfigShell.__init__ in configshell/shell.py). This stand-in parses each
command line the way every known release of that grammar does, and records what each
release would read: the node path, the command, the positional and the keyword
parameters. It changes nothing; `saveconfig FILE` writes an empty configuration.

Readers (one per grammar):
  oldest     positional words of ASCII letters, digits and _\\+/.<>()~@:-%]
  brackets   the same and [ (node paths take [] too)
  1.1.28     the same and ?;&*$!#,= (Debian 12's python3-configshell-fb)
  targetclid 1.1.28 behind targetclid (auto_use_daemon): the line is sent as
             "cd /%<line>" and split into commands at every '%'
  installed  the configshell-fb importable here, parsed by the real ConfigShell

Usage:
  targetcli-standin.py LOG ARGS...     append {"argv", "readings"} as a JSON line to LOG
  targetcli-standin.py --lines         read command lines on stdin, print one JSON
                                       object of readings per line
"""

import json
import sys

from pyparsing import Optional, OneOrMore, Group, Regex, Suppress, Word, alphanums

# The positional-word sets, in the order the releases grew them (the backslash is in
# every one through the invalid escape '\+' of the original source).
WORDS = {
    "oldest": "_\\+/.<>()~@:-%]",
    "brackets": "_\\+/.<>()~@:-%[]",
    "1.1.28": "?;&*$!#,=_\\+/.<>()~@:-%[]",
}
NODE_PATHS = {
    "oldest": r"([A-Za-z0-9:_.]|-)*/([A-Za-z0-9:_./]|-)*",
    "brackets": r"([A-Za-z0-9:_.\[\]]|-)*/([A-Za-z0-9:_.\[\]/]|-)*",
    "1.1.28": r"([A-Za-z0-9:_.\[\]]|-)*/([A-Za-z0-9:_.\[\]/]|-)*",
}


def grammar(words, node_path):
    """Path, command and parameters as configshell-fb builds them."""
    var = Word(alphanums + words)
    keyword = Word(alphanums + "_-")
    kparam = Group(keyword + Suppress("=") + Optional(var, default=""))("kparams*")
    pparam = var("pparams*")
    path = (Regex(r"@([A-Za-z0-9:_.]|-)+") | Regex(node_path) | ".." | "." | "*")("path")
    command = Word(alphanums + "_")("command")
    return Optional(path) + Optional(command) + Optional(OneOrMore(kparam | pparam))


def reading(parser, line):
    # parseString without parseAll, as configshell-fb: what does not parse is dropped.
    r = parser.parseString(line)
    return {
        "path": r.get("path", ""),
        "command": r.get("command", ""),
        "pparams": [p for p in r.get("pparams", [])],
        "kparams": {k: v for k, v in r.get("kparams", [])},
    }


def installed():
    try:
        from configshell_fb import ConfigShell
    except ImportError:
        return None
    try:
        shell = ConfigShell()
    except Exception as e:  # an old release that cannot start here: say so, go on
        print("targetcli-standin: installed configshell-fb unusable: %r" % e, file=sys.stderr)
        return None

    def read(line):
        _, path, command, pparams, kparams = shell._parse_cmdline(line)
        return {"path": path, "command": command, "pparams": pparams, "kparams": kparams}

    return read


READERS = {name: grammar(WORDS[name], NODE_PATHS[name]) for name in WORDS}
INSTALLED = installed()


def readings(line):
    out = {name: reading(p, line) for name, p in READERS.items()}
    commands = ("cd /%" + line).split("%")
    out["targetclid"] = reading(READERS["1.1.28"], commands[1] if len(commands) > 1 else "")
    if INSTALLED is not None:
        out["installed"] = INSTALLED(line)
    return out


def main():
    if sys.argv[1:2] == ["--lines"]:
        for line in sys.stdin.read().split("\n"):
            if line:
                print(json.dumps(readings(line)))
        return 0
    log, args = sys.argv[1], sys.argv[2:]
    line = " ".join(args)
    r = readings(line)
    with open(log, "a") as f:
        f.write(json.dumps({"argv": args, "readings": r}) + "\n")
    first = r["oldest"]
    if first["command"] == "saveconfig" and first["pparams"]:
        with open(first["pparams"][0], "w") as f:
            json.dump({"fabric_modules": [], "storage_objects": [], "targets": []}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
