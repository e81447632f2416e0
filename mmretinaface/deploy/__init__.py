from .onnx_export import RetinaFaceExportWrapper, export_onnx

__all__ = ['RetinaFaceExportWrapper', 'export_onnx']
