"""Check that a constraints file (.ci/lowest.txt) pins every dependency of the installed
circus-plugins, its extras' included (not those of ``test`` and ``docs``), to the lower
bound the package gives it, and that the versions installed are those: so that the tox env
that runs the suite with it tests the bounds the package claims. Usage::

    python .ci/check_lowest.py .ci/lowest.txt
"""
import sys
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

OWN_ONLY = {'test', 'docs'}  # extras for working on the project, not for its users


def main(constraints):
    pins = {}
    with open(constraints) as lines:
        for line in lines:
            line = line.split('#', 1)[0].strip()
            if line:
                pin = Requirement(line)
                (spec,) = pin.specifier
                pins[canonicalize_name(pin.name)] = Version(spec.version)
    extras = set(metadata.metadata('circus-plugins').get_all('Provides-Extra') or ())
    problems = []
    needed = set()
    for text in metadata.requires('circus-plugins') or ():
        req = Requirement(text)
        if req.marker is not None and not any(
                req.marker.evaluate({'extra': extra}) for extra in extras - OWN_ONLY):
            continue
        name = canonicalize_name(req.name)
        needed.add(name)
        lower = [Version(spec.version) for spec in req.specifier if spec.operator == '>=']
        if not lower:
            problems.append('%s: no lower bound (%s)' % (req.name, text))
        elif name not in pins:
            problems.append('%s: not pinned in %s' % (req.name, constraints))
        elif pins[name] != lower[0]:
            problems.append('%s: pinned to %s, but the bound is >=%s'
                            % (req.name, pins[name], lower[0]))
    for name in sorted(set(pins) - needed):
        problems.append('%s: pinned, but no dependency of circus-plugins' % name)
    for name in sorted(set(pins) & needed):
        installed = Version(metadata.version(name))
        if installed != pins[name]:
            problems.append('%s: %s installed, not %s' % (name, installed, pins[name]))
        else:
            print('%s %s' % (name, installed))
    for problem in problems:
        print('check_lowest: %s' % problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1]))
