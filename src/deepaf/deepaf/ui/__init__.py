"""`./deepaf ui`: a browser dashboard for one microscope's graph.

Pure parts (no ROS, no web framework), unit-tested directly: :mod:`deepaf.ui.dzi` (Deep Zoom
tiles of a slide pyramid), :mod:`deepaf.ui.security` (token, rate limit), :mod:`deepaf.ui.live`
(frame packing, newest-frame slot, jog steps, region checks), :mod:`deepaf.ui.assets` (the
pinned OpenSeadragon asset). Adapters: :mod:`deepaf.ui.bridge` (the one rclpy node plus
`deepaf.client`) and :mod:`deepaf.ui.server` (aiohttp).
"""
