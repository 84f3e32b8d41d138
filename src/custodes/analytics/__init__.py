"""Analytics: what the recorder computes from decoded frames (faces, their embeddings, ...).

Modules here import their heavy dependencies (dlib, onnxruntime) themselves, so importing the
package stays cheap for code that needs only one part of it.
"""
