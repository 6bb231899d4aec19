"""``SafeCheckpointHook``: mmengine's CheckpointHook with the guarantees of
docs/reliability.md.

* **Loading** goes through :func:`dat_mm.checkpoint.safe_load` (installed when a run starts);
  the authors' published checkpoints (ImageNet ``model``, mmdet 2 / mmseg 0.x ``state_dict``)
  are converted on the fly; and a checkpoint must fit the model before anything runs: evaluating or resuming needs every
  key with its shape; fine-tuning (``load_from`` while training) needs every backbone key,
  while head weights of another shape (another ``num_classes``) are reported and skipped as
  mmengine does.
* **Saving** is atomic: the checkpoint is written to a hidden sibling, fsynced and renamed;
  only then ``last_checkpoint`` is replaced (atomically too), and only then are checkpoints
  beyond ``max_keep_ckpts`` deleted. A kill at any moment leaves the previous checkpoint and a
  ``last_checkpoint`` that names a complete file. (mmengine deletes first and writes in place.)
* **Auto-resume** (``resume=True`` without a path) takes the newest *complete* checkpoint: a
  truncated or missing one is skipped with a warning naming it. An explicit resume path must
  be complete.
* **RNG state**: each checkpoint carries the Python, numpy and torch (CPU and CUDA) generator
  states of every rank. The run, and a run resumed from that checkpoint, both set them at the
  same point: just before the next training batch is drawn (iteration-based loops), or at the
  start of the next epoch (epoch-based loops, checkpoints saved at epoch ends). A resumed run
  therefore continues the uninterrupted one; data order comes from the seeded samplers and
  mmengine's replay of the consumed batches.

Registered in mmengine's root ``HOOKS``, so mmdet, mmseg and mmpretrain configs name it as
``default_hooks.checkpoint = dict(type='SafeCheckpointHook', ...)`` with CheckpointHook's
arguments.
"""
import logging
import os
import os.path as osp
import random
import re
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_rank, get_world_size, is_main_process
from mmengine.hooks import CheckpointHook
from mmengine.logging import print_log
from mmengine.model import BaseTTAModel, is_model_wrapper
from mmengine.registry import HOOKS
from mmengine.runner import BaseLoop, IterBasedTrainLoop

from ..checkpoint import (CheckpointError, atomic_write_text, check_file, commit_temporary,
                          from_plain, is_complete_checkpoint, temporary_name, to_plain,
                          use_safe_loader)
from ..converters import (convert_published_checkpoint, is_published_checkpoint,
                          state_dict_problems)

__all__ = ['SafeCheckpointHook', 'rng_state', 'set_rng_state']


