# The authors' segmentation weight-decay rule (every DAT-Segmentation config): no decay on
# parameters whose name contains 'norm', 'rpe_table', 'relative_position_bias_table' or
# 'absolute_pos_embed' (DAT has none of the last), and nothing else: no norm_decay_mult, so the
# heads' BN (named 'bn') and the neighbourhood attention's `rpb` keep their decay.
# In their model 'norm' selected exactly the backbone's LayerNorms (each wrapped in a module
# with a '.norm.' in the name). dat_mm keeps the published names without that wrapper level,
# so some of its LayerNorms carry no 'norm' in the name; the rule is therefore stated by module
# type: backbone_norm_decay_mult=0 (DATOptimWrapperConstructor, dat_mm/engine) exempts every
# normalisation layer of the backbone, which are all LayerNorms, and nothing outside it.
# tests/test_configs_dense.py checks the exact set against the authors' rule applied to the
# published parameter names.
optim_constructor = 'DATOptimWrapperConstructor'
paramwise_cfg = dict(
    backbone_norm_decay_mult=0.0,
    custom_keys={
        'rpe_table': dict(decay_mult=0.0),
        'relative_position_bias_table': dict(decay_mult=0.0),
    })
