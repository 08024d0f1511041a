"""The renderer: frame-exact capture of browser compositions into video (virtual time, capture, encode).

Public entry point: :func:`render_range` (see :mod:`helios_kit.render.session`); pass it a
:class:`WarmBrowser` (:mod:`helios_kit.render.warm`) to render many ranges or videos in one kept browser. The
virtual-time contract and the ``window.helios`` API compositions can use are documented in
:mod:`helios_kit.render.clock`.
"""

from helios_kit.render.session import RenderCancelled, RenderStats, render_range
from helios_kit.render.warm import WarmBrowser

__all__ = ["RenderCancelled", "RenderStats", "WarmBrowser", "render_range"]
