"""The package's tree: which module imports which, and that no import goes round in a circle."""
import ast
import pathlib

import circus_plugins

PACKAGE = pathlib.Path(circus_plugins.__file__).parent


def _module_name(path: pathlib.Path) -> str:
    parts = ['circus_plugins'] + list(path.relative_to(PACKAGE).with_suffix('').parts)
    if parts[-1] == '__init__':
        parts.pop()
    return '.'.join(parts)


def _imports(path: pathlib.Path, modules: set) -> set:
    """The package's modules that ``path`` imports, at the top or inside a function."""
    name = _module_name(path)
    package = name if path.name == '__init__.py' else name.rpartition('.')[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split('.')
                base = base[:len(base) - node.level + 1]
                target = '.'.join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ''
            submodules = {'%s.%s' % (target, alias.name) for alias in node.names}
            found.update(submodules & modules)
            # ``from . import _bus`` needs the module, not what its package defines.
            if submodules - modules:
                found.add(target)
    return {module for module in found if module in modules and module != name}


def import_graph() -> dict:
    paths = sorted(PACKAGE.rglob('*.py'))
    modules = {_module_name(path) for path in paths}
    return {_module_name(path): _imports(path, modules) for path in paths}


def find_circle(graph: dict) -> list:
    """A list of modules that import each other in a circle, or ``[]``."""
    done, path = set(), []

    def visit(module):
        if module in path:
            return path[path.index(module):] + [module]
        if module in done:
            return []
        path.append(module)
        for target in sorted(graph[module]):
            circle = visit(target)
            if circle:
                return circle
        path.pop()
        done.add(module)
        return []

    for module in sorted(graph):
        circle = visit(module)
        if circle:
            return circle
    return []


def test_the_graph_sees_imports_of_every_form():
    graph = import_graph()
    assert 'circus_plugins.plugin' in graph['circus_plugins._loader']   # from .plugin import
    assert 'circus_plugins._bus' in graph['circus_plugins.plugin']      # from . import _bus
    assert 'circus_plugins.plugin' in graph['circus_plugins.alerts']     # from ..plugin import
    assert 'circus_plugins.alerts._grouping' in graph['circus_plugins.alerts']


def test_find_circle_finds_a_circle():
    assert find_circle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
    assert find_circle({'a': {'b'}, 'b': set(), 'c': {'a', 'b'}}) == []


def test_no_module_imports_itself_through_others():
    assert find_circle(import_graph()) == []


def test_the_core_imports_no_plugin_family():
    """The base and its parts never depend on a plugin built on them."""
    core = ['plugin', 'config', 'events', 'errors', 'periodic', '_client', '_bus', '_log',
            '_redact', '_endpoint']
    families = ('circus_plugins.alerts', 'circus_plugins.prometheus',
                'circus_plugins.autoscaler', 'circus_plugins.event_logger')
    graph = import_graph()
    for module in core:
        assert not [target for target in graph['circus_plugins.' + module]
                    if target.startswith(families)], module


def test_each_family_keeps_its_parts_in_its_own_package():
    """A family's private parts live beside it, and only it imports them."""
    graph = import_graph()
    for importer, targets in graph.items():
        for target in targets:
            package, _, last = target.rpartition('.')
            if last.startswith('_') and package != 'circus_plugins':
                assert importer.startswith(package), (importer, target)