def rng_state() -> Dict[str, Any]:
    """The generator states of this process (Python, numpy, torch CPU and CUDA)."""
    state = dict(python=random.getstate(), numpy=np.random.get_state(),
                 torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(_as_tuple(state['python']))
    np.random.set_state(state['numpy'])
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


def _as_tuple(obj):
    # Python's random state is a nested tuple; keep it so if a list comes back
    return tuple(_as_tuple(x) for x in obj) if isinstance(obj, (list, tuple)) else obj


class _RngRestoringIterator:
    """Wraps an iteration-based loop's data iterator: after ``skip`` more batches (mmengine's
    replay of consumed batches on resume), sets the armed RNG state before the next one."""

    def __init__(self, iterator):
        self.iterator = iterator
        self.state: Optional[Dict[str, Any]] = None
        self.skip = 0

    def arm(self, state: Dict[str, Any], skip: int = 0) -> None:
        self.state, self.skip = state, skip

    def __iter__(self):
        return self

    def __next__(self):
        if self.state is not None:
            if self.skip == 0:
                set_rng_state(self.state)
                self.state = None
            else:
                self.skip -= 1
        return next(self.iterator)


def _step_of(name: str, template: str) -> Optional[int]:
    pattern = re.escape(template).replace(r'\{\}', r'(\d+)')
    match = re.fullmatch(pattern, name)
    return int(match.group(1)) if match else None


@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook`` (same arguments) with safe loading, fit checks, atomic
    saves, auto-resume from the newest complete checkpoint and saved RNG state (see the
    module doc)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._mode = 'evaluate'
        self._load_path: Optional[str] = None
        self._rng_to_save: Optional[List[Dict[str, Any]]] = None
        self._rng_resumed: Optional[Dict[str, Any]] = None
        self._rng_after_save: Optional[Dict[str, Any]] = None
        self._rng_iterator: Optional[_RngRestoringIterator] = None

    # ------------------------------------------------------------------ loading
    def before_run(self, runner) -> None:
        use_safe_loader()
        # mmengine keeps what load_or_resume (called right after before_run) will do in
        # private attributes; train() has built its loop by now, test()/val() have not.
        training = isinstance(getattr(runner, '_train_loop', None), BaseLoop)
        resume = bool(getattr(runner, '_resume', False)) and training
        load_from = getattr(runner, '_load_from', None)
        self._mode = 'resume' if resume else ('finetune' if training else 'evaluate')
        if resume and load_from is None:
            load_from = self._newest_complete_checkpoint(runner)
            if load_from is not None:
                runner._load_from = load_from
            else:  # mmengine would try the file last_checkpoint names, if any
                runner._resume = False
                self._mode = 'finetune'
        elif load_from is not None and '://' not in str(load_from):
            check_file(str(load_from))  # before the model is touched
        self._load_path = load_from

    def _checkpoint_dirs(self, runner) -> List[str]:
        dirs = [runner.work_dir]
        if self.out_dir is not None and '://' not in str(self.out_dir):
            out_dir = str(self.out_dir)
            if out_dir != runner.work_dir:
                out_dir = osp.join(out_dir, osp.basename(runner.work_dir.rstrip(osp.sep)))
            dirs.append(out_dir)
        return dirs

    def _newest_complete_checkpoint(self, runner) -> Optional[str]:
        """The checkpoint auto-resume should use: the newest complete one among the file
        ``last_checkpoint`` names and the checkpoint files beside it."""
        candidates = {}
        dirs = self._checkpoint_dirs(runner)
        record = osp.join(runner.work_dir, 'last_checkpoint')
        if osp.isfile(record):
            with open(record) as fh:
                named = fh.read().strip()
            if named:
                step = _step_of(osp.basename(named), self.filename_tmpl)
                candidates[named] = step if step is not None else float('inf')
                dirs.append(osp.dirname(named))
        for directory in dict.fromkeys(dirs):
            if not osp.isdir(directory):
                continue
            for name in os.listdir(directory):
                step = _step_of(name, self.filename_tmpl)
                if step is not None:
                    candidates.setdefault(osp.join(directory, name), step)
        for path in sorted(candidates, key=candidates.get, reverse=True):
            ok, reason = is_complete_checkpoint(path)
            if ok:
                print_log(f'Auto-resume: the newest complete checkpoint is {path}',
                          logger='current')
                return path
            print_log(f'Auto-resume: skipping {path}: {reason}', logger='current',
                      level=logging.WARNING)
        print_log(f'Auto-resume: no complete checkpoint in {sorted(set(dirs))}; training '
                  'starts from the beginning', logger='current', level=logging.WARNING)
        return None

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Convert the authors' published checkpoints in place; refuse a checkpoint that does
        not fit the model, before anything runs; keep its RNG state when resuming."""
        for key in list(checkpoint):  # loaded by another loader than dat_mm's: still plain
            checkpoint[key] = from_plain(checkpoint[key], f'checkpoint[{key!r}]')
        model = runner.model
        while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
            # DDP and/or tools/test.py --tta: the checkpoint is the wrapped model's, as
            # in mmengine's load_state_dict
            model = model.module
        source = f'checkpoint {self._load_path}' if self._load_path else 'checkpoint'
        if is_published_checkpoint(checkpoint):
            if self._mode == 'resume':
                raise CheckpointError(
                    f"{source} is one of the authors' published checkpoints, not a Runner "
                    'checkpoint: there is no training state to resume. Evaluate it with '
                    'tools/test.py or fine-tune from it with load_from.')
            try:
                checkpoint['state_dict'] = convert_published_checkpoint(checkpoint)
            except KeyError as err:
                raise CheckpointError(f'{source}: {err.args[0]}') from None
            checkpoint.pop('model', None)
            print_log(f"{source}: the authors' published layout, converted on the fly",
                      logger='current')
        state = checkpoint.get('state_dict', checkpoint)
        state = {re.sub(r'^module\.', '', k): v for k, v in state.items()}
        own = model.state_dict()
        if not any(k in own for k in state):
            hint = ''
            if self._mode == 'finetune':
                hint = (' For backbone-only weights use model.backbone.init_cfg='
                        "dict(type='Pretrained', checkpoint=...) instead of load_from.")
            raise CheckpointError(f'{source} has none of the {len(own)} weights of '
                                  f'{type(model).__name__}.{hint}')
        if self._mode == 'finetune' and any(k.startswith('backbone.') for k in own):
            # only the backbone must fit; the rest (a head for another num_classes) is
            # mmengine's non-strict load, which reports what it skips
            own = {k: v for k, v in own.items() if k.startswith('backbone.')}
            state = {k: v for k, v in state.items() if k.startswith('backbone.')}
            source += ' (backbone)'
        problems = state_dict_problems(own, state)
        if problems:
            raise CheckpointError(f'{source} does not fit {type(model).__name__}: '
                                  + '; '.join(problems))
        if self._mode == 'resume':
            states = checkpoint.get('rng_state')
            if isinstance(states, list) and len(states) == get_world_size():
                self._rng_resumed = states[get_rank()]
            else:
                print_log(f'{source} has no RNG state for {get_world_size()} process(es); '
                          'the resumed run draws different random numbers than an '
                          'uninterrupted one', logger='current', level=logging.WARNING)

    # ------------------------------------------------------------------ RNG
    def before_train(self, runner) -> None:
        super().before_train(runner)
        self._remove_stale_temporaries(runner)
        loop = runner.train_loop
        if isinstance(loop, IterBasedTrainLoop):
            self._rng_iterator = _RngRestoringIterator(loop.dataloader_iterator)
            loop.dataloader_iterator = self._rng_iterator
            if self._rng_resumed is not None:
                self._rng_iterator.arm(self._rng_resumed, skip=loop.iter)
                self._rng_resumed = None

    def before_train_epoch(self, runner) -> None:
        state = self._rng_resumed or self._rng_after_save
        if self._rng_iterator is None and state is not None:
            set_rng_state(state)
        self._rng_resumed = self._rng_after_save = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self._rng_to_save is not None:
            checkpoint['rng_state'] = self._rng_to_save
        elif get_world_size() == 1:
            checkpoint['rng_state'] = [rng_state()]
        # numpy state, logged scalars and scheduler counters as tensors and builtin values,
        # which torch's weights-only unpickler reads without any allowed global (docs/
        # reliability.md); dat_mm's loader turns them back (dat_mm.checkpoint.from_plain)
        for key in list(checkpoint):
            if key != 'state_dict':
                checkpoint[key] = to_plain(checkpoint[key])

    # ------------------------------------------------------------------ saving
    def _is_own_temporary(self, name: str) -> bool:
        """The staging file (``temporary_name``) of a checkpoint or of ``last_checkpoint``;
        never another file a user keeps in the work directory."""
        if name == osp.basename(temporary_name('last_checkpoint')):
            return True
        return (name.startswith('.') and name.endswith('.tmp')
                and _step_of(name[1:-len('.tmp')], self.filename_tmpl) is not None)

    def _remove_stale_temporaries(self, runner) -> None:
        """What a save killed half-way leaves: its temporary file, and an old checkpoint
        beyond ``max_keep_ckpts`` that was due to be deleted after it."""
        if not is_main_process() or '://' in str(self.out_dir):
            return
        keep = list(self.keep_ckpt_ids) if self.max_keep_ckpts > 0 else []
        for directory in dict.fromkeys([str(self.out_dir), runner.work_dir]):
            if not osp.isdir(directory):
                continue
            for name in os.listdir(directory):
                step = _step_of(name, self.filename_tmpl)
                if self._is_own_temporary(name):
                    why = 'the temporary file of an interrupted save'
                elif (directory == str(self.out_dir) and keep and step is not None
                      and step not in keep and step < max(keep)):
                    why = f'beyond max_keep_ckpts={self.max_keep_ckpts}'
                else:
                    continue
                path = osp.join(directory, name)
                print_log(f'removing {path}: {why}', logger='current',
                          level=logging.WARNING)
                os.remove(path)

    def _save_checkpoint_with_step(self, runner, step, meta):
        if '://' in str(self.out_dir):  # remote storage: no rename, mmengine's own order
            return super()._save_checkpoint_with_step(runner, step, meta)
        to_remove = []
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids
                                            and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                to_remove.append(self.keep_ckpt_ids.popleft())
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))

        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = osp.join(self.out_dir, ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)

        states = all_gather_object(rng_state())  # every rank takes part
        self._rng_to_save = states
        if not isinstance(runner.train_loop, IterBasedTrainLoop) and not self.by_epoch:
            restore = None  # an epoch-based run resumes at the next epoch, not here
        else:
            restore = states[get_rank()]
        try:
            tmp_name = osp.basename(temporary_name(self.last_ckpt))
            runner.save_checkpoint(
                self.out_dir, tmp_name, self.file_client_args,
                save_optimizer=self.save_optimizer,
                save_param_scheduler=self.save_param_scheduler, meta=meta,
                by_epoch=self.by_epoch, backend_args=self.backend_args, **self.args)
        finally:
            self._rng_to_save = None
        if restore is not None:
            if self._rng_iterator is not None:
                self._rng_iterator.arm(restore)
            else:
                self._rng_after_save = restore
        if not is_main_process():
            return
        commit_temporary(self.last_ckpt)
        atomic_write_text(osp.join(runner.work_dir, 'last_checkpoint'), self.last_ckpt)
        for old in to_remove:
            path = osp.join(self.out_dir, self.filename_tmpl.format(old))
            if path != self.last_ckpt and osp.isfile(path):
                os.remove(path)
