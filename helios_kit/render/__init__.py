"""The renderer: frame-exact capture of browser compositions into video (virtual time, capture, encode).

Public entry point: :func:`render_range` (see :mod:`helios_kit.render.session`); the virtual-time contract
and the ``window.helios`` API compositions can use are documented in :mod:`helios_kit.render.clock`.
"""

from helios_kit.render.session import RenderCancelled, RenderStats, render_range

__all__ = ["RenderCancelled", "RenderStats", "render_range"]
