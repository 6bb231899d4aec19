# The authors' segmentation weight-decay rule (every DAT-Segmentation config): no decay on
# parameters whose name contains 'norm', 'rpe_table', 'relative_position_bias_table' or
# 'absolute_pos_embed' (DAT has none of the last), and nothing else: no norm_decay_mult, so the
# heads' BN (named 'bn') and the neighbourhood attention's `rpb` keep their decay.
# In their model 'norm' selected every backbone LayerNorm (their LayerNorm wrappers all have
# '.norm.' in the name). dat_mm's LayerNorms are norm1/norm2/norms.i plus the stem,
# down-sampling and offset-network norms, which are listed below by path so that the same set
# of parameters is exempt (tests/test_configs_dense.py checks the exact set against the
# authors' rule applied to the published parameter names).
dat_no_decay = dict(decay_mult=0.0)
paramwise_cfg = dict(custom_keys={
    'rpe_table': dat_no_decay,
    'relative_position_bias_table': dat_no_decay,
    'norm': dat_no_decay,
    'backbone.stem.1.': dat_no_decay,
    'backbone.stem.4.': dat_no_decay,
    'backbone.downsamples.0.1.': dat_no_decay,
    'backbone.downsamples.1.1.': dat_no_decay,
    'backbone.downsamples.2.1.': dat_no_decay,
    'attn.conv_offset.1.': dat_no_decay,
})
