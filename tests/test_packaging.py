"""The package as users install it: the model index agrees with the configs and the documented
published results; ``setup.py sdist``, a wheel built from that sdist and ``pip wheel .`` work;
the installed wheel (in a new virtualenv, no checkout on the path) carries the configs, tools
and model index where mim and mmengine's ``dat_mm::`` lookup find them."""
import os
import re
import shutil
import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tools' / 'analysis'))
from recipe_table import published_recipe_configs, recipe_configs  # noqa: E402

sys.path.pop(0)


def _models():
    index = yaml.safe_load((ROOT / 'model-index.yml').read_text())
    out = []
    for path in index['Import']:
        meta = yaml.safe_load((ROOT / path).read_text())
        collections = {c['Name'] for c in meta['Collections']}
        for model in meta['Models']:
            assert model['In Collection'] in collections, (path, model['Name'])
            out.append(model)
    return out


def test_model_index_lists_every_recipe_config_once():
    """Every config of a published model, once; the configs for heads without a published
    DAT++ model (no weights) are not in the index."""
    models = _models()
    configs = [m['Config'] for m in models]
    assert sorted(configs) == sorted(str(p.relative_to(ROOT))
                                     for p in published_recipe_configs())
    assert len(published_recipe_configs()) < len(recipe_configs())
    for m in models:
        assert m['Name'] == Path(m['Config']).stem
        assert re.fullmatch(r'https://cloud\.tsinghua\.edu\.cn/f/[0-9a-f]{20}/\?dl=1',
                            m['Weights']), m['Weights']
    weights = [m['Weights'] for m in models]
    assert len(set(weights)) == len(weights)


def _documented_results():
    """config -> the published numbers of docs/recipes.md's tables (last column; the
    classifier table: top-1), and config -> published file name."""
    results, files = {}, {}
    for line in (ROOT / 'docs' / 'recipes.md').read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        if not cells or not re.fullmatch(r'`configs/(mmdet|mmseg|mmpretrain)/\w+\.py`',
                                         cells[0]):
            continue
        config = cells[0].strip('`')
        if config.startswith('configs/mmpretrain'):
            if len(cells) == 3:
                files[config] = cells[1].strip('`')
                results[config] = [float(cells[2])]
        elif re.fullmatch(r'[\d.]+( / [\d.]+)?', cells[-1]):
            results[config] = [float(x) for x in cells[-1].split(' / ')]
    return results, files


def test_model_index_results_are_the_documented_published_ones():
    results, files = _documented_results()
    models = _models()
    assert {m['Config'] for m in models} == set(results)
    for m in models:
        metrics = [v for r in m['Results'] for v in r['Metrics'].values()]
        assert metrics == results[m['Config']], m['Name']
        if m['Config'] in files:
            assert m['Metadata']['Published file'] == files[m['Config']]


def _copy_checkout(dst: Path) -> Path:
    """The files git tracks (and untracked ones it does not ignore), as a clean source tree."""
    listed = subprocess.run(['git', 'ls-files', '-co', '--exclude-standard'], cwd=ROOT,
                            check=True, capture_output=True, text=True).stdout.split('\n')
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    return dst


def _run(*cmd, cwd, env=None):
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True,
                          env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    """sdist from a clean tree, a wheel built from that sdist, and ``pip wheel .``."""
    tmp = tmp_path_factory.mktemp('packaging')
    src = _copy_checkout(tmp / 'src')
    _run(sys.executable, 'setup.py', '-q', 'sdist', '-d', tmp / 'sdist', cwd=src)
    (sdist,) = (tmp / 'sdist').glob('dat_mm-*.tar.gz')
    pip_wheel = [sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps',
                 '--no-build-isolation', '--disable-pip-version-check']
    _run(*pip_wheel, '-w', tmp / 'from_sdist', sdist, cwd=tmp)
    _run(*pip_wheel, '-w', tmp / 'from_tree', '.', cwd=src)
    (from_sdist,) = (tmp / 'from_sdist').glob('dat_mm-*.whl')
    (from_tree,) = (tmp / 'from_tree').glob('dat_mm-*.whl')
    return tmp, sdist, from_sdist, from_tree


