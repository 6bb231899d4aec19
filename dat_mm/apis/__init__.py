from .runner import (SCOPES, adapt_to_device, apply_scope_defaults, build_runner, config_scope,
                     init_cpu_distributed, load_config, replace_type, set_work_dir)

__all__ = ['SCOPES', 'adapt_to_device', 'apply_scope_defaults', 'build_runner', 'config_scope',
           'init_cpu_distributed', 'load_config', 'replace_type', 'set_work_dir']
