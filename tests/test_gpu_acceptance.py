"""The GPU acceptance script (benchmarks/gpu_acceptance.py) checked without a GPU.

Its ``--dry-run`` runs every step at tiny sizes on the CPU in a subprocess (as on the GPU
machine: the repository on ``PYTHONPATH``); the tests check that every table file is written
with the rows the steps promise, that every comparison that ran passed, and that a step cut
short by its time limit still leaves a complete table (finished rows, then the ones not run).
The GPU tables themselves come from a device lease (docs/benchmarks.md).
"""
import csv
import os
import subprocess
import sys

import pytest

# two subprocess runs of the script: about 25 s on the 2-core development machine
pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CASE = '64x64x1'
NA_STAGES, DM_STAGES, FFN_STAGES = 3, 4, 4   # DAT-T++: no neighbourhood blocks in stage 3
PRECISIONS = ['fp32', 'bf16-autocast', 'fp16-autocast']
MODES = ['fwd', 'fwd+bwd']


def run_script(out, *args):
    env = dict(os.environ)
    env.pop('OUT', None)
    env['PYTHONPATH'] = REPO + (os.pathsep + env['PYTHONPATH'] if env.get('PYTHONPATH') else '')
    return subprocess.run([sys.executable, '-m', 'benchmarks.gpu_acceptance', '--dry-run',
                           '--out', str(out), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)


def read_csv(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope='module')
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('gpu_acceptance')
    proc = run_script(out)
    return proc, out


def test_dry_run_passes_and_says_where_the_tables_are(dry_run):
    proc, out = dry_run
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert f'tables in {out}' in proc.stdout
    assert 'all comparisons passed' in proc.stdout
    for name in ('summary.md', 'fast_paths.md', 'fast_paths.csv', 'backbones.md',
                 'backbones.csv', 'mmcv_ops.md'):
        assert os.path.getsize(out / name) > 0, name
    summary = (out / 'summary.md').read_text()
    assert 'verdict: all comparisons passed' in summary
    assert 'dry run' in summary


def test_fast_path_table_has_every_row_and_each_comparison_passed(dry_run):
    _, out = dry_run
    rows = read_csv(out / 'fast_paths.csv')
    groups = {}
    for r in rows:
        kind = r['path'].split(' ')[0]
        groups.setdefault(kind, []).append(r)
        assert r['case'] == CASE
        if r['precision'].startswith('fp16'):
            assert r['status'] == 'skipped (CPU dry run)', r
        elif kind == 'ConvFFN' and r['precision'].endswith('autocast'):
            assert r['status'].startswith('n/a'), r
            assert 'refuses autocast' in r['note'], r
        else:
            assert r['status'] == 'pass', r
            assert float(r['rel']) <= float(r['tolerance']), r
            assert float(r['ref_ms']) > 0 and float(r['fast_ms']) > 0, r
    combos = {(p, m) for p in PRECISIONS for m in MODES}
    assert set(groups) == {'DAT-T++', 'neighborhood', 'deformable', 'ConvFFN'}
    assert sorted((r['precision'], r['mode']) for r in groups['DAT-T++']) == sorted(combos)
    assert len(groups['neighborhood']) == NA_STAGES * len(combos)
    # the chunked path as chosen, and with the grid_sample bias instead of the separable one
    dm_paths = ['deformable (chunked vs reference)', 'deformable (chunked-grid vs reference)']
    assert len(groups['deformable']) == len(dm_paths) * DM_STAGES * len(combos)
    assert {(r['path'], r['where'].split(' ')[1], r['precision'], r['mode'])
            for r in groups['deformable']} == {
        (path, str(s), p, m) for path in dm_paths for s in range(DM_STAGES) for p, m in combos}
    ffn = {(r['where'].split(' ')[1], r['precision']) for r in groups['ConvFFN']}
    assert ffn == {(str(s), p) for s in range(FFN_STAGES)
                   for p in PRECISIONS + ['bf16', 'fp16']}
    assert len(groups['ConvFFN']) == len(ffn)
    for r in groups['DAT-T++']:
        if r['status'] == 'pass':
            assert 'neighborhood=tiled' in r['note'] and 'deformable=chunked' in r['note'], r
    for r in groups['ConvFFN']:
        if r['status'] == 'pass':
            assert 'GeluConv1x1' in r['note'], r


def test_backbone_table_has_both_models_for_every_case(dry_run):
    _, out = dry_run
    rows = read_csv(out / 'backbones.csv')
    cases = ['64x64x1:infer', '64x64x1:train', '32x64x1:infer', '32x64x1:train']
    assert [r['case'] for r in rows] == [c for c in cases for _ in range(2)]
    for r in rows:
        assert r['status'] == 'ok', r
        assert float(r['median_ms']) > 0, r
    dat = [r for r in rows if r['model'].startswith('DAT-T++')]
    swin = [r for r in rows if r['model'].startswith('Swin-T')]
    assert len(dat) == len(swin) == len(cases)
    assert all(float(r['time_vs_swin'].split()[0]) > 0 for r in dat)
    assert all(r['note'].startswith('mmdet') for r in swin), swin  # mmdet's own Swin-T


def test_mmcv_step_says_what_it_did(dry_run):
    _, out = dry_run
    text = (out / 'mmcv_ops.md').read_text()
    assert '| pass |' in text or '| skipped |' in text
    assert '| FAIL |' not in text and '| error |' not in text


def test_a_step_out_of_time_leaves_a_complete_table(tmp_path):
    proc = run_script(tmp_path, '--steps', 'fast_paths', '--budget', '0')
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    rows = read_csv(tmp_path / 'fast_paths.csv')
    statuses = [r['status'] for r in rows]
    combos = len(PRECISIONS) * len(MODES)
    assert len(rows) == combos + (NA_STAGES + 2 * DM_STAGES) * combos + FFN_STAGES * 5
    assert statuses.count('not finished (step time limit)') == 1
    cut = statuses.index('not finished (step time limit)')
    assert all(s == 'not run (step time limit)' for s in statuses[cut + 1:])
    assert 'step time limit of 1 s reached' in (tmp_path / 'fast_paths.md').read_text()
    assert 'not run for lack of time' in (tmp_path / 'summary.md').read_text()


def test_tolerances_are_those_of_the_cpu_tests():
    from benchmarks import gpu_acceptance
    import test_fast_paths
    assert gpu_acceptance.RTOL32 == test_fast_paths.RTOL32
    assert gpu_acceptance.RTOL_AMP == test_fast_paths.RTOL_AMP
