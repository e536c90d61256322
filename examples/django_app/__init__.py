"""A minimal Django view calling ``track.delay`` (see ``views.py``)."""
