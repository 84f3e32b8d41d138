"""Analytics: the per-camera analysis workers (motion, faces, tracks) and the messages they send
to the node. The frame code they run is in `custodes.vision`.
"""
