"""The dependency graph between dat_mm's packages: what docs/architecture.md lists, without
cycles, with ``ops`` a leaf."""
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / 'dat_mm'


def _unit(module: str) -> str:
    """The package a module belongs to: ``models.layers`` and ``models.backbones`` count
    separately, every other first-level package or module of dat_mm as one."""
    parts = module.split('.')[1:]
    if not parts:
        return 'dat_mm'
    if parts[0] == 'models' and len(parts) > 1 and (PACKAGE / 'models' / parts[1]).is_dir():
        return f'models.{parts[1]}'
    return parts[0]


def _exists(module: str) -> bool:
    path = ROOT.joinpath(*module.split('.'))
    return path.is_dir() or path.with_suffix('.py').is_file()


def _imports(path: Path):
    """dat_mm modules imported by the file, module-level and local imports alike."""
    package = path.relative_to(ROOT).parent.parts  # what relative imports start from
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[:len(package) - node.level + 1])
                target = '.'.join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ''
            names = [target] + [f'{target}.{a.name}' for a in node.names]
        else:
            continue
        yield from (n for n in names if n.split('.')[0] == 'dat_mm' and _exists(n))


def code_graph():
    edges = {}
    for path in sorted(PACKAGE.rglob('*.py')):
        if '.mim' in path.parts:  # configs and tools put there by setup.py
            continue
        rel = path.relative_to(ROOT).with_suffix('').parts
        source = _unit('.'.join(rel if rel[-1] != '__init__' else rel[:-1]))
        for target in _imports(path):
            if _unit(target) != source:
                edges.setdefault(source, set()).add(_unit(target))
    return edges


def documented_graph():
    text = (ROOT / 'docs' / 'architecture.md').read_text()
    block = re.search(r'<!-- package-graph:start -->\s*```text\n(.*?)```', text, re.S)
    assert block, 'docs/architecture.md has no package-graph block'
    edges = {}
    for line in block.group(1).strip().splitlines():
        source, _, targets = line.partition(' -> ')
        edges[source.strip()] = {t.strip() for t in targets.split(',')}
    return edges


def _cycle(edges):
    """One cycle as a list of packages, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = 'open'
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 'open':
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 'done'
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_documented_graph_is_the_code_graph():
    code, doc = code_graph(), documented_graph()
    missing = sorted(f'{a} -> {b}' for a in code for b in code[a] - doc.get(a, set()))
    stale = sorted(f'{a} -> {b}' for a in doc for b in doc[a] - code.get(a, set()))
    assert not missing and not stale, (f'docs/architecture.md is out of date: imports not '
                                       f'listed {missing}; listed but absent {stale}')


def test_no_import_cycle_between_packages():
    assert _cycle(code_graph()) is None, f'import cycle: {" -> ".join(_cycle(code_graph()))}'


def test_ops_checkpoint_and_datasets_are_leaves():
    code = code_graph()
    assert {u: code.get(u) for u in ('ops', 'checkpoint', 'datasets') if code.get(u)} == {}


def test_cycle_finder_finds_a_cycle():
    assert _cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
    assert _cycle({'a': {'b'}, 'b': {'c'}}) is None
