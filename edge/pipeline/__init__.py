"""The capture pipeline wing: camera workers, face and plate paths, tracker, motion gate, serial devices,
and the Committer every observation goes through. Import the modules themselves; this package
re-exports nothing, so importing its config loads no OpenCV or ONNX Runtime.
"""