@pytest.mark.slow
def test_sdist_and_wheels_carry_what_an_install_needs(built):
    _, sdist, from_sdist, from_tree = built
    with tarfile.open(sdist) as tf:
        names = {n.split('/', 1)[1] for n in tf.getnames() if '/' in n}
    for needed in ('requirements/runtime.txt', 'requirements/openmmlab.txt', 'LICENSE',
                   'CITATION.cff', 'model-index.yml', 'configs/mmdet/cascade_dat_s_pp.py',
                   'tools/train.py', 'setup.py', 'MANIFEST.in'):
        assert needed in names, needed
    assert not any(n.startswith('tools/install/') for n in names)
    expected = {'dat_mm/.mim/' + str(p.relative_to(ROOT)) for p in recipe_configs()} | {
        'dat_mm/.mim/model-index.yml', 'dat_mm/.mim/configs/mmdet/metafile.yml',
        'dat_mm/.mim/tools/train.py', 'dat_mm/.mim/tools/test.py',
        'dat_mm/.mim/tools/dist_train.sh', 'dat_mm/.mim/configs/mmdet/_base_/dat_adamw.py',
        'dat_mm/.mim/tools/model_converters/dat_official_to_mm.py', 'dat_mm/checkpoint.py'}
    for wheel in (from_sdist, from_tree):
        with zipfile.ZipFile(wheel) as zf:
            names = set(zf.namelist())
            meta = zf.read(next(n for n in names if n.endswith('.dist-info/METADATA'))).decode()
        assert expected <= names, sorted(expected - names)
        assert not any('/.mim/tools/install/' in n or n.endswith('run_tests.sh')
                       for n in names)
        assert any(n.endswith('.dist-info/licenses/LICENSE') for n in names)
        for bound in ('torch>=2.1', 'mmengine<1.0,>=0.10.0',
                      'mmdet<3.4.0,>=3.3.0; extra == "openmmlab"'):
            assert f'Requires-Dist: {bound}' in meta, bound


LOOKUP = r'''
import os, sys
import dat_mm
from mmengine.config import Config
from mmengine.hub import get_config
from mmengine.utils import get_installed_path
pkg = get_installed_path('dat_mm')
assert os.path.dirname(dat_mm.__file__) == pkg, (dat_mm.__file__, pkg)
assert not pkg.startswith(sys.argv[1]), pkg
mim = os.path.join(pkg, '.mim')
assert os.path.isfile(os.path.join(mim, 'tools', 'train.py'))
cfg = get_config('dat_mm::mmdet/cascade_dat_s_pp.py', pretrained=True)
assert cfg.model.backbone.arch == 'small++', cfg.model.backbone
print('weights', cfg.model_path)
with open('user_config.py', 'w') as f:
    f.write("_base_ = ['dat_mm::mmseg/upernet_dat_t_pp.py']\n"
            "model = dict(backbone=dict(drop_path_rate=0.1))\n")
user = Config.fromfile('user_config.py')
assert user.model.backbone.type == 'DAT' and user.model.backbone.drop_path_rate == 0.1
assert user.model.decode_head.type == 'UPerHead'
print('ok', pkg)
'''


@pytest.mark.slow
def test_installed_wheel_finds_its_configs_without_a_checkout(built, tmp_path):
    """A new virtualenv that sees the project environment's packages (torch, mmengine, mmdet,
    mmseg) through a .pth line, but not the checkout's editable dat_mm (.pth files of that
    directory are not processed): the wheel's dat_mm is the one imported."""
    _, _, from_sdist, _ = built
    env_dir = tmp_path / 'venv'
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / 'bin' / 'python'
    site = _run(py, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])',
                cwd=tmp_path).strip()
    stack = subprocess.run([sys.executable, '-c', 'import sysconfig; '
                            'print(sysconfig.get_paths()["purelib"])'],
                           capture_output=True, text=True, check=True).stdout.strip()
    Path(site, 'project_stack.pth').write_text(stack + '\n')
    _run(py, '-m', 'pip', 'install', '-q', '--no-deps', '--no-index',
         '--disable-pip-version-check', from_sdist, cwd=tmp_path)
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    out = _run(py, '-c', LOOKUP, ROOT, cwd=tmp_path, env=env)
    assert 'ok ' + site in out, out
    assert 'weights https://cloud.tsinghua.edu.cn/f/17d84d4f5ae2457285af/?dl=1' in out, out
