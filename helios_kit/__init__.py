"""helios-kit: render browser-based video compositions to video files, frame-exact, on one machine or many."""

__version__ = "0.1.0"
