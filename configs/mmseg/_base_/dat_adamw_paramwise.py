# No weight decay on every LayerNorm of the DAT backbone and on its position tables
# (rpe_table, rpb, v1's relative_position_bias_table), as the authors' segmentation configs
# did with their 'norm' key (their LayerNorm wrappers all had '.norm.' in the name). dat_mm's
# LayerNorms are named norm1/norm2/norms.i plus the stem, down-sampling and offset-network
# norms listed below; the heads' BN keeps its decay, as published.
# (tests/test_recipes.py checks that these keys select exactly the backbone's LayerNorms.)
dat_no_decay = dict(decay_mult=0.0)
paramwise_cfg = dict(custom_keys={
    'rpe_table': dat_no_decay,
    'rpb': dat_no_decay,
    'relative_position_bias_table': dat_no_decay,
    'norm': dat_no_decay,
    'backbone.stem.1.': dat_no_decay,
    'backbone.stem.4.': dat_no_decay,
    'backbone.downsamples.0.1.': dat_no_decay,
    'backbone.downsamples.1.1.': dat_no_decay,
    'backbone.downsamples.2.1.': dat_no_decay,
    'attn.conv_offset.1.': dat_no_decay,
})
