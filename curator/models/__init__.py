"""The face models: loading a pack (InsightFace's model routing), running its ONNX graphs on a runtime
(`runtime`: onnxruntime or PyTorch, CPU or CUDA), detection, recognition, landmarks (`faces`), which recogniser
a workspace uses (`recognisers`) and dlib's 68-point predictor (`dlib68`).

Below the stages, above `media` and `measure`.
"""
