"""Pure frame code: decoding, face detection and landmarks, tracking, face descriptors.

Nothing here knows about cameras, the database or privacy rules; `redaction` and `analytics`
build on it.
"""
