"""tools/analysis/recipe_table.py: the recipe table in docs/recipes.md is the script's output
for the current configs (so it cannot go stale), and the script reads the configs right."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def tool():
    spec = importlib.util.spec_from_file_location(
        'dat_mm_recipe_table', ROOT / 'tools' / 'analysis' / 'recipe_table.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_table_is_the_scripts_output(tool):
    configs = tool.recipe_configs()
    names = {str(p.relative_to(ROOT / 'configs')) for p in configs}
    # 26 published recipes and 8 for heads without a published DAT++ model
    assert len(tool.published_recipe_configs()) == 26
    assert len(configs) == 34 and not any(n.startswith(('quickstart', '_base_')) or
                                          '/_base_/' in n for n in names)
    expected = tool.table(configs)
    documented = tool.generated_block(ROOT / 'docs' / 'recipes.md')
    assert documented == expected, (
        'docs/recipes.md is out of date: run .venv/bin/python tools/analysis/recipe_table.py '
        '--write docs/recipes.md')


def test_unpublished_heads_are_the_dino_and_mask2former_configs(tool):
    """The configs left out of the model index (no published weights) are exactly those of
    DINO and Mask2Former, whatever their file names say."""
    from mmengine.config import Config
    for path in tool.recipe_configs():
        if path.parent.name == 'mmpretrain':
            assert not path.name.startswith(tool.UNPUBLISHED_HEADS)
            continue
        model = Config.fromfile(str(path)).model
        head = model.type if model.type != 'EncoderDecoder' else model.decode_head.type
        assert path.name.startswith(tool.UNPUBLISHED_HEADS) == (
            head in ('DINO', 'Mask2Former', 'Mask2FormerHead')), path


def _row(tool, config):
    return dict(zip(tool.COLUMNS, tool.row(ROOT / 'configs' / config)))


def test_rows_state_the_published_settings(tool):
    upernet_b = _row(tool, 'mmseg/upernet_dat_b_pp.py')
    assert (upernet_b['lr'], upernet_b['precision'], upernet_b['warm-up']) == (
        '6e-5', 'fp32', '1500 it from 1e-6x')
    assert upernet_b['schedule'] == '160k it, poly 1 to 0'
    assert upernet_b['no weight decay on'] == (
        'backbone norm layers, `rpe_table`, `relative_position_bias_table`')
    assert _row(tool, 'mmseg/upernet_dat_t_pp.py')['precision'] == 'fp16 (AMP)'

    retina = _row(tool, 'mmdet/retinanet_dat_t_pp_1x.py')
    assert (retina['lr'], retina['total batch (per GPU x GPUs)'], retina['test scale']) == (
        '2e-4', '64 (2 x 32)', '1333x800')
    assert 'rpb' not in retina['no weight decay on']

    v1_base = _row(tool, 'mmpretrain/dat_b_in1k.py')
    assert (v1_base['warm-up'], v1_base['schedule']) == (
        '50 ep from 1.25e-3x', '300 ep, cosine to 0.0125x')
    assert v1_base['precision'] == 'fp16 (AMP)'
    assert v1_base['no weight decay on'] == (
        '1-D params, biases, norm layers, `relative_position_bias_table`, `rpe_table`')
    assert v1_base['test scale'] == '256x256 > crop 224'

    # the heads' recipes: the backbone's lr multiplier, a single scheduler given as a dict,
    # shorter-side lengths given as plain numbers
    m2f = _row(tool, 'mmdet/mask2former_dat_t_pp.py')
    assert (m2f['lr'], m2f['schedule']) == ('1e-4 (backbone x0.1)',
                                            '368750 it, x0.1 at 327778, 355092')
    m2f_seg = _row(tool, 'mmseg/mask2former_dat_t_pp.py')
    assert m2f_seg['training augmentation'] == (
        'short side 256-1024, crop 512x512, flip, photometric')
    dino = _row(tool, 'mmdet/dino_4scale_dat_s_pp_24e.py')
    assert (dino['schedule'], dino['drop_path'], dino['no weight decay on']) == (
        '24 ep, x0.1 at 20', '0.3',
        'backbone norm layers, `rpe_table`, `relative_position_bias_table`')


def test_tta_column_states_each_configs_test_time_augmentation(tool):
    """Every ADE20K config has the authors' aug-test; RetinaNet mmdet's 3 scales + flip; the
    mask models and DINO none; the classifiers flip (read from each config's tta_pipeline)."""
    column = tool.COLUMNS.index('test-time augmentation (--tta)')
    rows = [line.split(' | ') for line in
            tool.generated_block(ROOT / 'docs' / 'recipes.md').splitlines()[2:]]
    tta = {cells[0].strip('| `'): cells[column].rstrip(' |') for cells in rows}
    assert len(tta) == 34
    for name, value in tta.items():
        if name.startswith('mmseg/'):
            assert value == '6 scales (0.5-1.75 of 2048x512) + flip (SegTTAModel)', name
        elif name.startswith('mmdet/retinanet'):
            assert value == ('3 scales (1333x800, 666x400, 2000x1200) + flip (DetTTAModel)'), name
        elif name.startswith('mmdet/dino'):
            assert value == 'none', name
        elif name.startswith('mmdet/'):
            assert value == "none (mmdet's DetTTAModel merges no masks)", name
        else:
            assert value == 'flip (AverageClsScoreTTA)', name


def test_numbers_are_written_as_in_the_recipes(tool):
    assert [tool.num(x) for x in (0.05, 4e-4, 5e-7 / 4e-4, 2e-7 / 2e-5, 0, 1e-8, 0.8)] == [
        '0.05', '4e-4', '1.25e-3', '0.01', '0', '1e-8', '0.8']


def test_write_replaces_only_the_marked_block(tool, tmp_path):
    doc = tmp_path / 'doc.md'
    doc.write_text(f'before\n{tool.BEGIN}\nold table\n{tool.END}\nafter\n')
    tool.write(doc, '| new |\n')
    assert doc.read_text() == f'before\n{tool.BEGIN}\n| new |\n{tool.END}\nafter\n'
    assert tool.generated_block(doc) == '| new |\n'
    doc.write_text('no markers\n')
    with pytest.raises(ValueError, match='marker'):
        tool.write(doc, '| new |\n')
