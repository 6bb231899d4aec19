from .build import build_model_from_config, load_model_weights
from .runner import (SCOPES, adapt_to_device, apply_scope_defaults, build_runner, config_scope,
                     exit_after_distributed, finish_distributed, init_cpu_distributed,
                     load_config, parse_tool_args, replace_type, set_work_dir, use_tta)

__all__ = ['SCOPES', 'adapt_to_device', 'apply_scope_defaults', 'build_model_from_config',
           'build_runner', 'config_scope', 'exit_after_distributed', 'finish_distributed',
           'init_cpu_distributed', 'load_config', 'load_model_weights', 'parse_tool_args',
           'replace_type', 'set_work_dir', 'use_tta']
