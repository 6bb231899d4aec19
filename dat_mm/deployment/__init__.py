"""Deployment: ONNX export of DAT models, checked with onnxruntime (see
:mod:`dat_mm.deployment.onnx`). Needs the ``onnx`` extra (onnx, onnxscript, onnxruntime)."""
from .onnx import (COMPONENTS, DEFAULT_CHECK_SIZES, DEFAULT_OPSET, MIN_OPSET, CheckReport,
                   ExportError, ExportResult, OutputDiff, SizeCheck, check_onnx,
                   component_module, default_component, export_config, export_onnx,
                   load_model, onnx_versions, ort_session, parse_size, preprocessing,
                   use_exportable_paths)

__all__ = ['COMPONENTS', 'DEFAULT_CHECK_SIZES', 'DEFAULT_OPSET', 'MIN_OPSET', 'CheckReport',
           'ExportError', 'ExportResult', 'OutputDiff', 'SizeCheck', 'check_onnx',
           'component_module', 'default_component', 'export_config', 'export_onnx',
           'load_model', 'onnx_versions', 'ort_session', 'parse_size', 'preprocessing',
           'use_exportable_paths']
